"""GrooVAE's free-running decoder as a hand-built ONNX graph: one Scan over the steps.

Built from the weights with onnx.helper rather than traced. Batch-1 latency is mostly per-node
overhead times 64 steps, so the body is kept to 23 nodes; on a trained groovae_4bar_small
(benchmarks/decode_latency.py --compare-routes, CPU time, one thread) this graph took 2.68 ms
against 3.67 ms for the TorchScript-loop export (ONNX Loop), 4.94 ms for a step-driven Python
loop and 27.4 ms for torch eager, and 2,150 vs 1,790 patterns/s at batch 32. Export checks
this graph against the torch decoder it was built from (export/verify.py).
Step maths, all 3-D (1, B, .) so LSTM ops chain without reshapes:

  layer 0   hand-written LSTM cell; z's share of its input projection (+ bias) is computed once
            per pattern outside the loop (z is constant over the steps)
  layer 1+  the ONNX LSTM op (one fused node each)
  head      hit = logit > T * logit(u)     (u < sigmoid(logit / T), without a division)
            velocity = sigmoid(a), offset + 0.5 = sigmoid(2b) (= 0.5 tanh(b) + 0.5)
The fed-back offsets stay shifted by +0.5 (one Sigmoid serves both heads); the shift is folded
into layer 0's hit columns and undone once after the loop.

Variants: "fp32"; "int8": the LSTM layers above layer 0 get per-channel symmetric int8 weights
(onnxruntime's DynamicQuantizeLSTM contrib op, activations quantized on the fly, CPU only).
Layer 0 stays fp32: its input carries velocities and offsets, and quantizing it with the hidden
state to 8 bits shifted a trained model's velocities and flipped 1.6 % of hits (vs 0.4 %) for
little speed (most of the int8 gain is the LSTM op). fp16 was tried and dropped: close enough,
but ~1.5x slower than fp32 on these AVX2 CPUs (no fp16 maths).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from groove_live.pattern import OFFSET_MAX
from groove_live.spec import ModelSpec

from ..train.model import MIN_SIGMA

OPSET = 17
MS_DOMAIN = "com.microsoft"
VARIANTS = ("fp32", "int8")


def _gates(w: np.ndarray, order: str) -> np.ndarray:
    """Reorder torch's gate blocks (i, f, g, o along axis 0) into `order`."""
    blocks = dict(zip("ifgo", np.split(w, 4, axis=0)))
    return np.concatenate([blocks[k] for k in order], axis=0)


