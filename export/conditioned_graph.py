"""A task model's decoder (spec kind "conditioned") as ONNX, through torch's TorchScript exporter.

Unlike GrooVAE's free-running decoder there is no step loop to hand-build: the decoder is a
bidirectional LSTM over the whole phrase plus a few element-wise ops (train/conditioned.py,
`ConditionedVAE.sample`), which the legacy exporter writes as one LSTM node and a handful of
others. The graph returns the finished pattern, the task's rules included (humanize keeps the
input's hits, infill every voice but the hi-hats), so every consumer gets the same result.

The exporter drops graph inputs that nothing reads (humanize never reads its hit noise, a
mean-head model its Gaussian noise), but the runtime feeds every input its spec names: the
graph's inputs and outputs are therefore rewritten to be exactly the spec's, in its order,
with its shapes (batch dynamic). An input nothing reads is legal ONNX and costs nothing.
"""
from __future__ import annotations

import io
import warnings

import onnx
import torch
from onnx import TensorProto, helper

from groove_live.spec import ModelSpec

OPSET = 17
# Trace with more than one pattern: an LSTM traced at batch 1 can bake that size into the graph.
TRACE_BATCH = 2


class _Sample(torch.nn.Module):
    """ConditionedVAE.sample with the graph's inputs as positional arguments."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, z, temperature, hit_noise, cont_noise, control):
        return self.model.sample(z, temperature, hit_noise, cont_noise, control)


def _declare(spec: ModelSpec, part: str) -> list[onnx.ValueInfoProto]:
    return [helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                          ["batch" if d is None else d for d in dims])
            for name, dims in spec.io_shapes()[part].items()]


def build_conditioned_decoder(model, spec: ModelSpec) -> onnx.ModelProto:
    """model: a train.conditioned.ConditionedVAE in eval mode. Inputs/outputs named as in
    `spec` (the decoder inputs, then the task's control)."""
    shapes = spec.io_shapes(TRACE_BATCH)
    inputs, outputs = list(shapes["decoder_inputs"]), list(shapes["decoder_outputs"])
    generator = torch.Generator().manual_seed(0)
    example = tuple(torch.rand(dims, generator=generator)
                    for dims in shapes["decoder_inputs"].values())
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and RNN notes
        torch.onnx.export(_Sample(model).eval(), example, buffer, dynamo=False,
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
    graph.name = f"{spec.task}_decoder"
    graph_model.producer_name = "groove-live export"
    onnx.checker.check_model(graph_model, full_check=True)
    return graph_model
