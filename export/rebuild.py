"""An exported GrooVAE (NAME.onnx + NAME.encoder.onnx) -> a torch run folder, the export undone.

For a shipped model whose run folder is gone: `groove-train evaluate-musicvae` (teacher-forced
accuracy) needs the torch model, and the ONNX pair holds everything it is built from. The spec
is the files' metadata; the network sizes are read off the weights' shapes and the rest of the
config (dropout, free bits, beta, the train config: unused when evaluating) is the spec's preset.
The weights invert export/decoder_graph.py's `build_decoder` and torch's LSTM export of the
encoder step by step (gate orders, the folded offset shift, the doubled offset head). An int8
decoder's quantized LSTM weights come back dequantized (int8 x per-column scale) as fp32, so the
rebuilt model computes with the shipped int8 weights, not with the fp32 ones they came from
(those are not in the file). Layer 0's two biases were summed by the export; the sum goes to
bias_ih_l0 and bias_hh_l0 is zero, which torch computes the same.

The result is checked (`check_rebuild`): the rebuilt model exported again must give the shipped
decoder's initializers back (int8 weights and scales identically), and its decodes must match
onnxruntime's on the same z and noise (export/verify.py's own checks): an fp32 file's exactly
(same hits); for an int8 file, whose LSTM op also quantizes its activations on the fly, torch
must match an fp32 graph of the same weights, and that graph the shipped file within export's
own int8 tolerance; the torch-vs-int8 agreement is recorded, not gated.
"""
from __future__ import annotations

import dataclasses
import math
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from groove_live.engine import Engine, encoder_path_for
from groove_live.spec import ENCODER_KEY, METADATA_KEY, VARIANT_KEY, ModelSpec

from ..train.config import ModelConfig, PresetError, TrainConfig, get_preset
from ..train.model import GrooVAE
from ..train.run import model_header, save_checkpoint_atomic, save_run_config, write_json_atomic
from .decoder_graph import build_decoder
from .fp16_weights import initializer_arrays
from .verify import compare_variant, verify_against_torch

TORCH_GATES = "ifgo"  # nn.LSTM's gate blocks along the weight's first axis
ONNX_GATES = "iofg"  # the ONNX LSTM op's (torch's encoder export and decoder layers 1+)
LAYER0_GATES = "ifog"  # build_decoder's hand-written layer 0 (sigmoid gates first)
# A re-export's fp32 initializers against the shipped ones: only float rounding of undoing and
# redoing the folds (x - 0.5 y + 0.5 y, 2 x / 2) may differ.
ROUND_TRIP_TOLERANCE = 1e-5


class RebuildError(ValueError):
    """A file that is not an exported sampling GrooVAE this can invert (one clear line)."""


def _ungates(w: np.ndarray, order: str) -> np.ndarray:
    """Gate blocks stored in `order` along axis 0 -> torch's i, f, g, o (undoes _gates)."""
    blocks = dict(zip(order, np.split(w, 4, axis=0)))
    return np.concatenate([blocks[k] for k in TORCH_GATES], axis=0)


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return initializer_arrays(model)  # an encoder may store its weights as float16


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _dequantized(w: dict[str, np.ndarray], name: str) -> np.ndarray:
    """A decoder LSTM matrix as build_decoder stored it, (1, K, 4H) int8 + scales or (1, 4H, K)
    fp32 -> (4H, K) fp32 in the ONNX gate order."""
    if w[name].dtype == np.int8:  # symmetric, zero point 0: q * scale per output column
        if np.any(w[name + "_zero"]):
            raise RebuildError(f"{name}: a non-zero int8 zero point, which export never writes")
        return (w[name][0].astype(np.float32) * w[name + "_scale"][0][None, :]).T
    return w[name][0].astype(np.float32)


