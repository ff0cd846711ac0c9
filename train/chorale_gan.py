"""The chorale harmonizer (spec kind "pitched"): a conditional WGAN-GP that writes alto, tenor and
bass under a soprano melody, after AWS DeepComposer's U-Net GAN on JSB chorales.

Tensors are channels last as the piano rolls are: a melody roll (B, 32, 128), voice rolls
(B, 32, 128, 3) in [-1, 1], noise (B, 2, 8, z_size); torch's convolutions see them channels
first inside the networks.

- Generator: a U-Net. Four stride-2 conv blocks (LeakyReLU 0.2, batch norm except on the first)
  halve steps and pitches to a 2 x 8 grid; the noise is concatenated there; three transposed
  conv blocks double them back, each joined to the down block of its size (skip connections);
  a last transposed conv with tanh gives one roll per voice.
- Critic: the voices with the melody as one more channel -> four stride-2 convs (LeakyReLU, no
  batch norm: the gradient penalty is per example) -> dense -> one score per window.
- Loss: Wasserstein with gradient penalty (Gulrajani et al. 2017), lambda 10, 5 critic updates
  per generator update, Adam lr 1e-3 betas (0.5, 0.9) for both networks.

Why 3 voices out and not 4 with the melody passed through: the melody is the user's and is
played as given, so a generated copy of it could only be wrong or redundant; the critic still
judges the whole 4-voice chorale, because it is given the melody beside the voices.

ModelConfig has no GAN fields, so this model reads its sizes from the existing ones:
enc_rnn_sizes = the generator's down-block filters (four, e.g. 64, 128, 256, 512; the up blocks
mirror them), dec_rnn_sizes = the critic's conv filters, z_size = noise channels per bottleneck
cell. The WGAN-GP constants below are the seed's and not configurable.

Training goes through fit's model-defined step (`make_optimizers`, `train_step`,
`evaluate_terms`): each fit step takes CRITIC_STEPS + 1 batches, one per critic update and one
for the generator's. Everything runs in float32 (no autocast): the gradient penalty
differentiates through the critic's gradient, where bfloat16 would be too coarse.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from groove_live.chorale import REST, roll_to_voices
from groove_live.spec import PITCHED_DOWNSAMPLING, ROLL_PITCHES, ModelSpec

from .chorale_data import ChoraleDataError, load_chorale_split
from .config import ModelConfig
from .data import DataError

CRITIC_STEPS = 5  # critic updates per generator update
GP_LAMBDA = 10.0  # weight of the gradient penalty
ADAM_BETAS = (0.5, 0.9)
LEAK = 0.2  # LeakyReLU slope
KERNEL, STRIDE, PAD = 4, 2, 1  # every conv halves (or doubles) steps and pitches exactly
N_DOWN = 4  # down blocks: 2^4 = PITCHED_DOWNSAMPLING
# What metrics.csv keeps for this model: train and validation terms, then the chorale metrics
# of generated validation windows (train/chorale_metrics.py).
LOG_FIELDS = ("step", "split", "loss", "wasserstein", "critic_loss", "generator_loss",
              "gradient_penalty", "lr", "examples_per_s", "empty_bar_rate", "in_scale_ratio",
              "pc_js", "polyphony")


def voices_to_rolls(voices: torch.Tensor) -> torch.Tensor:
    """(..., steps, voices) integer pitches, REST = -1 -> (..., steps, 128, voices) float32 in
    {-1, +1}: groove_live.chorale.voices_to_roll on the device, one batch at a time."""
    sounding = voices != REST
    hot = F.one_hot(voices.clamp(min=0).long(), ROLL_PITCHES).bool() & sounding[..., None]
    return (hot.float() * 2.0 - 1.0).transpose(-1, -2)


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, melody: torch.Tensor,
                     alpha: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of (||d critic / d x|| - 1)^2 at x = alpha real + (1 - alpha) fake,
    alpha (B,) in [0, 1]. The gradient is taken by the voices only: the melody is the same in
    the real and the fake window, so it has no line to interpolate along. create_graph keeps
    the penalty differentiable for the critic's update."""
    a = alpha.view(-1, *([1] * (real.dim() - 1)))
    x = (a * real + (1 - a) * fake).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x, melody).sum(), x, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).pow(2).mean()