def _quantize_columns(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output column of a (K, N) matrix: (int8 weights, (N,) scales)."""
    scale = np.maximum(np.abs(w).max(axis=0) / 127.0, 1e-12).astype(np.float32)
    return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale


class _Graph:
    """Collects nodes and initializers; names are unique by construction of the callers."""

    def __init__(self) -> None:
        self.inits: dict[str, onnx.TensorProto] = {}
        self._count = 0

    def f32(self, name: str, value) -> str:
        self.inits[name] = numpy_helper.from_array(np.asarray(value, np.float32), name)
        return name

    def i64(self, name: str, value) -> str:
        self.inits[name] = numpy_helper.from_array(np.asarray(value, np.int64), name)
        return name

    def i8(self, name: str, value) -> str:
        self.inits[name] = numpy_helper.from_array(np.asarray(value, np.int8), name)
        return name

    def node(self, nodes: list, op: str, inputs: list[str], outputs: list[str], **attrs) -> str:
        self._count += 1
        nodes.append(helper.make_node(op, inputs, outputs, name=f"{op}_{self._count}", **attrs))
        return outputs[0]


def build_decoder(decoder, spec: ModelSpec, variant: str = "fp32") -> onnx.ModelProto:
    """decoder: a train.model.Decoder in eval mode. Inputs/outputs are named as in `spec`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    q8 = variant == "int8"
    c, h_size, layers, steps = decoder.n_drums, decoder.hidden, decoder.layers, spec.steps
    if q8 and layers < 2:
        raise ValueError("int8 quantizes the decoder's LSTM layers above the first; this "
                         "decoder has one layer")
    gaussian = decoder.gaussian
    w = {k: v.detach().cpu().numpy().astype(np.float32).copy()
         for k, v in decoder.rnn.named_parameters()}
    # Fed-back offsets arrive as (offset + 0.5) * hit: fold the -0.5 * hit into the hit columns.
    w["weight_ih_l0"][:, :c] -= 0.5 * w["weight_ih_l0"][:, 2 * c:3 * c]
    w_out = decoder.out.weight.detach().cpu().numpy().T.astype(np.float32).copy()  # (H, kC)
    b_out = decoder.out.bias.detach().cpu().numpy().astype(np.float32).copy()
    w_out[:, 2 * c:3 * c] *= 2.0  # 0.5 tanh(b) + 0.5 = sigmoid(2b)
    b_out[2 * c:3 * c] *= 2.0

    g = _Graph()
    top: list = []
    n = g.node
    z_in, t_in, hit_in, cont_in = spec.decoder_inputs
    hits_out, vel_out, off_out = spec.decoder_outputs

    # --- once per call, outside the loop --------------------------------------------------
    g.i64("axis0", [0])
    n(top, "Log", [hit_in], ["log_u"])
    n(top, "Sub", [g.f32("one", 1.0), hit_in], ["one_minus_u"])
    n(top, "Log", ["one_minus_u"], ["log_1mu"])
    n(top, "Sub", ["log_u", "log_1mu"], ["logit_u"])  # (B, T, C)
    n(top, "Unsqueeze", [t_in, g.i64("axes12", [1, 2])], ["t_b11"])
    n(top, "Mul", ["t_b11", "logit_u"], ["threshold_btc"])
    n(top, "Transpose", ["threshold_btc"], ["threshold"], perm=[1, 0, 2])  # (T, B, C) scanned
    scan_inputs = ["threshold"]
    if gaussian:
        # Offset std is 0.5 * (softplus + floor) in steps: fold the 0.5 into the noise, once.
        n(top, "Mul", [cont_in, g.f32("noise_scale", np.r_[np.ones(c), np.full(c, 0.5)])],
          ["noise_scaled"])
        n(top, "Transpose", ["noise_scaled"], ["noise"], perm=[1, 0, 2])  # (T, B, 2C)
        scan_inputs.append("noise")
    init_w = decoder.init.weight.detach().cpu().numpy().T
    init_b = decoder.init.bias.detach().cpu().numpy()
    n(top, "Gemm", [z_in, g.f32("init_w", init_w), g.f32("init_b", init_b)], ["init_lin"])
    n(top, "Tanh", ["init_lin"], ["init_state"])
    n(top, "Unsqueeze", ["init_state", "axis0"], ["init_state3"])  # (1, B, 2 L H)
    state = [f"h{i}" for i in range(layers)] + [f"c{i}" for i in range(layers)]
    n(top, "Split", ["init_state3", g.i64("init_split", [h_size] * (2 * layers))],
      [s + "_init" for s in state], axis=2)

    # Layer 0: z's share of the gates, once per pattern. Gate order i, f, o | g.
    w_ih0, w_hh0 = w["weight_ih_l0"], w["weight_hh_l0"]
    bias0 = _gates((w["bias_ih_l0"] + w["bias_hh_l0"])[:, None], "ifog")[:, 0]
    n(top, "Gemm", [z_in, g.f32("w_z0", _gates(w_ih0[:, 3 * c:], "ifog").T), g.f32("b0", bias0)],
      ["z_gates"])
    n(top, "Unsqueeze", ["z_gates", "axis0"], ["z_gates3"])  # (1, B, 4H)
    g.f32("w_xh0", np.concatenate([_gates(w_ih0[:, :3 * c], "ifog"), _gates(w_hh0, "ifog")],
                                  1).T)  # (3C + H, 4H)
    for i in range(1, layers):
        # ONNX LSTM gate order is i, o, f, c(=g).
        w_i = _gates(w[f"weight_ih_l{i}"], "iofg")
        w_h = _gates(w[f"weight_hh_l{i}"], "iofg")
        g.f32(f"B{i}", np.concatenate([_gates(w[f"bias_ih_l{i}"][:, None], "iofg")[:, 0],
                                       _gates(w[f"bias_hh_l{i}"][:, None], "iofg")[:, 0]])[None])
        if q8:  # DynamicQuantizeLSTM takes W as (dirs, input, 4H): quantize per gate unit
            for name, mat in ((f"W{i}", w_i), (f"R{i}", w_h)):
                q, scale = _quantize_columns(mat.T)
                g.i8(name, q[None])
                g.f32(name + "_scale", scale[None])
                g.i8(name + "_zero", np.zeros((1, scale.size), np.int8))
        else:
            g.f32(f"W{i}", w_i[None])
            g.f32(f"R{i}", w_h[None])
    g.f32("w_out", w_out)
    g.f32("b_out", b_out)
    g.i64("gate_split", [3 * h_size, h_size])
    g.i64("head_split", [c, 2 * c, 2 * c] if gaussian else [c, 2 * c])
    g.f32("upper", np.r_[np.ones(c), np.full(c, OFFSET_MAX + 0.5)])  # velocity <= 1, offset
    if gaussian:
        g.f32("min_sigma", MIN_SIGMA)
        g.f32("zero", 0.0)

    n(top, "Shape", [z_in], ["z_shape"])
    n(top, "Slice", ["z_shape", "axis0", g.i64("one_i", [1])], ["batch"])
    n(top, "Concat", ["one_i", "batch", g.i64("step_size", [3 * c])], ["x_shape"], axis=0)
    n(top, "ConstantOfShape", ["x_shape"], ["x_init"],
      value=numpy_helper.from_array(np.zeros(1, np.float32)))

    # --- one step (the Scan body) -----------------------------------------------------------
    body: list = []
    x = "x"  # (1, B, 3C): hits, velocities, offsets + 0.5, masked by hits
    n(body, "Concat", [x, "h0"], ["xh0"], axis=2)
    n(body, "MatMul", ["xh0", "w_xh0"], ["xh0_gates"])
    n(body, "Add", ["xh0_gates", "z_gates3"], ["gates0"])
    n(body, "Split", ["gates0", "gate_split"], ["ifo0_pre", "g0_pre"], axis=2)
    n(body, "Sigmoid", ["ifo0_pre"], ["ifo0"])
    n(body, "Split", ["ifo0"], ["i0", "f0", "o0"], axis=2)
    n(body, "Tanh", ["g0_pre"], ["g0"])
    n(body, "Mul", ["f0", "c0"], ["fc0"])
    n(body, "Mul", ["i0", "g0"], ["ig0"])
    n(body, "Add", ["fc0", "ig0"], ["c0_next"])
    n(body, "Tanh", ["c0_next"], ["tanh_c0"])
    n(body, "Mul", ["o0", "tanh_c0"], ["h0_next"])
    below = "h0_next"
    for i in range(1, layers):
        if q8:
            n(body, "DynamicQuantizeLSTM",
              [below, f"W{i}", f"R{i}", f"B{i}", "", f"h{i}", f"c{i}", "", f"W{i}_scale",
               f"W{i}_zero", f"R{i}_scale", f"R{i}_zero"],
              [f"y{i}", f"h{i}_next", f"c{i}_next"], hidden_size=h_size, domain=MS_DOMAIN)
        else:
            n(body, "LSTM", [below, f"W{i}", f"R{i}", f"B{i}", "", f"h{i}", f"c{i}"],
              [f"y{i}", f"h{i}_next", f"c{i}_next"], hidden_size=h_size)
        below = f"h{i}_next"
    n(body, "MatMul", [below, "w_out"], ["head_mm"])
    n(body, "Add", ["head_mm", "b_out"], ["head"])  # (1, B, 3C or 5C)
    n(body, "Split", ["head", "head_split"],
      ["logits", "means_pre"] + (["std_pre"] if gaussian else []), axis=2)
    n(body, "Greater", ["logits", "threshold_t"], ["hit_bool"])
    n(body, "Cast", ["hit_bool"], ["hit"], to=TensorProto.FLOAT)
    n(body, "Sigmoid", ["means_pre"], ["means"])
    values = "means"
    if gaussian:
        n(body, "Softplus", ["std_pre"], ["softplus"])
        n(body, "Add", ["softplus", "min_sigma"], ["std"])
        n(body, "Mul", ["std", "noise_t"], ["spread"])
        n(body, "Add", ["means", "spread"], ["drawn"])
        values = n(body, "Max", ["drawn", "zero"], ["drawn_lo"])
    n(body, "Concat", ["hit", "hit"], ["hit2"], axis=2)
    # Values are >= 0 here, so min(v, upper, hit) clips and masks in one node.
    n(body, "Min", [values, "upper", "hit2"], ["values_masked"])
    n(body, "Concat", ["hit", "values_masked"], ["x_next"], axis=2)
    n(body, "Identity", ["x_next"], ["x_step"])  # a Scan output needs its own name

    f = TensorProto.FLOAT
    body_inputs = [helper.make_tensor_value_info(s, f, None) for s in [x] + state]
    body_inputs.append(helper.make_tensor_value_info("threshold_t", f, None))
    if gaussian:
        body_inputs.append(helper.make_tensor_value_info("noise_t", f, None))
    body_outputs = [helper.make_tensor_value_info(s, f, None)
                    for s in ["x_next"] + [s + "_next" for s in state] + ["x_step"]]
    body_graph = helper.make_graph(body, "decoder_step", body_inputs, body_outputs)
    n(top, "Scan", ["x_init"] + [s + "_init" for s in state] + scan_inputs,
      ["x_last"] + [s + "_last" for s in state] + ["x_steps"], body=body_graph,
      num_scan_inputs=len(scan_inputs))

    # --- back to (B, T, C) and true offsets -------------------------------------------------
    n(top, "Squeeze", ["x_steps", g.i64("axis1", [1])], ["x_tbc"])
    n(top, "Transpose", ["x_tbc"], ["x_btc"], perm=[1, 0, 2])
    n(top, "Split", ["x_btc", g.i64("out_split", [c, c, c])], [hits_out, vel_out, "offsets_half"],
      axis=2)
    n(top, "Mul", [hits_out, g.f32("half", 0.5)], ["half_hits"])
    n(top, "Sub", ["offsets_half", "half_hits"], [off_out])

    # Declared shapes are the spec's own rules, the dynamic batch named "batch".
    shapes = spec.io_shapes()
    inputs, outputs = ([helper.make_tensor_value_info(name, f, ["batch" if d is None else d
                                                                for d in dims])
                        for name, dims in shapes[part].items()]
                       for part in ("decoder_inputs", "decoder_outputs"))
    graph = helper.make_graph(top, "groovae_decoder", inputs, outputs, list(g.inits.values()))
    opsets = [helper.make_opsetid("", OPSET)]
    if q8:
        opsets.append(helper.make_opsetid(MS_DOMAIN, 1))
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8,
                              producer_name="groove-live export")
    if not q8:  # the checker does not know the contrib ops
        onnx.checker.check_model(model, full_check=True)
    return model