def _decoder_state(w: dict[str, np.ndarray], c: int, gaussian: bool) -> dict[str, np.ndarray]:
    """build_decoder's initializers -> the torch Decoder's state dict (arrays)."""
    four_h = w["w_z0"].shape[1]
    h = four_h // 4
    layers = 1 + sum(re.fullmatch(r"W\d+", k) is not None for k in w)
    state = {"init.weight": w["init_w"].T, "init.bias": w["init_b"]}
    # Layer 0: w_xh0 is [x | h] x gates (ifog), w_z0 z x gates; the offset shift folded into the
    # hit columns (hit -= 0.5 offset) is added back.
    w_xh = w["w_xh0"].T  # (4H, 3C + H)
    w_ih0 = np.concatenate([_ungates(w_xh[:, :3 * c], LAYER0_GATES),
                            _ungates(w["w_z0"].T, LAYER0_GATES)], axis=1)
    w_ih0[:, :c] += 0.5 * w_ih0[:, 2 * c:3 * c]
    state["rnn.weight_ih_l0"] = w_ih0
    state["rnn.weight_hh_l0"] = _ungates(w_xh[:, 3 * c:], LAYER0_GATES)
    state["rnn.bias_ih_l0"] = _ungates(w["b0"][:, None], LAYER0_GATES)[:, 0]
    state["rnn.bias_hh_l0"] = np.zeros(four_h, np.float32)
    for i in range(1, layers):
        state[f"rnn.weight_ih_l{i}"] = _ungates(_dequantized(w, f"W{i}"), ONNX_GATES)
        state[f"rnn.weight_hh_l{i}"] = _ungates(_dequantized(w, f"R{i}"), ONNX_GATES)
        b_ih, b_hh = np.split(w[f"B{i}"][0], 2)
        state[f"rnn.bias_ih_l{i}"] = _ungates(b_ih[:, None], ONNX_GATES)[:, 0]
        state[f"rnn.bias_hh_l{i}"] = _ungates(b_hh[:, None], ONNX_GATES)[:, 0]
    # The head: offset columns were doubled (0.5 tanh(b) + 0.5 = sigmoid(2b)).
    w_out, b_out = w["w_out"].T.copy(), w["b_out"].copy()  # (kC, H), (kC,)
    w_out[2 * c:3 * c] /= 2.0
    b_out[2 * c:3 * c] /= 2.0
    if w_out.shape[0] != (5 if gaussian else 3) * c or w_out.shape[1] != h:
        raise RebuildError(f"the decoder's head is {w_out.shape}, not that of a "
                           f"{'gaussian' if gaussian else 'mean'}-head GrooVAE of {c} voices")
    state["out.weight"], state["out.bias"] = w_out, b_out
    return state


def _encoder_state(encoder: onnx.ModelProto) -> tuple[dict[str, np.ndarray], int, int]:
    """torch.onnx's export of the encoder (one bidirectional ONNX LSTM node per layer, gates
    i, o, f, c; B = [b_ih, b_hh]; direction 0 forward, 1 reverse) -> (state dict, hidden,
    layers)."""
    w = _initializers(encoder)
    lstms = [n for n in encoder.graph.node if n.op_type == "LSTM"]
    if not lstms:
        raise RebuildError("the encoder graph has no LSTM node")
    state: dict[str, np.ndarray] = {}
    hidden = 0
    for layer, node in enumerate(lstms):
        W, R, B = (w[name] for name in node.input[1:4])  # (2, 4H, K), (2, 4H, H), (2, 8H)
        hidden = R.shape[2]
        for d, suffix in enumerate(("", "_reverse")):
            b_ih, b_hh = np.split(B[d], 2)
            state[f"rnn.weight_ih_l{layer}{suffix}"] = _ungates(W[d], ONNX_GATES)
            state[f"rnn.weight_hh_l{layer}{suffix}"] = _ungates(R[d], ONNX_GATES)
            state[f"rnn.bias_ih_l{layer}{suffix}"] = _ungates(b_ih[:, None], ONNX_GATES)[:, 0]
            state[f"rnn.bias_hh_l{layer}{suffix}"] = _ungates(b_hh[:, None], ONNX_GATES)[:, 0]
    for head in ("mu", "sigma"):  # torch's parameter names survive as initializer names
        state[f"{head}.weight"], state[f"{head}.bias"] = w[f"{head}.weight"], w[f"{head}.bias"]
    return state, hidden, len(lstms)


@dataclass
class Rebuilt:
    model: GrooVAE
    config: ModelConfig
    train: TrainConfig
    spec: ModelSpec
    variant: str  # of the decoder file the weights came from
    step: int  # the training step in the spec's run id, 0 if it names none


