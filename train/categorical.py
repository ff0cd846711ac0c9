"""MusicVAE's drum model: one class out of 2^voices per step (spec kind "categorical").

Magenta's `cat-drums_2bar_small`: a bidirectional LSTM encoder, an autoregressive LSTM decoder
whose output is a softmax over the 512 combinations of the 9 voices, trained on quantized
patterns (hits only) with free bits and β, and scheduled sampling. Two choices of ours:

- The encoder reads each step's 9 hits, and the decoder is fed back the previous step's 9 hits,
  instead of a one-hot of 512. It is the same information (the class is the bit pattern,
  groove_live/drum_classes.py) through a first layer 57x smaller, which keeps the bundled files
  small; the output stays one 512-way softmax, so the model still predicts all voices of a step
  jointly, which is the point of the categorical representation.
- Scheduled sampling is done in parallel (Duckworth et al. 2019): a teacher-forced pass without
  gradient draws each step's class, and a second pass is fed, at each step with the schedule's
  probability, that draw instead of the truth. Magenta feeds its own samples step by step; on a
  CPU that sequential loop would cost ~10x a fused LSTM pass, the parallel form 2x. The
  probability follows Magenta's inverse sigmoid: 1 - k / (k + exp(step / k)), k = sampling_rate.

The hierarchical model (train/hierarchical.py) reuses the encoder, the per-bar decoder and the
losses defined here. Sampling draws each step's class from softmax(logits / T) by inverse CDF
with one explicit uniform per step (`draw_class`), and takes the argmax at T = 0; the ONNX graph
computes the same (export/traced_graph.py). Training's scheduled sampling keeps Gumbel-max
(`gumbel`), drawing its own noise.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from groove_live.drum_classes import class_bits
from groove_live.limits import NOISE_EPS
from groove_live.pattern import Patterns
from groove_live.spec import ModelSpec
from groove_live.transforms import FIXED_VELOCITY

from .config import ModelConfig


def check_config(model: str, kind: str, cfg: ModelConfig, spec: ModelSpec) -> None:
    if spec.kind != kind:
        raise ValueError(f"{model} is the model of kind {kind!r}, not {spec.kind!r}")
    if spec.z_size != cfg.z_size:
        raise ValueError(f"spec z_size {spec.z_size} differs from the config's {cfg.z_size}")
    if len(set(cfg.dec_rnn_sizes)) != 1:
        raise ValueError("decoder layers must share one size (nn.LSTM stack)")


def sampling_probability(rate: float, step: int) -> float:
    """Magenta's inverse-sigmoid schedule: the share of steps fed the model's own draw."""
    if rate <= 0:
        return 0.0
    return 1.0 - rate / (rate + math.exp(min(step / rate, 700.0)))


def gumbel(noise: torch.Tensor) -> torch.Tensor:
    """Uniform noise -> standard Gumbel noise."""
    u = noise.clamp(NOISE_EPS, 1.0 - NOISE_EPS)
    return -torch.log(-torch.log(u))


# A uniform u is clamped to at most this, so u * total stays below the total in float32 rounding
# (the exact product lies at least one unit in the last place under it): the inverse CDF then
# always lands on a class of nonzero weight, never past the last.
CDF_U_MAX = 1.0 - 2.0 ** -23


class _RunningSum(torch.autograd.Function):
    """Running sum down axis 0 in float32, one addition after another, exported as ONNX CumSum:
    onnxruntime's CumSum computes exactly this, while torch's cumsum accumulates in float64, so
    torch.cumsum would leave the two ~1e-7 apart. Sampling only (no backward)."""

    @staticmethod
    def forward(ctx, x):
        return torch.from_numpy(np.add.accumulate(x.detach().cpu().numpy(), axis=0)).to(x.device)

    @staticmethod
    def symbolic(g, x):
        axis = g.op("Constant", value_t=torch.tensor(0, dtype=torch.int64))
        return g.op("CumSum", x, axis)


def draw_class(scaled: torch.Tensor, greedy: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(B, K) tempered logits (logits / T; a greedy row's plain logits) -> (B,) int64 classes
    drawn from softmax(scaled) by inverse CDF with u (B, 1) uniform in [0, CDF_U_MAX]; where
    greedy (B,), the argmax instead.

    weights = exp(scaled - max), unnormalized; the class is the number of cumulative weights
    <= u * their total (the last running sum), i.e. the first class whose cumulative weight
    exceeds it, which has probability weight / total: an exact sampler of the tempered softmax
    with one uniform per step (Gumbel-max needs one per class and two logs of each). A class
    of zero weight is never drawn: its cumulative weight equals its predecessor's. The argmax
    is taken separately rather than as the T -> 0 limit so that T = 0 is exactly the argmax,
    ties included.

    The running sum is computed to the same bits in torch and onnxruntime (`_RunningSum`):
    with 512 boundaries for u to fall near, torch's float64 accumulation against onnxruntime's
    float32 alone made about one 16-bar phrase in 30 differ at T = 1. It runs down the (K, B)
    transpose: onnxruntime's CumSum adds whole rows along axis 0 but goes element by element
    along the last axis, ~10x slower for 512 classes; the comparison is back in (B, K), where
    onnxruntime broadcasts a row's threshold fast. (Softmax's normalized weights, one node
    instead of three, made 3 of 384 sampled 16-bar phrases differ from torch against 0 of 384:
    the two normalize differently.)"""
    best = torch.argmax(scaled, dim=-1)
    weights = torch.exp(scaled - scaled.amax(dim=-1, keepdim=True))
    cdf = _RunningSum.apply(weights.t()).t()
    # counted in float (exact up to 2^24): onnxruntime sums int64 ~10x slower than float
    drawn = (cdf <= u * cdf[:, -1:]).float().sum(dim=-1).long()
    return torch.where(greedy, best, drawn)


