"""`groove-export`: turn a training run into the runtime's ONNX model (thin click commands)."""
from __future__ import annotations

from typing import NoReturn

import click

from groove_live.cli_errors import fail

from ..train.which import which_option


def _fail(message: str) -> NoReturn:
    fail("groove-export", message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Export trained GrooVAE runs (sampling and task models) for the groove-live runtime."""


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(),
              help="Run folder written by `groove-train fit`.")
@click.option("--out", "out_path", default=None, type=click.Path(),
              help="Decoder file to write (NAME.onnx); the encoder goes beside it as "
                   "NAME.encoder.onnx. Default: in the run folder, RUN/MODEL.VARIANT.onnx.")
@which_option
@click.option("--variant", default="fp32", show_default=True,
              type=click.Choice(["fp32", "fp16", "int8"]),
              help="Decoder weights: fp32, or int8 (checked against fp32 within a stated "
                   "tolerance, timed against it; sampling GrooVAE models only).")
def onnx(run_dir, out_path, which, variant):
    """Export, verify against torch, and write the decoder + encoder ONNX files (the
    decoder alone for a chorale harmonizer, which has no encoder)."""
    if variant == "fp16":
        _fail("fp16 is not offered: on CPU onnxruntime it measured ~1.5x slower than fp32 "
              "(no fp16 maths on AVX2); use fp32 or int8")
    from .onnx_export import ExportError, export_run
    from .verify import VerificationError

    def log(message: str) -> None:
        click.echo(f"groove-export: {message}", err=True)

    try:
        result = export_run(run_dir, out_path, which=which, variant=variant, log=log)
    except (ExportError, VerificationError) as e:
        _fail(str(e))
    click.echo(str(result.decoder_path))  # stdout: the path alone, for scripts


@main.command()
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False),
              help="An exported sampling GrooVAE decoder (NAME.onnx, its encoder beside it).")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False),
              help="A `groove-train prepare` cache with windows of the model's bars "
                   "(its train split is encoded).")
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False),
              help="Decoder file to write (its encoder is copied beside it as "
                   "NAME.encoder.onnx). Default: --model itself, replaced atomically.")
@click.option("--min-windows", default=64, show_default=True, type=click.IntRange(min=1),
              help="Training windows a style needs to get a vector.")
def attributes(model_path, data_dir, out_path, min_windows):
    """Add latent attribute vectors (styles, density, syncopation, fill) to a model, for
    `groove-live sample --style/--density/...` and /groove/style etc. Torch-free."""
    from .attributes import AttributesExportError, add_attributes

    def log(message: str) -> None:
        click.echo(f"groove-export: {message}", err=True)

    try:
        path, _ = add_attributes(model_path, data_dir, out_path, min_windows=min_windows,
                                 log=log)
    except AttributesExportError as e:
        _fail(str(e))
    click.echo(str(path))


@main.command("fp16-weights")
@click.argument("model_paths", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--max-change", default=None, type=click.FloatRange(min=0.0),
              help="Largest |output change| accepted on the check inputs "
                   "(default: export/fp16_weights.py's MAX_OUTPUT_CHANGE).")
def fp16_weights(model_paths, max_change):
    """Store each ONNX file's large weights as float16 (about half the file), computed in
    float32 as before; rewritten in place, atomically, only if no output moves more than
    --max-change on random inputs of its shapes. Meant for encoders: a decoder that draws
    hits flips some of them. Torch-free."""
    from .fp16_weights import MAX_OUTPUT_CHANGE, Fp16Error, compact_file

    for path in model_paths:
        try:
            r = compact_file(path, max_output_change=MAX_OUTPUT_CHANGE if max_change is None
                             else max_change)
        except Fp16Error as e:
            _fail(str(e))
        click.echo(f"{path}: {r.converted} weights as float16 ({r.kept_fp32} kept float32), "
                   f"{r.bytes_before / 1e6:.2f} -> {r.bytes_after / 1e6:.2f} MB, outputs moved "
                   f"by at most {r.max_output_change:.2g}")


if __name__ == "__main__":
    main()