def model_from_onnx(decoder_path: str | Path) -> Rebuilt:
    """The torch GrooVAE (eval mode) an exported decoder and its encoder were made from."""
    decoder_path = Path(decoder_path)
    try:
        decoder = onnx.load(str(decoder_path))
        meta = _metadata(decoder)
        spec = ModelSpec.from_json(meta[METADATA_KEY])
        encoder_path = decoder_path.parent / meta.get(ENCODER_KEY, "")
        encoder = onnx.load(str(encoder_path if meta.get(ENCODER_KEY)
                                else encoder_path_for(decoder_path)))
    except (OSError, KeyError, ValueError) as e:
        raise RebuildError(f"{decoder_path}: not an exported groove-live model ({e})") from None
    if spec.kind != "groovae":
        raise RebuildError(f"{decoder_path}: a {spec.kind!r} model; only sampling GrooVAE "
                           f"decoders (the hand-built Scan graph) can be inverted")
    try:
        dec_state = _decoder_state(_initializers(decoder), spec.n_drums,
                                   spec.continuous_head == "gaussian")
        enc_state, enc_hidden, enc_layers = _encoder_state(encoder)
    except KeyError as e:  # another graph than build_decoder's or torch's encoder export
        raise RebuildError(f"{decoder_path}: not an export this can invert (no initializer "
                           f"{e})") from None
    h = dec_state["rnn.weight_hh_l0"].shape[1]
    layers = sum(k.startswith("rnn.weight_ih_l") for k in dec_state)
    try:  # what the weights cannot say (dropout, free bits, the train config) is the preset's
        preset = get_preset(spec.preset)
        base, train = preset.model, preset.train
    except PresetError:
        base, train = ModelConfig(), TrainConfig()
    config = dataclasses.replace(base, enc_rnn_sizes=(enc_hidden,) * enc_layers,
                                 dec_rnn_sizes=(h,) * layers, z_size=spec.z_size,
                                 continuous_head=spec.continuous_head)
    model = GrooVAE(config, spec)
    state = {**{f"decoder.{k}": v for k, v in dec_state.items()},
             **{f"encoder.{k}": v for k, v in enc_state.items()}}
    try:
        model.load_state_dict({k: torch.from_numpy(np.array(v, np.float32))
                               for k, v in state.items()})
    except RuntimeError as e:
        raise RebuildError(f"{decoder_path}: its weights do not fit a GrooVAE of config "
                           f"{config} ({str(e).splitlines()[-1].strip()})") from None
    step = re.search(r"@step(\d+)$", spec.run_id or "")
    return Rebuilt(model.eval(), config, train, spec, meta.get(VARIANT_KEY, "fp32"),
                   int(step.group(1)) if step else 0)


def _round_trip(rebuilt: Rebuilt, shipped: onnx.ModelProto) -> dict:
    """The rebuilt decoder exported again as the shipped variant, initializer by initializer:
    int8 weights and scales must come back identically, fp32 ones within rounding."""
    again = _initializers(build_decoder(rebuilt.model.decoder, rebuilt.spec, rebuilt.variant))
    want = _initializers(shipped)
    if set(again) != set(want):
        raise RebuildError(f"the re-export's initializers differ: {sorted(set(again) ^ set(want))}")
    int8_differ, float_max = 0, 0.0
    for name, a in again.items():
        if a.dtype == np.int8:
            int8_differ += int((a != want[name]).sum())
        elif a.dtype == np.float32:
            float_max = max(float_max, float(np.abs(a - want[name]).max(initial=0.0)))
        elif not np.array_equal(a, want[name]):
            raise RebuildError(f"the re-export's {name} differs from the shipped one")
    report = {"int8_weights_differing": int8_differ, "float_initializers_max_abs": float_max}
    if int8_differ or not float_max <= ROUND_TRIP_TOLERANCE:
        raise RebuildError(f"the rebuilt decoder does not export back to the shipped one: "
                           f"{int8_differ} int8 weights differ, fp32 initializers by up to "
                           f"{float_max:.2e} (tolerance {ROUND_TRIP_TOLERANCE:g})")
    return report


