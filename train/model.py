"""GrooVAE in PyTorch: BiLSTM encoder, z-conditioned LSTM decoder, losses with free bits.

The model of spec kind "groovae". It is built from (ModelConfig, ModelSpec): the config gives
the network's sizes, the spec the data's shape (steps, drum voices).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from groove_live.pattern import OFFSET_MAX
from groove_live.spec import ModelSpec

from .config import ModelConfig, spec_for

MIN_SIGMA = 0.01  # floor of the Gaussian head's std (in each value's loss scale)


def split_heads(y: torch.Tensor, c: int, gaussian: bool) -> dict[str, torch.Tensor]:
    """A (..., 3C or 5C) output layer -> distribution parameters in data units: hit logits,
    velocity in [0, 1], offset in steps in [-0.5, 0.5], and with a Gaussian head their stds."""
    heads = {
        "hit_logits": y[..., :c],
        "velocity_mean": torch.sigmoid(y[..., c:2 * c]),
        "offset_mean": 0.5 * torch.tanh(y[..., 2 * c:3 * c]),  # step fraction
    }
    if gaussian:
        heads["velocity_std"] = F.softplus(y[..., 3 * c:4 * c]) + MIN_SIGMA
        # Offsets' loss scale is [-1, 1) (Magenta's), so their std floor is half in steps.
        heads["offset_std"] = 0.5 * (F.softplus(y[..., 4 * c:5 * c]) + MIN_SIGMA)
    return heads


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig, spec: ModelSpec):
        super().__init__()
        self.rnn = nn.LSTM(spec.step_size, cfg.enc_rnn_sizes[0], num_layers=len(cfg.enc_rnn_sizes),
                           batch_first=True, bidirectional=True)
        hidden = 2 * cfg.enc_rnn_sizes[-1]
        self.mu = nn.Linear(hidden, cfg.z_size)
        self.sigma = nn.Linear(hidden, cfg.z_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, (h, _) = self.rnn(x)  # h: (layers * 2, B, H)
        last = torch.cat([h[-2], h[-1]], dim=-1)  # (B, 2H) final fwd + bwd states
        return self.mu(last), F.softplus(self.sigma(last))  # (B, Z) each


class Decoder(nn.Module):
    """LSTM stack; z feeds the initial state (tanh(dense(z))) and every step's input."""

    def __init__(self, cfg: ModelConfig, spec: ModelSpec):
        super().__init__()
        sizes = cfg.dec_rnn_sizes
        if len(set(sizes)) != 1:
            raise ValueError("decoder layers must share one size (nn.LSTM stack)")
        self.cfg = cfg
        self.steps = spec.steps
        self.n_drums = c = spec.n_drums
        self.hidden = sizes[0]
        self.layers = len(sizes)
        self.gaussian = cfg.continuous_head == "gaussian"
        self.init = nn.Linear(cfg.z_size, 2 * self.layers * self.hidden)
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.rnn = nn.LSTM(3 * c + cfg.z_size, self.hidden, num_layers=self.layers,
                           batch_first=True, dropout=cfg.dropout if self.layers > 1 else 0.0)
        # mean: hit logit, velocity, offset per drum; gaussian adds a std for the last two.
        self.out = nn.Linear(self.hidden, (5 if self.gaussian else 3) * c)

    def initial_state(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.tanh(self.init(z))  # (B, 2 * L * H)
        s = s.view(z.shape[0], 2, self.layers, self.hidden).permute(1, 2, 0, 3)
        return s[0].contiguous(), s[1].contiguous()  # (L, B, H) each

    def heads(self, out: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw network outputs -> distribution parameters, values in data units."""
        return split_heads(self.out(out), self.n_drums, self.gaussian)

    def forward_teacher(self, z: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Teacher forcing: step t sees the true step t-1."""
        prev = F.pad(targets[:, :-1], (0, 0, 1, 0))  # (B, T, 3C), zeros before step 0
        zs = z[:, None, :].expand(-1, targets.shape[1], -1)
        x = self.input_dropout(torch.cat([prev, zs], dim=-1))  # (B, T, 3C + Z)
        out, _ = self.rnn(x, self.initial_state(z))  # (B, T, H)
        return self.heads(out)

    def step(self, x: torch.Tensor, z: torch.Tensor, state):
        """One free-running step: x (B, 3C) previous values -> heads (B, 1, ...), new state."""
        out, state = self.rnn(torch.cat([x, z], dim=-1)[:, None], state)
        return self.heads(out), state

    @staticmethod
    def choose(heads: dict[str, torch.Tensor], temperature: torch.Tensor | float,
               hit_noise: torch.Tensor, cont_noise: torch.Tensor | None, greedy: bool = False):
        """Sample one step's values from its heads with explicit noise (export-friendly).

        hit_noise: uniform [0, 1) (B, C); cont_noise: standard normal (B, 2C) or None (means).
        Temperature scales hit logits only, as in Magenta: it chooses how adventurous the
        pattern is, while velocity/offset spread stays that of the learned distribution.
        """
        logits = heads["hit_logits"][:, 0]
        if greedy:
            hits = (logits > 0).to(logits.dtype)
        else:
            hits = (hit_noise < torch.sigmoid(logits / temperature)).to(logits.dtype)
        vel = heads["velocity_mean"][:, 0]
        off = heads["offset_mean"][:, 0]
        if "velocity_std" in heads and cont_noise is not None and not greedy:
            c = vel.shape[-1]
            vel = vel + heads["velocity_std"][:, 0] * cont_noise[:, :c]
            off = off + heads["offset_std"][:, 0] * cont_noise[:, c:]
        vel = vel.clamp(0.0, 1.0) * hits
        off = off.clamp(-0.5, OFFSET_MAX) * hits
        return hits, vel, off

    def sample(self, z: torch.Tensor, temperature: float = 1.0, greedy: bool = False,
               generator: torch.Generator | None = None, hit_noise=None, cont_noise=None):
        """Free-running decode of all steps; noise (B, T, C) / (B, T, 2C) may be given."""
        b, t, c = z.shape[0], self.steps, self.n_drums
        if hit_noise is None:
            hit_noise = torch.rand((b, t, c), generator=generator, device=z.device)
        if cont_noise is None:
            cont_noise = torch.randn((b, t, 2 * c), generator=generator, device=z.device)
        state = self.initial_state(z)
        x = z.new_zeros((b, 3 * c))
        hits, vels, offs = [], [], []
        for i in range(t):
            heads, state = self.step(x, z, state)
            h, v, o = self.choose(heads, temperature, hit_noise[:, i], cont_noise[:, i], greedy)
            x = torch.cat([h, v, o], dim=-1)
            hits.append(h)
            vels.append(v)
            offs.append(o)
        return torch.stack(hits, 1), torch.stack(vels, 1), torch.stack(offs, 1)  # (B, T, C) x3


class GrooVAE(nn.Module):
    def __init__(self, cfg: ModelConfig, spec: ModelSpec | None = None):
        """spec: the data's shape (default: the 4-bar, 9-drum GrooVAE spec); its z_size and
        continuous_head must be the config's."""
        super().__init__()
        spec = spec_for(cfg) if spec is None else spec
        if spec.kind != "groovae":
            raise ValueError(f"GrooVAE is the model of kind 'groovae', not {spec.kind!r}")
        if (spec.z_size, spec.continuous_head) != (cfg.z_size, cfg.continuous_head):
            raise ValueError(f"spec z_size/continuous_head {spec.z_size}/{spec.continuous_head} "
                             f"differ from the config's {cfg.z_size}/{cfg.continuous_head}")
        self.cfg = cfg
        self.spec = spec
        self.encoder = Encoder(cfg, spec)
        self.decoder = Decoder(cfg, spec)

    @staticmethod
    def training_inputs(patterns, spec: ModelSpec):
        """(N, T, 3C): what a batch holds for this kind; `fit` asks the model's class."""
        return patterns.to_flat()

    def loss_terms(self, outputs, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss terms of a forward pass's outputs (cast to float32 after autocast)."""
        heads, mu, sigma = outputs
        return losses({k: v.float() for k, v in heads.items()}, x, mu.float(), sigma.float(),
                      self.cfg)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Training pass: encode, reparameterise, teacher-forced decode."""
        mu, sigma = self.encoder(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + sigma * eps
        return self.decoder.forward_teacher(z, x), mu, sigma

    def decode(self, z: torch.Tensor, targets: torch.Tensor | None = None,
               temperature: float = 1.0, greedy: bool = False,
               generator: torch.Generator | None = None):
        """(hits, velocities, offsets) each (B, T, C).

        With targets: teacher-forced, hits by logit > 0 (or sampled), and velocities/offsets
        the unmasked means, so they can be scored on every true hit. Without: free-running
        from z, values masked by the hits they belong to (what is fed back).
        """
        if targets is None:
            return self.decoder.sample(z, temperature, greedy, generator)
        heads = self.decoder.forward_teacher(z, targets)
        logits = heads["hit_logits"]
        if greedy:
            hits = (logits > 0).to(logits.dtype)
        else:
            u = torch.rand(logits.shape, generator=generator, device=logits.device)
            hits = (u < torch.sigmoid(logits / temperature)).to(logits.dtype)
        return hits, heads["velocity_mean"], heads["offset_mean"]


def kl_divergence(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma) || N(0, I)) summed over z, per example: (B,)."""
    var = sigma.pow(2)
    return 0.5 * torch.sum(var + mu.pow(2) - 1.0 - torch.log(var.clamp_min(1e-12)), dim=-1)


def _gaussian_nll(x, mean, std):
    return 0.5 * ((x - mean) / std).pow(2) + torch.log(std) + 0.9189385332046727  # log sqrt(2pi)


def losses(heads: dict[str, torch.Tensor], targets: torch.Tensor, mu: torch.Tensor,
           sigma: torch.Tensor, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Per-term losses, each summed over steps and channels and averaged over the batch."""
    c = heads["hit_logits"].shape[-1]  # drum voices
    hits, vel, off = targets[..., :c], targets[..., c:2 * c], targets[..., 2 * c:]
    hit_loss = F.binary_cross_entropy_with_logits(heads["hit_logits"], hits, reduction="none")
    hit_loss = hit_loss.sum(dim=(1, 2)).mean()
    if cfg.continuous_head == "gaussian":
        # Only true hits have a velocity and timing; silent cells are exactly 0 and would
        # collapse the std. Offsets are compared in Magenta's [-1, 1) scale.
        vel_loss = (_gaussian_nll(vel, heads["velocity_mean"], heads["velocity_std"]) * hits)
        off_loss = (_gaussian_nll(2 * off, 2 * heads["offset_mean"], 2 * heads["offset_std"]) * hits)
    else:
        vel_loss = (heads["velocity_mean"] - vel).pow(2)
        off_loss = (2 * heads["offset_mean"] - 2 * off).pow(2)
    vel_loss = vel_loss.sum(dim=(1, 2)).mean()
    off_loss = off_loss.sum(dim=(1, 2)).mean()
    kl = kl_divergence(mu, sigma)  # (B,)
    kl_cost = torch.clamp(kl - cfg.free_nats, min=0.0).mean()
    recon = hit_loss + vel_loss + off_loss
    return {
        "loss": recon + cfg.beta * kl_cost,
        "recon": recon,
        "hit_loss": hit_loss,
        "velocity_loss": vel_loss,
        "offset_loss": off_loss,
        "kl": kl.mean(),
        "kl_cost": kl_cost,
    }


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# The torch model of each spec kind groove-train can build; a new kind adds its module's class
# here (see docs/adding-a-model.md). Imported late: those modules build on this one.
from .categorical import CategoricalVAE  # noqa: E402
from .chorale_gan import ChoraleGAN  # noqa: E402
from .conditioned import ConditionedVAE  # noqa: E402
from .hierarchical import HierarchicalVAE  # noqa: E402

MODELS = {"groovae": GrooVAE, "conditioned": ConditionedVAE, "categorical": CategoricalVAE,
          "hierarchical": HierarchicalVAE, "pitched": ChoraleGAN}


class ModelKindError(ValueError):
    """A spec (e.g. of a run folder) naming a kind groove-train cannot build."""


def build_model(cfg: ModelConfig, spec: ModelSpec) -> nn.Module:
    """The model of the spec's kind; ValueError names the kinds groove-train can build."""
    try:
        model_class = MODELS[spec.kind]
    except KeyError:
        raise ModelKindError(f"a {spec.kind!r} model, which groove-train cannot build (it builds: "
                         f"{', '.join(MODELS)})") from None
    return model_class(cfg, spec)