def _down(c_in: int, c_out: int, norm: bool) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, KERNEL, STRIDE, PAD, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(c_out))
    return nn.Sequential(*layers, nn.LeakyReLU(LEAK))


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, KERNEL, STRIDE, PAD, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU())


class Generator(nn.Module):
    """U-Net: melody roll (B, T, P) and noise (B, T/16, P/16, Z) -> voice rolls (B, T, P, V)."""

    def __init__(self, filters: tuple[int, ...], z_size: int, n_voices: int):
        super().__init__()
        self.down = nn.ModuleList(_down(c_in, c_out, norm=i > 0) for i, (c_in, c_out)
                                  in enumerate(zip((1, *filters[:-1]), filters)))
        ups, c_in = [], filters[-1] + z_size
        for c_out in reversed(filters[:-1]):
            ups.append(_up(c_in, c_out))
            c_in = 2 * c_out  # its output joined to the skip of the same size
        self.up = nn.ModuleList(ups)
        self.out = nn.ConvTranspose2d(c_in, n_voices, KERNEL, STRIDE, PAD)

    def forward(self, melody: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = melody[:, None]
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = torch.cat([x, z.permute(0, 3, 1, 2)], dim=1)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = torch.cat([block(x), skip], dim=1)
        return torch.tanh(self.out(x)).permute(0, 2, 3, 1)


class Critic(nn.Module):
    """(voice rolls (B, T, P, V), melody roll (B, T, P)) -> one unbounded score (B, 1)."""

    def __init__(self, filters: tuple[int, ...], n_voices: int, steps: int):
        super().__init__()
        self.convs = nn.Sequential(*(
            nn.Sequential(nn.Conv2d(c_in, c_out, KERNEL, STRIDE, PAD), nn.LeakyReLU(LEAK))
            for c_in, c_out in zip((n_voices + 1, *filters[:-1]), filters)))
        shrink = 2 ** len(filters)
        self.dense = nn.Linear(filters[-1] * (steps // shrink) * (ROLL_PITCHES // shrink), 1)

    def forward(self, voices: torch.Tensor, melody: torch.Tensor) -> torch.Tensor:
        x = torch.cat([melody[..., None], voices], dim=-1).permute(0, 3, 1, 2)
        return self.dense(self.convs(x).flatten(1))


def _check(cfg: ModelConfig, spec: ModelSpec) -> None:
    if spec.kind != "pitched":
        raise ValueError(f"ChoraleGAN is the model of kind 'pitched', not {spec.kind!r}")
    if spec.z_size != cfg.z_size:
        raise ValueError(f"spec z_size {spec.z_size} differs from the config's {cfg.z_size}")
    if len(cfg.enc_rnn_sizes) != N_DOWN or 2 ** N_DOWN != PITCHED_DOWNSAMPLING:
        raise ValueError(f"the generator has {N_DOWN} down blocks (enc_rnn_sizes), not "
                         f"{len(cfg.enc_rnn_sizes)}")
    shrink = 2 ** len(cfg.dec_rnn_sizes)
    if not cfg.dec_rnn_sizes or spec.steps % shrink or ROLL_PITCHES % shrink:
        raise ValueError(f"the critic's {len(cfg.dec_rnn_sizes)} convs (dec_rnn_sizes) must "
                         f"halve {spec.steps} steps and {ROLL_PITCHES} pitches exactly")


def _average_across_ranks(tensors, world: int) -> None:
    """Mean over the DDP ranks, in place (gradients after backward, batch-norm statistics)."""
    import torch.distributed as dist
    for t in tensors:
        dist.all_reduce(t)
        t.div_(world)


class ChoraleGAN(nn.Module):
    """Generator + critic of one harmonizer; `forward` is the generator (what export traces)."""

    batches_per_step = CRITIC_STEPS + 1
    log_fields = LOG_FIELDS

    def __init__(self, cfg: ModelConfig, spec: ModelSpec):
        super().__init__()
        _check(cfg, spec)
        self.cfg = cfg
        self.spec = spec
        n_voices = len(spec.voices)
        self.grid = (spec.steps // PITCHED_DOWNSAMPLING, ROLL_PITCHES // PITCHED_DOWNSAMPLING)
        self.generator = Generator(tuple(cfg.enc_rnn_sizes), cfg.z_size, n_voices)
        self.critic = Critic(tuple(cfg.dec_rnn_sizes), n_voices, spec.steps)
        self.world = 1  # set by fit under DDP: gradients are then averaged over the ranks

    # --- data ------------------------------------------------------------------------------
    @staticmethod
    def read_split(data_dir, split: str) -> np.ndarray:
        """(windows, steps, 4) pitches of a chorale cache's split (train/chorale_data.py); a bad
        cache is a DataError, which groove-train reports in one line."""
        try:
            return load_chorale_split(data_dir, split)
        except ChoraleDataError as e:
            raise DataError(str(e)) from None

    @staticmethod
    def training_inputs(voices: np.ndarray, spec: ModelSpec) -> np.ndarray:
        """(N, T, 1 + V) int64 pitches, melody first then the spec's voices: rolls are made per
        batch on the device (a cached split as rolls would take 64 KB per window)."""
        v = np.asarray(voices)
        want = (spec.steps, 1 + len(spec.voices))
        if v.ndim != 3 or v.shape[1:] != want:
            raise DataError(f"chorale windows have shape {v.shape[1:]}, the model reads "
                            f"{want} (steps, melody + voices)")
        return np.ascontiguousarray(v, dtype=np.int64)

    def split_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, 1 + V) pitches -> melody roll (B, T, P), voice rolls (B, T, P, V)."""
        rolls = voices_to_rolls(x)
        return rolls[..., 0], rolls[..., 1:]

    # --- generation ------------------------------------------------------------------------
    def noise(self, batch: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn((batch, *self.grid, self.cfg.z_size), generator=generator,
                           device=device)

    def forward(self, z: torch.Tensor, melody: torch.Tensor) -> torch.Tensor:
        """The decoder graph: noise (B, T/16, 8, Z), melody roll (B, T, P) -> rolls (B, T, P, V)."""
        return self.generator(melody, z)

    # --- training (fit's model-defined step) -------------------------------------------------
    def make_optimizers(self, train_cfg) -> dict[str, torch.optim.Optimizer]:
        return {name: torch.optim.Adam(getattr(self, name).parameters(),
                                       lr=train_cfg.learning_rate, betas=ADAM_BETAS)
                for name in ("generator", "critic")}

    def _sync(self, module: nn.Module, grads: bool) -> None:
        if self.world > 1:
            if grads:
                _average_across_ranks([p.grad for p in module.parameters()
                                       if p.grad is not None], self.world)
            else:  # running batch-norm statistics, so every rank evaluates alike
                _average_across_ranks([b for b in module.buffers() if b.is_floating_point()],
                                      self.world)

    def critic_terms(self, x: torch.Tensor, generator: torch.Generator | None = None
                     ) -> dict[str, torch.Tensor]:
        """The critic's loss on one batch: its scores of fake minus real, plus the penalty."""
        melody, real = self.split_batch(x)
        with torch.no_grad():
            fake = self.generator(melody, self.noise(len(x), x.device, generator))
        alpha = torch.rand(len(x), generator=generator, device=x.device)
        real_score = self.critic(real, melody).mean()
        fake_score = self.critic(fake, melody).mean()
        gp = gradient_penalty(self.critic, real, fake, melody, alpha)
        return {"critic_loss": fake_score - real_score + GP_LAMBDA * gp,
                "wasserstein": real_score - fake_score, "gradient_penalty": gp,
                "generator_loss": -fake_score}

    def train_step(self, batches: list[torch.Tensor], optimizers: dict, step: int,
                   lr: float) -> dict[str, torch.Tensor]:
        """CRITIC_STEPS critic updates (one batch each), then one generator update on the last
        batch's melodies. The terms: the critic's averaged over its updates."""
        del step  # a constant schedule; the lr comes from fit's
        for opt in optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr
        with torch.autocast(batches[0].device.type, enabled=False):
            totals: dict[str, torch.Tensor] = {}
            self.critic.requires_grad_(True)
            for x in batches[:-1]:
                terms = self.critic_terms(x)
                optimizers["critic"].zero_grad(set_to_none=True)
                terms["critic_loss"].backward()
                self._sync(self.critic, grads=True)
                optimizers["critic"].step()
                for k, v in terms.items():
                    if k != "generator_loss":
                        totals[k] = totals.get(k, 0.0) + v.detach() / (len(batches) - 1)
            self.critic.requires_grad_(False)  # the generator's update leaves it as it is
            melody, _ = self.split_batch(batches[-1])
            fake = self.generator(melody, self.noise(len(melody), melody.device))
            gen_loss = -self.critic(fake, melody).mean()
            optimizers["generator"].zero_grad(set_to_none=True)
            gen_loss.backward()
            self._sync(self.generator, grads=True)
            optimizers["generator"].step()
            self._sync(self.generator, grads=False)
            self.critic.requires_grad_(True)
        return {"loss": totals["wasserstein"], **totals, "generator_loss": gen_loss.detach()}

    def evaluate_terms(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
        """Validation: the critic's terms on held-out windows (loss = its Wasserstein estimate,
        lower = the generator's voices closer to Bach's, as far as this critic can tell) and the
        chorale metrics of the generated voices against Bach's for the same melodies."""
        from .chorale_metrics import compare  # numpy only; imported when validating
        with torch.autocast(x.device.type, enabled=False), torch.enable_grad():
            terms = self.critic_terms(x, generator)
            out = {k: float(v.detach()) for k, v in terms.items()}
        out["loss"] = out["wasserstein"]
        with torch.no_grad():
            melody, _ = self.split_batch(x)
            rolls = self.generator(melody, self.noise(len(x), x.device, generator))
        pitches = x.cpu().numpy()
        generated = np.concatenate([pitches[..., :1], roll_to_voices(rolls.cpu().numpy())], -1)
        metrics = compare(generated, pitches)
        out.update({k: metrics[k] for k in ("empty_bar_rate", "in_scale_ratio", "pc_js",
                                            "polyphony")})
        return out

    @staticmethod
    def describe_validation(val: dict[str, float], best: float) -> str:
        return (f"validation Wasserstein estimate {val['loss']:.3f} (gradient penalty "
                f"{val['gradient_penalty']:.3f}, empty bars {val['empty_bar_rate']:.2f}, in scale "
                f"{val['in_scale_ratio']:.2f}, pitch-class JS {val['pc_js']:.3f}), best {best:.3f}")

    @staticmethod
    def progress_terms(scalars: dict[str, float]) -> dict[str, str]:
        return {"W": f"{scalars['wasserstein']:.2f}", "gp": f"{scalars['gradient_penalty']:.2f}"}

    @staticmethod
    def plot_curves(run_dir: Path) -> Path | None:
        """loss_curve.png: losses and Wasserstein estimate, penalty, validation metrics."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            return None
        with open(run_dir / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        panels = (("critic_loss", "generator_loss", "wasserstein"), ("gradient_penalty",),
                  ("empty_bar_rate", "in_scale_ratio", "pc_js"))
        fig = Figure(figsize=(14, 4))
        FigureCanvasAgg(fig)
        for ax, names in zip(fig.subplots(1, len(panels)), panels):
            for split, style in (("train", "-"), ("validation", "o-")):
                for name in names:
                    pts = [(int(r["step"]), float(r[name])) for r in rows
                           if r["split"] == split and r.get(name)]
                    if pts:
                        ax.plot(*zip(*pts), style, label=f"{split} {name}", alpha=0.8,
                                markersize=3)
            ax.set_xlabel("generator step")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.suptitle(run_dir.name)
        fig.tight_layout()
        path = run_dir / "loss_curve.png"
        fig.savefig(path, dpi=90)
        return path
