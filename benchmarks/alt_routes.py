"""The export routes not taken, rebuilt so decode_latency.py --compare-routes can time them.

Both go through torch's TorchScript exporter (mean head maths; timing does not depend on it):
  torchscript-loop  the whole 64-step loop scripted -> one ONNX Loop
  step-driven       one step exported; Python calls onnxruntime once per step
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn


class _Step(nn.Module):
    """One decoder step with explicit noise: (x, z, h, c, threshold) -> (x, h, c)."""

    def __init__(self, decoder):
        super().__init__()
        self.rnn, self.out, self.c = decoder.rnn, decoder.out, decoder.n_drums

    def forward(self, x, z, h, c, threshold):
        out, (h, c) = self.rnn(torch.cat([x, z], -1).unsqueeze(1), (h, c))
        y = self.out(out[:, 0])
        k = self.c
        hit = (y[:, :k] > threshold).float()
        vel = torch.sigmoid(y[:, k:2 * k]) * hit
        off = (0.5 * torch.tanh(y[:, 2 * k:3 * k])).clamp(-0.5, 0.5 - 1e-6) * hit
        return torch.cat([hit, vel, off], -1), h, c


class _Loop(nn.Module):
    def __init__(self, decoder, steps: int):
        super().__init__()
        self.step = _Step(decoder)
        self.init = decoder.init
        self.layers, self.hidden, self.steps = decoder.layers, decoder.hidden, steps

    def forward(self, z, threshold):
        b = z.shape[0]
        s = torch.tanh(self.init(z)).view(b, 2, self.layers, self.hidden).permute(1, 2, 0, 3)
        h, c = s[0].contiguous(), s[1].contiguous()
        x = torch.zeros(b, 3 * self.step.c)
        xs = []
        for t in range(self.steps):
            x, h, c = self.step(x, z, h, c, threshold[:, t])
            xs.append(x)
        return torch.stack(xs, 1)


def _export(module, args, names_in, names_out) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buffer, dynamo=False, opset_version=17,
                          input_names=names_in, output_names=names_out,
                          dynamic_axes={n: {0: "batch"} for n in names_in + names_out
                                        if n not in ("h", "c", "h_out", "c_out")})
    return buffer.getvalue()


def _session(model_bytes: bytes, threads: int):
    from groove_live.ort import ort  # onnxruntime, telemetry off
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _threshold(spec, batch: int, rng) -> np.ndarray:
    u = np.clip(rng.random((batch, spec.steps, spec.n_drums), dtype=np.float32), 1e-7, 1 - 1e-7)
    return np.log(u) - np.log1p(-u)  # temperature 1


def torchscript_loop(model, spec, threads: int = 1):
    """-> decode(batch, rng) running the scripted-loop export."""
    loop = torch.jit.script(_Loop(model.decoder, spec.steps).eval())
    z = torch.zeros(1, spec.z_size)
    session = _session(_export(loop, (z, torch.zeros(1, spec.steps, spec.n_drums)),
                               ["z", "threshold"], ["x"]), threads)

    def decode(batch: int, rng):
        z = rng.standard_normal((batch, spec.z_size)).astype(np.float32)
        return session.run(None, {"z": z, "threshold": _threshold(spec, batch, rng)})[0]
    return decode


def step_driven(model, spec, threads: int = 1):
    """-> decode(batch, rng) calling the one-step export 64 times."""
    dec = model.decoder
    step = _Step(dec).eval()
    b = 1
    state = torch.zeros(dec.layers, b, dec.hidden)
    args = (torch.zeros(b, spec.step_size), torch.zeros(b, spec.z_size), state, state,
            torch.zeros(b, spec.n_drums))
    session = _session(_export(step, args, ["x", "z", "h", "c", "threshold"],
                               ["x_out", "h_out", "c_out"]), threads)
    init_w = dec.init.weight.detach().numpy().T
    init_b = dec.init.bias.detach().numpy()

    def decode(batch: int, rng):
        if batch != 1:
            raise ValueError("the step-driven export here is fixed at batch 1")
        z = rng.standard_normal((1, spec.z_size)).astype(np.float32)
        threshold = _threshold(spec, 1, rng)
        s = np.tanh(z @ init_w + init_b).reshape(1, 2, dec.layers, dec.hidden).transpose(1, 2, 0, 3)
        h, c = np.ascontiguousarray(s[0]), np.ascontiguousarray(s[1])
        x = np.zeros((1, spec.step_size), np.float32)
        xs = []
        for t in range(spec.steps):
            x, h, c = session.run(None, {"x": x, "z": z, "h": h, "c": c,
                                         "threshold": threshold[:, t]})
            xs.append(x)
        return np.stack(xs, 1)
    return decode