def check_rebuild(rebuilt: Rebuilt, decoder_path: str | Path) -> dict:
    """Raises RebuildError or verify.VerificationError unless the rebuilt model is the shipped
    one. The checks, all on the same z and noise:
    - round trip: re-exported as the shipped variant, the initializers come back;
    - torch vs onnxruntime: the rebuilt model against an fp32 graph of its own weights (with the
      shipped encoder), verify_against_torch: identical hits, values and mu/sigma within 1e-4;
    - an int8 file computes with activations quantized on the fly (DynamicQuantizeLSTM), which
      torch does not model: it is compared with that fp32 graph by export's own int8 gate
      (compare_variant), and the torch-vs-int8 hit agreement on the same inputs is recorded.
    """
    decoder_path = Path(decoder_path)
    shipped = onnx.load(str(decoder_path))
    report = {"round_trip": _round_trip(rebuilt, shipped)}
    shipped_engine = Engine.load(decoder_path)
    if rebuilt.variant == "fp32":
        report["torch_vs_shipped"] = verify_against_torch(shipped_engine, rebuilt.model)
        return report
    with tempfile.TemporaryDirectory(prefix="rebuild-check-") as tmp:
        fp32 = build_decoder(rebuilt.model.decoder, rebuilt.spec, "fp32")
        meta = {**_metadata(shipped), VARIANT_KEY: "fp32"}
        onnx.helper.set_model_props(fp32, meta)
        path = Path(tmp) / decoder_path.name
        onnx.save(fp32, str(path))
        shutil.copy(shipped_engine.encoder_path, Path(tmp) / meta[ENCODER_KEY])
        fp32_engine = Engine.load(path)
        report["torch_vs_fp32_graph"] = verify_against_torch(fp32_engine, rebuilt.model)
        report["shipped_vs_fp32_graph"] = compare_variant(fp32_engine, shipped_engine)
    report["torch_vs_shipped"] = _agreement(shipped_engine, rebuilt.model)
    return report


def _agreement(engine: Engine, model: GrooVAE, n: int = 256, seed: int = 2) -> dict:
    """Torch and a (quantized) graph decoding the same z and noise at T = 0 and 1: the share
    of hit cells and of whole patterns that agree, and velocity/offset gaps on shared hits."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, engine.spec.z_size)).astype(np.float32)
    hit_noise, cont_noise = engine.noise(n, rng)
    report = {}
    for t in (0.0, 1.0):
        got = engine.decode_noise(z, t, hit_noise, cont_noise * np.float32(t))
        with torch.no_grad():
            want = [a.numpy() for a in model.decoder.sample(
                torch.from_numpy(z), t, greedy=t == 0, hit_noise=torch.from_numpy(hit_noise),
                cont_noise=torch.from_numpy(cont_noise))]
        both = (got.hits > 0) & (want[0] > 0)
        report[f"T{t:g}"] = {
            "patterns": n, "hit_agreement": float((got.hits == want[0]).mean()),
            "identical_hit_patterns": float((got.hits == want[0]).all(axis=(1, 2)).mean()),
            "velocity_mae_on_shared_hits": float(np.abs(got.velocities - want[1])[both].mean()),
            "offset_mae_on_shared_hits": float(np.abs(got.offsets - want[2])[both].mean())}
    return report


def rebuild_run(decoder_path: str | Path, run_dir: str | Path, check: bool = True) -> dict:
    """Write RUN/config.json, spec.json, best.pt (plain data: weights_only loads it) and
    rebuild.json (where it came from, and the checks) from an exported GrooVAE pair."""
    decoder_path, run_dir = Path(decoder_path), Path(run_dir)
    if (run_dir / "config.json").exists() and not (run_dir / "rebuild.json").exists():
        # a trained run's weights are not ours to replace; an earlier rebuild's are
        raise RebuildError(f"{run_dir}: holds a training run; rebuild into a new folder")
    rebuilt = model_from_onnx(decoder_path)
    checks = check_rebuild(rebuilt, decoder_path) if check else {}
    note = ("weights rebuilt from an ONNX export" + (
        f"; the {rebuilt.variant} decoder's LSTM layers above the first are its int8 weights "
        f"dequantized (int8 x scale) to fp32: numbers from this run are of the shipped "
        f"{rebuilt.variant} weights, not of the fp32 model they were quantized from"
        if rebuilt.variant != "fp32" else ""))
    save_run_config(run_dir, rebuilt.spec.preset, rebuilt.config, rebuilt.train, rebuilt.spec,
                    data="")
    save_checkpoint_atomic(run_dir / "best.pt", {
        "model": rebuilt.model.state_dict(), "step": rebuilt.step, "val": None,
        **model_header(rebuilt.config, rebuilt.spec), "rebuilt_from": decoder_path.name,
        "note": note})
    record = {"source": decoder_path.name, "source_run_id": rebuilt.spec.run_id,
              "variant": rebuilt.variant, "note": note, "step": rebuilt.step,
              "checks": _json_safe(checks)}
    write_json_atomic(run_dir / "rebuild.json", record)
    return record


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

