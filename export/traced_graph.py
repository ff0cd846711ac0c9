"""A decoder traced whole by torch's TorchScript exporter: `model.sample(...)` as one ONNX graph.

Used by every kind whose decoder needs no hand-built step loop:

- "conditioned" (GrooVAE's task models, train/conditioned.py): a bidirectional LSTM over the
  whole phrase plus a few element-wise ops, which the exporter writes as one LSTM node and a
  handful of others. The graph returns the finished pattern, the task's rules included
  (humanize keeps the input's hits, infill every voice but the hi-hats).
- "pitched" (the chorale harmonizer, train/chorale_gan.py): the GAN's U-Net generator, its
  `forward(z, melody)`; convolutions, batch norm with its running statistics (eval mode),
  no loop.
- "categorical" and "hierarchical" (MusicVAE drums, train/categorical.py and
  train/hierarchical.py): the autoregressive step loop is a Python loop, so tracing unrolls it
  (32 steps for 2 bars; the hierarchical model decodes its bars side by side, so only one bar's
  16 steps; a flat 16-bar model 256). ClassDecoder.sample writes each step's LSTM cells out as
  matrix products on the nn.LSTM's own weights rather than calling the module: the cond's share
  of the first layer's gates is computed once before the loop, and the graph has none of the
  per-step Transpose/Squeeze/Concat the exporter writes around a one-step LSTM node. The class
  is drawn by inverse CDF from one uniform per step (hit_noise (B, T, 1)): the first class
  whose running sum of exp((logits - max) / T) exceeds u times the total, and the argmax at
  T = 0. The weight rearrangements (gate order, transposes, summed biases) are folded into
  initializers of the nn.LSTM's total size; `_share_initializers` merges any identical
  constants folded per step.

The exporter drops graph inputs that nothing reads (humanize never reads its hit noise, a
mean-head or categorical model its Gaussian noise), but the runtime feeds every input its spec
names: the graph's inputs and outputs are therefore rewritten to be exactly the spec's, in its
order, with its shapes (batch dynamic). An input nothing reads is legal ONNX and costs nothing.
"""
from __future__ import annotations

import hashlib
import io
import warnings

import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from groove_live.spec import ModelSpec

OPSET = 17
# Trace with more than one pattern: an LSTM traced at batch 1 can bake that size into the graph.
TRACE_BATCH = 2


class _Sample(torch.nn.Module):
    """model.<method> (sample unless told) with the graph's inputs as positional arguments."""

    def __init__(self, model, method: str = "sample") -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, *inputs):
        return getattr(self.model, self.method)(*inputs)


def _declare(spec: ModelSpec, part: str) -> list[onnx.ValueInfoProto]:
    return [helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                          ["batch" if d is None else d for d in dims])
            for name, dims in spec.io_shapes()[part].items()]


def _share_initializers(graph: onnx.GraphProto) -> int:
    """Merge byte-identical initializers into one (the first), renaming their uses; returns
    how many were dropped. Constant folding of an unrolled loop can write the same folded
    weight once per step."""
    first: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    kept = []
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        key = (array.dtype.str, array.shape, hashlib.sha256(array.tobytes()).hexdigest())
        if key in first:
            rename[init.name] = first[key]
        else:
            first[key] = init.name
            kept.append(init)
    if not rename:
        return 0
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    return len(rename)


def build_traced_decoder(model, spec: ModelSpec, graph_name: str,
                         method: str = "sample") -> onnx.ModelProto:
    """model: a torch model in eval mode whose `method` (default `sample`) takes the spec's
    decoder inputs (then its controls) positionally and returns the spec's decoder outputs
    (hits, velocities, offsets; a pitched model's rolls). Inputs/outputs named, ordered and
    shaped as in `spec`."""
    shapes = spec.io_shapes(TRACE_BATCH)
    inputs, outputs = list(shapes["decoder_inputs"]), list(shapes["decoder_outputs"])
    generator = torch.Generator().manual_seed(0)
    example = tuple(torch.rand(dims, generator=generator)
                    for dims in shapes["decoder_inputs"].values())
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and RNN notes
        torch.onnx.export(_Sample(model, method).eval(), example, buffer, dynamo=False,
                          opset_version=OPSET, input_names=inputs, output_names=outputs,
                          dynamic_axes={name: {0: "batch"} for name in inputs + outputs})
    graph_model = onnx.load_from_string(buffer.getvalue())
    graph = graph_model.graph
    kept = {i.name for i in graph.input}
    unknown = kept - set(inputs)
    if unknown:  # a weight exported as an input would be fed by nobody: a bug, not the user's
        raise ValueError(f"the exported decoder has inputs the spec does not name: "
                         f"{', '.join(sorted(unknown))}")
    del graph.input[:]
    graph.input.extend(_declare(spec, "decoder_inputs"))
    del graph.output[:]
    graph.output.extend(_declare(spec, "decoder_outputs"))
    _share_initializers(graph)
    graph.name = graph_name
    graph_model.producer_name = "groove-live export"
    onnx.checker.check_model(graph_model, full_check=True)
    return graph_model
