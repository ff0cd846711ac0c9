"""GrooVAE's tasks (humanize, drumify, infill) as one conditional VAE: the model of spec kind
"conditioned".

The decoder is given the task's input pattern (the control: a quantized pattern, taps, or a
pattern without hi-hats, made by groove_live.transforms.task_input from the played window) and a
latent z, and returns the played pattern. The encoder reads the played window, so z learns what
the control does not say: the drummer's feel (laid back or pushing, loud or soft, busy or
sparse). At inference z is drawn from the prior, scaled by the temperature (a new feel per
seed; temperature 0 is the most likely performance), or encoded from a groove the user likes.

Why the decoder is bidirectional and not autoregressive, unlike the sampling GrooVAE: the
control already fixes the phrase's rhythm, so each step's output depends mostly on its
neighbours in the control on both sides (a ghost note before a backbeat, hats between kicks),
which a backward pass sees and a left-to-right decoder does not. It also makes decoding one
pass over the phrase (no step loop), which keeps a live request at about 2 ms of one core
(docs/benchmarks.md), and lets the graph be exported by torch's ONNX exporter as is.

Humanize keeps the user's notes exactly ("hits as controls"): its output hits are the control's
and only velocity and timing are learned. Infill keeps every voice but the hi-hats from its
input. Both are done here, in the graph, so every consumer gets the finished pattern.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from groove_live.limits import NOISE_EPS
from groove_live.pattern import OFFSET_MAX, Patterns
from groove_live.spec import ModelSpec
from groove_live.transforms import generated_voices, task_input

from .config import ModelConfig
from .model import Encoder, _gaussian_nll, kl_divergence, split_heads



def _squared_errors(heads: dict[str, torch.Tensor], vel: torch.Tensor, off: torch.Tensor,
                    on: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cell squared errors of the velocity and offset means where `on` (offsets doubled
    to span [-1, 1), as Magenta's MSE heads)."""
    return ((heads["velocity_mean"] - vel).pow(2) * on,
            (2 * heads["offset_mean"] - 2 * off).pow(2) * on)


class ConditionedDecoder(nn.Module):
    """Bidirectional LSTM over (control, z) per step -> hit, velocity and offset heads."""

    def __init__(self, cfg: ModelConfig, spec: ModelSpec):
        super().__init__()
        sizes = cfg.dec_rnn_sizes
        if len(set(sizes)) != 1:
            raise ValueError("decoder layers must share one size (nn.LSTM stack)")
        self.n_drums = spec.n_drums
        self.gaussian = cfg.continuous_head == "gaussian"
        self.rnn = nn.LSTM(spec.step_size + cfg.z_size, sizes[0], num_layers=len(sizes),
                           batch_first=True, bidirectional=True,
                           dropout=cfg.dropout if len(sizes) > 1 else 0.0)
        self.out = nn.Linear(2 * sizes[0], (5 if self.gaussian else 3) * spec.n_drums)

    def forward(self, z: torch.Tensor, control: torch.Tensor) -> dict[str, torch.Tensor]:
        zs = z[:, None, :].expand(-1, control.shape[1], -1)
        out, _ = self.rnn(torch.cat([control, zs], dim=-1))  # (B, T, 2H)
        return split_heads(self.out(out), self.n_drums, self.gaussian)