class HitsEncoder(nn.Module):
    """Bidirectional LSTM over each step's hits -> (mu, sigma) of z.

    Takes the flat pattern (hits, velocities, offsets) or the hits alone and reads the hits
    only: the model is of quantized patterns, and the runtime's encoder feed (a flat pattern)
    stays the same for every kind."""

    def __init__(self, cfg: ModelConfig, spec: ModelSpec):
        super().__init__()
        self.n_drums = spec.n_drums
        self.rnn = nn.LSTM(spec.n_drums, cfg.enc_rnn_sizes[0], num_layers=len(cfg.enc_rnn_sizes),
                           batch_first=True, bidirectional=True)
        hidden = 2 * cfg.enc_rnn_sizes[-1]
        self.mu = nn.Linear(hidden, cfg.z_size)
        self.sigma = nn.Linear(hidden, cfg.z_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, (h, _) = self.rnn(x[..., :self.n_drums])
        last = torch.cat([h[-2], h[-1]], dim=-1)
        return self.mu(last), F.softplus(self.sigma(last))


class ClassDecoder(nn.Module):
    """Autoregressive LSTM over `steps` steps, conditioned on a vector (z, or one bar's
    embedding in the hierarchical model): initial state tanh(dense(cond)), cond and the
    previous step's hits in every step's input, a softmax over the 2^C classes out."""

    def __init__(self, cfg: ModelConfig, spec: ModelSpec, cond_size: int, steps: int):
        super().__init__()
        self.n_drums = c = spec.n_drums
        self.steps = steps
        self.hidden = cfg.dec_rnn_sizes[0]
        self.layers = len(cfg.dec_rnn_sizes)
        self.init = nn.Linear(cond_size, 2 * self.layers * self.hidden)
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.rnn = nn.LSTM(c + cond_size, self.hidden, num_layers=self.layers, batch_first=True,
                           dropout=cfg.dropout if self.layers > 1 else 0.0)
        self.out = nn.Linear(self.hidden, 1 << c)
        self.register_buffer("bits", torch.from_numpy(class_bits(c)), persistent=False)
        self.register_buffer("weights", 2.0 ** torch.arange(c), persistent=False)

    def initial_state(self, cond: torch.Tensor):
        s = torch.tanh(self.init(cond)).view(cond.shape[0], 2, self.layers, self.hidden)
        s = s.permute(1, 2, 0, 3)
        return s[0].contiguous(), s[1].contiguous()

    def logits_given(self, cond: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, K) when step t is fed prev[:, t] (the hits of step t - 1)."""
        conds = cond[:, None, :].expand(-1, prev.shape[1], -1)
        out, _ = self.rnn(self.input_dropout(torch.cat([prev, conds], dim=-1)),
                          self.initial_state(cond))
        return self.out(out)

    def forward_teacher(self, cond: torch.Tensor, hits: torch.Tensor, sample_prob: float = 0.0,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, T, K); with sample_prob > 0, parallel scheduled sampling."""
        prev = F.pad(hits[:, :-1], (0, 0, 1, 0))
        if sample_prob > 0.0:
            with torch.no_grad():
                logits = self.logits_given(cond, prev)
                u = torch.rand(logits.shape, generator=generator, device=logits.device)
                drawn = self.bits[torch.argmax(logits + gumbel(u), dim=-1)]
                drawn_prev = F.pad(drawn[:, :-1], (0, 0, 1, 0))
                use = torch.rand(prev.shape[:2] + (1,), generator=generator,
                                 device=prev.device) < sample_prob
                prev = torch.where(use, drawn_prev, prev)
        return self.logits_given(cond, prev)

    def _sample_weights(self):
        """The nn.LSTM's and output layer's weights arranged for the step loop of `sample`:
        per layer the input and recurrent matrices stacked, transposed for x @ W, gate columns
        reordered from torch's (i, f, g, o) to (i, f, o, g) so one sigmoid covers three gates,
        the two biases summed; the first layer's cond columns apart (see `sample`). Derived from
        the parameters on every call, so training and checkpoints see only the nn.LSTM; the
        exporter folds these into initializers of the same total size."""
        h, c = self.hidden, self.n_drums
        order = torch.cat([torch.arange(0, 2 * h), torch.arange(3 * h, 4 * h),
                           torch.arange(2 * h, 3 * h)])
        layers = []
        for k in range(self.layers):
            w_ih = getattr(self.rnn, f"weight_ih_l{k}")[order]
            w_hh = getattr(self.rnn, f"weight_hh_l{k}")[order]
            bias = (getattr(self.rnn, f"bias_ih_l{k}") + getattr(self.rnn, f"bias_hh_l{k}"))[order]
            if k == 0:  # input [prev hits, cond]: prev hits and h stacked, cond apart
                layers.append((torch.cat([w_ih[:, :c], w_hh], 1).t(), w_ih[:, c:].t(), bias))
            else:
                layers.append((torch.cat([w_ih, w_hh], 1).t(), None, bias))
        return layers

    def _cell(self, gates: torch.Tensor, c_prev: torch.Tensor):
        """One LSTM cell update from gates in (i, f, o, g) order: torch's nn.LSTM equations."""
        h = self.hidden
        ifo, g = torch.split(gates, [3 * h, h], dim=1)
        i, f, o = torch.split(torch.sigmoid(ifo), h, dim=1)
        c = f * c_prev + i * torch.tanh(g)
        return o * torch.tanh(c), c

    def sample(self, cond: torch.Tensor, temperature: torch.Tensor,
               class_noise: torch.Tensor) -> torch.Tensor:
        """Free-running hits (B, steps, C): step t is fed step t-1's drawn class.
        temperature (B,); class_noise uniform (B, steps, 1), one number per step (of a wider
        noise, as a caller drawing one per class passes, the first column is read).

        The class is drawn from softmax(logits / T) by inverse CDF: the first class whose
        cumulative weight exceeds u times the total (see `draw_class`); at T = 0 it is the
        argmax, whatever the noise. The LSTM runs cell by cell on the nn.LSTM's own weights
        (`_sample_weights`, the same equations as nn.LSTM, so teacher forcing and training are
        untouched): written this way, the exported graph computes the cond's share of the first
        layer's gates once instead of at every step, and needs none of the per-step reshapes
        the exporter writes around a one-step LSTM node."""
        b, c = cond.shape[0], self.n_drums
        (w0, w0_cond, b0), *upper = self._sample_weights()
        gates0_cond = cond @ w0_cond + b0  # the first layer's input share that never changes
        h0, c0 = self.initial_state(cond)
        hs, cs = list(h0.unbind(0)), list(c0.unbind(0))
        greedy = temperature <= 0
        inv_t = 1.0 / torch.where(greedy, torch.ones_like(temperature), temperature)[:, None]
        # logits / T = (h * inv_t) @ w_out + b_out * inv_t: the tempered bias once, and per step
        # a (B, H) scaling instead of a (B, K) one; inv_t is 1 on greedy rows.
        w_out, b_out = self.out.weight.t(), self.out.bias * inv_t
        u = class_noise[..., :1].clamp(0.0, CDF_U_MAX)  # (B, steps, 1)
        x = cond.new_zeros((b, c))
        classes = []
        for i in range(self.steps):
            # addmm: one Gemm node with its bias, where matmul + add would be two
            hs[0], cs[0] = self._cell(torch.addmm(gates0_cond, torch.cat([x, hs[0]], 1), w0),
                                      cs[0])
            for k, (w, _, bias) in enumerate(upper, start=1):
                hs[k], cs[k] = self._cell(torch.addmm(bias, torch.cat([hs[k - 1], hs[k]], 1), w),
                                          cs[k])
            cls = draw_class(torch.addmm(b_out, hs[-1] * inv_t, w_out), greedy, u[:, i])
            x = self.bits[cls]
            classes.append(cls)
        return self.bits[torch.stack(classes, 1)]

    def classes(self, hits: torch.Tensor) -> torch.Tensor:
        """(B, T, C) hits -> (B, T) int64 classes (the drum_classes bit order)."""
        return (hits * self.weights).sum(dim=-1).round().long()


def class_loss_terms(logits: torch.Tensor, targets: torch.Tensor, mu: torch.Tensor,
                     sigma: torch.Tensor, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Cross-entropy of the true classes summed over steps (mean over the batch) plus β times
    the KL above the free bits; `accuracy` is the teacher-forced share of steps whose class
    (all voices) is right, logged only."""
    from .model import kl_divergence  # here: model.py imports this module to register its kind

    logits, mu, sigma = logits.float(), mu.float(), sigma.float()
    ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T)
    recon = ce.sum(dim=1).mean()
    kl = kl_divergence(mu, sigma)
    kl_cost = torch.clamp(kl - cfg.free_nats, min=0.0).mean()
    with torch.no_grad():
        accuracy = (logits.argmax(dim=-1) == targets).float().mean()
    return {"loss": recon + cfg.beta * kl_cost, "recon": recon, "kl": kl.mean(),
            "kl_cost": kl_cost, "accuracy": accuracy}


def finished_pattern(hits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A quantized pattern in the standard tensors: velocity FIXED_VELOCITY on every hit (the
    level the humanize model reads as "not yet played"), offsets 0."""
    return hits, hits * FIXED_VELOCITY, torch.zeros_like(hits)


class ClassVAE(nn.Module):
    """What the flat and hierarchical MusicVAE drum models share: the hits encoder, training on
    hits with scheduled sampling, the class loss, and the finished quantized pattern. A subclass
    builds its decoder(s) and defines teacher_logits and generate_hits."""

    KIND = ""

    def __init__(self, cfg: ModelConfig, spec: ModelSpec):
        super().__init__()
        check_config(type(self).__name__, self.KIND, cfg, spec)
        self.cfg = cfg
        self.spec = spec
        self.encoder = HitsEncoder(cfg, spec)
        self.sample_prob = 0.0

    @staticmethod
    def training_inputs(patterns: Patterns, spec: ModelSpec) -> np.ndarray:
        """(N, T, C): the windows' hits; velocity and timing are not modelled."""
        return np.ascontiguousarray(patterns.hits, dtype=np.float32)

    def set_train_step(self, step: int) -> None:
        """Called by fit before each step: the scheduled-sampling probability at `step`."""
        self.sample_prob = sampling_probability(self.cfg.sampling_rate, step)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Training pass: (teacher-forced logits (B, T, 2^C), mu, sigma)."""
        hits = x[..., :self.spec.n_drums]
        mu, sigma = self.encoder(hits)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        prob = self.sample_prob if self.training else 0.0
        return self.teacher_logits(mu + sigma * eps, hits, prob, generator), mu, sigma

    def teacher_logits(self, z, hits, sample_prob: float = 0.0, generator=None):
        raise NotImplementedError

    def generate_hits(self, z: torch.Tensor, temperature: torch.Tensor,
                      class_noise: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss_terms(self, outputs, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, mu, sigma = outputs
        targets = self.decoder.classes(x[..., :self.spec.n_drums])
        return class_loss_terms(logits, targets, mu, sigma, self.cfg)

    # --- inference (what the ONNX decoder computes) -----------------------------------------
    def sample(self, z, temperature, hit_noise, cont_noise):
        """The finished quantized pattern (hits, velocities, offsets), each (B, T, C).
        hit_noise: uniform (B, T, 1), one per step; cont_noise is taken (every decoder has the
        same four inputs) but unused: a categorical model has no velocity or timing to draw."""
        del cont_noise
        return finished_pattern(self.generate_hits(z, temperature, hit_noise))


class CategoricalVAE(ClassVAE):
    """Flat MusicVAE drums: HitsEncoder + one ClassDecoder over the whole phrase."""

    KIND = "categorical"

    def __init__(self, cfg: ModelConfig, spec: ModelSpec):
        super().__init__(cfg, spec)
        self.decoder = ClassDecoder(cfg, spec, cfg.z_size, spec.steps)

    def teacher_logits(self, z, hits, sample_prob: float = 0.0, generator=None):
        return self.decoder.forward_teacher(z, hits, sample_prob, generator)

    def generate_hits(self, z: torch.Tensor, temperature: torch.Tensor,
                      class_noise: torch.Tensor) -> torch.Tensor:
        return self.decoder.sample(z, temperature, class_noise)
