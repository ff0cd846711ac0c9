"""MusicVAE's hierarchical drum model (spec kind "hierarchical"): a conductor over bars.

A flat decoder must carry a 16-bar phrase through 256 steps of one LSTM state and tends to
forget where it is; MusicVAE's answer is a conductor: an LSTM that runs once per bar, its initial
state tanh(dense(z)) and its input zeros (it is not autoregressive), and emits one embedding per
bar. Each bar is then decoded by the bottom decoder (train/categorical.py's ClassDecoder) from
that bar's embedding alone: initial state tanh(dense(embedding)), the embedding in every step's
input, classes out as in the flat model.

One choice of ours: the bars' bottom decoders run side by side (as one batch of B x bars
sequences), each bar starting from a silent "previous step". Magenta's hierarchical decoder by
default feeds each bar the previous bar's last output (autoregression across bars; its
`disable_autoregression` option turns that off, as we always do). Without it, decoding 16 bars
takes 16 sequential LSTM steps instead of 256, which is what lets a 16-bar phrase decode in a
few milliseconds live. Coherence across bars is the conductor's job
either way.

Encoder, losses and sampling are the flat model's (train/categorical.py).
"""
from __future__ import annotations

import torch
from torch import nn

from groove_live.spec import ModelSpec

from .categorical import ClassDecoder, ClassVAE
from .config import ModelConfig


class Conductor(nn.Module):
    """z -> one embedding per bar: (B, bars, H)."""

    def __init__(self, cfg: ModelConfig, bars: int):
        super().__init__()
        sizes = cfg.conductor_rnn_sizes
        if not sizes or len(set(sizes)) != 1:
            raise ValueError("the conductor needs conductor_rnn_sizes of one shared size")
        self.bars = bars
        self.hidden = sizes[0]
        self.layers = len(sizes)
        self.init = nn.Linear(cfg.z_size, 2 * self.layers * self.hidden)
        self.rnn = nn.LSTM(1, self.hidden, num_layers=self.layers, batch_first=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        s = torch.tanh(self.init(z)).view(z.shape[0], 2, self.layers, self.hidden)
        s = s.permute(1, 2, 0, 3)
        state = (s[0].contiguous(), s[1].contiguous())
        out, _ = self.rnn(z.new_zeros((z.shape[0], self.bars, 1)), state)
        return out


class HierarchicalVAE(ClassVAE):
    KIND = "hierarchical"

    def __init__(self, cfg: ModelConfig, spec: ModelSpec):
        super().__init__(cfg, spec)
        self.conductor = Conductor(cfg, spec.bars)
        self.decoder = ClassDecoder(cfg, spec, self.conductor.hidden, spec.steps_per_bar)

    def _by_bar(self, x: torch.Tensor) -> torch.Tensor:
        """(B, bars * S, ...) -> (B * bars, S, ...)."""
        s = self.spec.steps_per_bar
        return x.reshape(x.shape[0] * self.spec.bars, s, *x.shape[2:])

    def _by_phrase(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        return x.reshape(batch, self.spec.steps, *x.shape[2:])

    def teacher_logits(self, z, hits, sample_prob: float = 0.0, generator=None):
        emb = self.conductor(z)  # (B, bars, H)
        logits = self.decoder.forward_teacher(emb.reshape(-1, emb.shape[-1]), self._by_bar(hits),
                                              sample_prob, generator)
        return self._by_phrase(logits, z.shape[0])

    def generate_hits(self, z: torch.Tensor, temperature: torch.Tensor,
                      class_noise: torch.Tensor) -> torch.Tensor:
        b, bars = z.shape[0], self.spec.bars
        emb = self.conductor(z).reshape(b * bars, -1)
        temps = temperature[:, None].expand(b, bars).reshape(-1)
        hits = self.decoder.sample(emb, temps, self._by_bar(class_noise))
        return self._by_phrase(hits, b)