class ConditionedVAE(nn.Module):
    def __init__(self, cfg: ModelConfig, spec: ModelSpec):
        super().__init__()
        if spec.kind != "conditioned":
            raise ValueError(f"ConditionedVAE is the model of kind 'conditioned', not {spec.kind!r}")
        if (spec.z_size, spec.continuous_head) != (cfg.z_size, cfg.continuous_head):
            raise ValueError(f"spec z_size/continuous_head {spec.z_size}/{spec.continuous_head} "
                             f"differ from the config's {cfg.z_size}/{cfg.continuous_head}")
        self.cfg = cfg
        self.spec = spec
        self.task = spec.task
        self.encoder = Encoder(cfg, spec)
        self.decoder = ConditionedDecoder(cfg, spec)
        # Derived from the spec, so not saved with the weights.
        self.register_buffer("generated", torch.from_numpy(generated_voices(spec.task, spec)),
                             persistent=False)
        # The hit threshold's logit bias (train/calibrate.py): 0 until a calibration fit on
        # validation data is applied for export; not part of the trained weights.
        self.register_buffer("hit_bias", torch.zeros(()), persistent=False)

    # --- data -------------------------------------------------------------------------------
    @staticmethod
    def training_inputs(patterns: Patterns, spec: ModelSpec) -> np.ndarray:
        """(N, T, 6C): the played window then the task's input made from it, side by side so
        batches, DDP shards and checkpoints handle one tensor as for every other kind."""
        control = task_input(spec.task, patterns, spec)
        return np.concatenate([patterns.to_flat(), control.to_flat()], axis=-1)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.spec.step_size
        return x[..., :k], x[..., k:]

    # --- training ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        target, control = self.split(x)
        mu, sigma = self.encoder(target)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return self.decoder(mu + sigma * eps, control), mu, sigma

    def loss_terms(self, outputs, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction of what the task writes (hits only where it chooses them; velocity
        and timing on the true hits of the voices it writes), plus β·KL above the free bits."""
        heads, mu, sigma = outputs
        heads = {k: v.float() for k, v in heads.items()}
        mu, sigma = mu.float(), sigma.float()
        target, control = self.split(x)
        hits, vel, off = self._parts(target)
        writes = self.generated  # (C,)
        if self.task == "humanize":  # the hits are given: nothing to learn about them
            hit_loss = heads["hit_logits"].new_zeros(())
        else:
            hit_loss = F.binary_cross_entropy_with_logits(heads["hit_logits"], hits,
                                                          reduction="none")
            hit_loss = (hit_loss * writes).sum(dim=(1, 2)).mean()
        on = hits * writes
        if self.cfg.continuous_head == "gaussian":
            vel_loss = _gaussian_nll(vel, heads["velocity_mean"], heads["velocity_std"]) * on
            off_loss = _gaussian_nll(2 * off, 2 * heads["offset_mean"],
                                     2 * heads["offset_std"]) * on
        else:
            vel_loss, off_loss = _squared_errors(heads, vel, off, on)
        vel_loss = vel_loss.sum(dim=(1, 2)).mean()
        off_loss = off_loss.sum(dim=(1, 2)).mean()
        kl = kl_divergence(mu, sigma)
        kl_cost = torch.clamp(kl - self.cfg.free_nats, min=0.0).mean()
        recon = hit_loss + vel_loss + off_loss
        loss = recon + self.cfg.beta * kl_cost
        terms = {"recon": recon, "hit_loss": hit_loss, "velocity_loss": vel_loss,
                 "offset_loss": off_loss, "kl": kl.mean(), "kl_cost": kl_cost}
        if self.cfg.centre_weight > 0:
            centre = self.centre_loss(control, vel, off, on)
            loss = loss + self.cfg.centre_weight * centre
            terms["centre_loss"] = centre
        return {"loss": loss, **terms}

    def _parts(self, target: torch.Tensor):
        """(hits, velocities, offsets) of a flat (B, T, 3C) pattern."""
        c = self.spec.n_drums
        return target[..., :c], target[..., c:2 * c], target[..., 2 * c:]

    def centre_loss(self, control: torch.Tensor, vel: torch.Tensor, off: torch.Tensor,
                    on: torch.Tensor) -> torch.Tensor:
        """Squared error of the velocity and timing means decoded at z = 0 from `control`
        against the played take's `vel` and `off`, where `on` (the true hits of the voices the
        task writes). Why: the decoder learns from posterior latents, which already carry this
        take's push and drag, so nothing else asks z = 0 to be the best guess from the score
        alone; this term does, and temperature 0 then plays it."""
        z0 = control.new_zeros((control.shape[0], self.cfg.z_size))
        heads = {k: v.float() for k, v in self.decoder(z0, control).items()}
        vel_err, off_err = _squared_errors(heads, vel, off, on)
        return (vel_err + off_err).sum(dim=(1, 2)).mean()

    # --- inference (what the ONNX decoder computes) -----------------------------------------
    def sample(self, z: torch.Tensor, temperature: torch.Tensor, hit_noise: torch.Tensor,
               cont_noise: torch.Tensor, control: torch.Tensor):
        """The finished pattern (hits, velocities, offsets), each (B, T, C), from explicit noise.

        temperature (B,) scales every random part: hit logits (a hit when T·logit(u) < logit,
        so T = 0 is the most likely pattern, without dividing by zero) and the Gaussian noise
        of velocity and timing (T = 0: their means). hit_noise uniform (B, T, C), cont_noise
        standard normal (B, T, 2C). A calibrated hit_bias moves the threshold in full at T = 0
        and not at all from T = 1 (train/calibrate.py).
        """
        return self.finish(self.decoder(z, control), temperature, hit_noise, cont_noise,
                           control, self.hit_bias)

    def finish(self, heads: dict[str, torch.Tensor], temperature: torch.Tensor,
               hit_noise: torch.Tensor, cont_noise: torch.Tensor, control: torch.Tensor,
               hit_bias: torch.Tensor):
        """sample() from the decoder's heads on: the drawn hits (with hit_bias on the logits
        at T = 0, fading out by T = 1) and the task's rules. Apart so that calibration can try
        many biases on one decoder pass (train/calibrate.py)."""
        c = self.spec.n_drums
        t = temperature[:, None, None]
        logits = heads["hit_logits"]
        if float(hit_bias) != 0.0:  # a Python branch: uncalibrated graphs stay as they were
            logits = logits + hit_bias * torch.clamp(1.0 - t, min=0.0)
        u = hit_noise.clamp(NOISE_EPS, 1.0 - NOISE_EPS)
        sampled = (t * torch.log(u / (1.0 - u)) < logits).to(logits.dtype)
        given_hits = control[..., :c]
        writes = self.generated > 0  # (C,)
        if self.task == "humanize":
            hits = given_hits
        else:
            hits = torch.where(writes, sampled, given_hits)
        vel, off = heads["velocity_mean"], heads["offset_mean"]
        if "velocity_std" in heads:
            vel = vel + heads["velocity_std"] * cont_noise[..., :c] * t
            off = off + heads["offset_std"] * cont_noise[..., c:] * t
        vel = torch.where(writes, vel, control[..., c:2 * c])
        off = torch.where(writes, off, control[..., 2 * c:])
        vel = vel.clamp(0.0, 1.0) * hits
        off = off.clamp(-0.5, OFFSET_MAX) * hits
        return hits, vel, off

    def generate(self, control: torch.Tensor, temperature: float = 1.0,
                 generator: torch.Generator | None = None, z: torch.Tensor | None = None):
        """sample() with z from the prior N(0, T^2 I) (the engine's feel_latents) and noise
        drawn from `generator`."""
        b, t = control.shape[:2]
        c, dev = self.spec.n_drums, control.device
        if z is None:
            z = torch.randn((b, self.cfg.z_size), generator=generator, device=dev) * temperature
        hit_noise = torch.rand((b, t, c), generator=generator, device=dev)
        cont_noise = torch.randn((b, t, 2 * c), generator=generator, device=dev)
        temps = torch.full((b,), float(temperature), device=dev)
        return self.sample(z, temps, hit_noise, cont_noise, control)
