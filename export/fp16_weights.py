"""Store an ONNX model's large weights as float16 on disk; compute in float32 as before.

The bundled models share a package-data budget (all of them together within 20 MB), and an
encoder is almost all weights: a bidirectional LSTM run once per pattern a user hands in
(interpolate, library loads, the task models' inputs), never per bar. Each float32 initializer
of at least MIN_ELEMENTS values becomes its float16 rounding plus a Cast back to float32 at
the head of the graph, which halves the file. onnxruntime folds those Casts into constants when
it opens the session, so inference runs in float32 on weights rounded to 11 significant bits
(relative error at most 2^-11, about 0.05 %), at no cost per call. `check_outputs` measures
what that does to the model's outputs on inputs of its spec's shapes, and `compact_file`
refuses to write a file whose outputs moved more than a stated tolerance.

Weights beyond float16's range (65504) would become infinite; such a tensor stays float32
(counted in the result).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from groove_live.atomic_io import atomic_path

MIN_ELEMENTS = 1024  # smaller tensors (biases, scales) are not worth a node each
FP16_SUFFIX = "__fp16"
FP16_MAX = float(np.finfo(np.float16).max)
MAX_OUTPUT_CHANGE = 1e-2  # largest |output change| compact_file accepts on its check inputs
CHECK_BATCH = 16


class Fp16Error(Exception):
    """A file that cannot be compacted (unreadable, or its outputs moved too far)."""


@dataclass(frozen=True)
class Compacted:
    converted: int  # initializers now stored as float16
    kept_fp32: int  # large ones left float32 (out of float16's range)
    bytes_before: int
    bytes_after: int
    max_output_change: float  # max |float16-stored - float32| over every output checked


def _fits_fp16(array: np.ndarray) -> bool:
    """No weight overflows float16. Tiny ones turn subnormal or zero: their share of a sum is
    below the rounding of its large terms, and check_outputs measures the whole effect."""
    return array.size == 0 or float(np.max(np.abs(array))) <= FP16_MAX


def store_weights_fp16(model: onnx.ModelProto,
                       min_elements: int = MIN_ELEMENTS) -> tuple[onnx.ModelProto, int, int]:
    """(a copy of model with its large float32 initializers stored as float16 behind a Cast,
    how many were converted, how many large ones stayed float32)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    kept, casts, converted, kept_fp32 = [], [], 0, 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            kept.append(init)
            continue
        array = numpy_helper.to_array(init)
        if not _fits_fp16(array):
            kept.append(init)
            kept_fp32 += 1
            continue
        stored = numpy_helper.from_array(array.astype(np.float16), init.name + FP16_SUFFIX)
        kept.append(stored)
        casts.append(helper.make_node("Cast", [stored.name], [init.name], to=TensorProto.FLOAT,
                                      name=f"fp16_weight_{converted}"))
        converted += 1
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)  # the Casts first: the graph stays topologically sorted
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(out, full_check=True)
    return out, converted, kept_fp32


def initializer_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every initializer by the name the graph computes with: a float16-stored weight under its
    float32 name, as float32 (what the Cast in front of it gives)."""
    arrays = {}
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if init.name.endswith(FP16_SUFFIX) and array.dtype == np.float16:
            arrays[init.name[:-len(FP16_SUFFIX)]] = array.astype(np.float32)
        else:
            arrays[init.name] = array
    return arrays


def _check_inputs(session, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs of the session's declared shapes (batch CHECK_BATCH for a dynamic axis): values
    in [0, 1), which covers every groove-live input (hits, velocities, offsets scaled, noise,
    temperatures, melody rolls)."""
    feeds = {}
    for node in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else CHECK_BATCH for d in node.shape]
        feeds[node.name] = rng.random(shape, dtype=np.float32)
    return feeds


def check_outputs(before: onnx.ModelProto, after: onnx.ModelProto, seed: int = 0) -> float:
    """max |after - before| over every float output, on the same random inputs."""
    from groove_live.ort import ort  # onnxruntime with its telemetry off

    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                for m in (before, after)]
    feeds = _check_inputs(sessions[0], np.random.default_rng(seed))
    worst = 0.0
    for a, b in zip(*(s.run(None, feeds) for s in sessions)):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind == "f":
            worst = max(worst, float(np.max(np.abs(a - b))) if a.size else 0.0)
    return worst


def compact_file(path: str | Path, out_path: str | Path | None = None,
                 max_output_change: float = MAX_OUTPUT_CHANGE) -> Compacted:
    """Rewrite `path` (or write `out_path`) with float16-stored weights, after checking that
    no output moves more than max_output_change. Atomic: a failure leaves no partial file."""
    path = Path(path)
    try:
        bytes_before = path.stat().st_size
        model = onnx.load(str(path))
    except Exception as e:  # onnx raises several types for a corrupt or foreign file
        raise Fp16Error(f"{path}: not a readable ONNX model ({e})") from None
    compacted, converted, kept_fp32 = store_weights_fp16(model)
    change = check_outputs(model, compacted)
    if change > max_output_change:
        raise Fp16Error(f"{path}: float16 weights move an output by {change:.3g} "
                        f"(> {max_output_change:g}); left as it is")
    target = Path(out_path) if out_path is not None else path
    with atomic_path(target) as tmp:
        onnx.save(compacted, str(tmp))
    return Compacted(converted, kept_fp32, bytes_before, target.stat().st_size, change)
