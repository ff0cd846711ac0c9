"""`groove-train`: prepare GMD windows, fit GrooVAE, evaluate a run (thin click commands)."""
from __future__ import annotations

from typing import NoReturn

import click

from groove_live.cli_errors import fail

from .config import PRESETS
from .which import which_option


def _fail(message: str) -> NoReturn:
    fail("groove-train", message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Train GrooVAE drum models on the Groove MIDI Dataset."""


@main.command()
@click.option("--data", "data_dir", required=True, type=click.Path(),
              help="Groove MIDI Dataset folder (with info.csv).")
@click.option("--out", "out_dir", default="data_cache/gmd_4bar", show_default=True,
              type=click.Path(), help="Where the per-split window files go.")
@click.option("--meter", "meters", multiple=True, default=("4-4",), show_default=True,
              help="Time signatures to keep (repeat), as in info.csv, e.g. 4-4.")
@click.option("--beat-type", "beat_types", multiple=True, default=("beat", "fill"),
              show_default=True, type=click.Choice(["beat", "fill"]))
@click.option("--bars", default=4, show_default=True, help="Bars per window.")
@click.option("--hop-bars", default=1, show_default=True, help="Bars between window starts.")
@click.option("--force", is_flag=True, help="Rebuild even when the cache matches.")
def prepare(data_dir, out_dir, meters, beat_types, bars, hop_bars, force):
    """Convert GMD MIDI files into cached window tensors, one file per split."""
    from .data import DataError, PrepareOptions, prepare as run_prepare

    options = PrepareOptions(meters=tuple(meters), beat_types=tuple(beat_types), bars=bars,
                             hop_bars=hop_bars)
    try:
        summary = run_prepare(data_dir, out_dir, options, force=force)
    except DataError as e:
        _fail(str(e))
    where = "reused cache in" if summary.cached else f"wrote in {summary.seconds:.1f} s to"
    click.echo(summary.format())
    click.echo(f"{where} {out_dir}")


@main.command("prepare-chorales")
@click.option("--data", "json_path", required=True, type=click.Path(),
              help="The JSB chorales JSON (Jsb16thSeparated.json: train/valid/test chorales, "
                   "each a list of 16th steps of [soprano, alto, tenor, bass] MIDI pitches).")
@click.option("--out", "out_dir", default="data_cache/jsb_2bar", show_default=True,
              type=click.Path())
@click.option("--hop-steps", default=16, show_default=True, type=click.IntRange(min=1),
              help="16th steps between window starts.")
@click.option("--no-transpose", is_flag=True,
              help="Do not add transposed copies of the training windows.")
@click.option("--force", is_flag=True, help="Rebuild even when the cache matches.")
def prepare_chorales(json_path, out_dir, hop_steps, no_transpose, force):
    """Cut the JSB chorales into 2-bar SATB windows for the harmonizer, one file per split."""
    from .chorale_data import ChoraleOptions, prepare_chorales as run_prepare
    from .data import DataError

    options = ChoraleOptions(hop_steps=hop_steps, transpose=not no_transpose)
    try:
        summary = run_prepare(json_path, out_dir, options, force=force)
    except DataError as e:
        _fail(str(e))
    click.echo(summary.format())
    where = "reused cache in" if summary.cached else f"wrote in {summary.seconds:.1f} s to"
    click.echo(f"{where} {out_dir}")


@main.command()
@click.option("--data", "data_dir", type=click.Path(),
              help="Prepared dataset folder (from `groove-train prepare`).")
@click.option("--run", "--run-dir", "run_dir", required=True, type=click.Path(),
              help="Run folder to write (say --run-dir under torchrun, whose own "
                   "--run-path option swallows --run).")
@click.option("--preset", default="groovae_4bar_small", show_default=True,
              type=click.Choice(sorted(PRESETS)))
@click.option("--head", type=click.Choice(["mean", "gaussian"]),
              help="Velocity/offset head (default: the preset's, 'mean' as in Magenta).")
@click.option("--max-steps", type=int, help="Stop after this many steps.")
@click.option("--max-minutes", type=float, help="Stop after this much training time.")
@click.option("--batch-size", type=int)
@click.option("--lr", "learning_rate", type=float)
@click.option("--dropout", type=float)
@click.option("--eval-every", type=int)
@click.option("--checkpoint-every", type=int)
@click.option("--log-every", type=int, help="Steps between metrics.csv rows.")
@click.option("--keep-last", type=int)
@click.option("--seed", type=int)
@click.option("--resume", is_flag=True,
              help="Continue the run from its newest checkpoint that loads (newer ones that "
                   "do not are named and set aside).")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--threads", default=0, help="torch intra-op threads (0 = torch's default).")
@click.option("--no-progress", is_flag=True)
def fit(data_dir, run_dir, preset, head, max_steps, max_minutes, batch_size, learning_rate,
        dropout, eval_every, checkpoint_every, log_every, keep_last, seed, resume, device, threads,
        no_progress):
    """Train a GrooVAE; SIGINT/SIGTERM checkpoint before leaving, --resume continues exactly."""
    from groove_live.spec import SpecError

    from .config import PresetError
    from .data import DataError
    from .fit import fit as run_fit
    from .model import ModelKindError
    from .run import RunError

    model_over = {k: v for k, v in {"continuous_head": head, "dropout": dropout}.items()
                  if v is not None}
    train_over = {k: v for k, v in {
        "max_steps": max_steps, "max_minutes": max_minutes, "batch_size": batch_size,
        "learning_rate": learning_rate, "eval_every": eval_every,
        "checkpoint_every": checkpoint_every, "log_every": log_every, "keep_last": keep_last,
        "seed": seed}.items()
        if v is not None}
    if resume and model_over:
        _fail("--head/--dropout cannot change on --resume (the weights fix the model)")
    try:
        run_fit(run_dir, data_dir, preset, model_over, train_over, resume=resume, device=device,
                threads=threads, progress=not no_progress)
    # What a user can fix, named one by one: a bare ValueError here would hide bugs.
    except (DataError, RunError, PresetError, ModelKindError, SpecError, FileExistsError,
            FileNotFoundError) as e:
        _fail(str(e))


@main.command()
@click.option("--run", "run_dir", type=click.Path(), help="Run folder: score its torch weights.")
@click.option("--model", "model_path", type=click.Path(),
              help="Or an exported ONNX model: score it with the runtime engine (free-running "
                   "only); needs --data.")
@click.option("--out", "out_dir", type=click.Path(),
              help="With --model: folder for evaluation_<split>.json/.md.")
@click.option("--data", "data_dir", type=click.Path(),
              help="Prepared dataset folder (default: the one the run trained on).")
@click.option("--split", default="test", show_default=True,
              type=click.Choice(["train", "validation", "test"]))
@click.option("--samples", "n_samples", default=1024, show_default=True,
              help="Prior samples compared with the split.")
@click.option("--temperature", default=1.0, show_default=True)
@click.option("--plot", is_flag=True, help="Write piano-roll PNGs into the run folder.")
@click.option("--plot-count", "n_plot", default=4, show_default=True)
@which_option
@click.option("--seed", default=0, show_default=True, help="Seed of the prior samples.")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--threads", default=0, help="torch intra-op threads (0 = torch's default).")
def evaluate(run_dir, model_path, out_dir, data_dir, split, n_samples, temperature, plot, n_plot,
             which, seed, device, threads):
    """Reconstruction and sample metrics of a run (or an exported model) on a split: JSON + a
    readable table."""
    import torch

    from groove_live.engine import EngineError
    from groove_live.plot import PlotUnavailable

    from .data import DataError
    from .evaluate import evaluate_model_file, evaluate_run
    from .run import RunError, load_run_config

    if (run_dir is None) == (model_path is None):
        _fail("say which to evaluate: --run RUN_DIR or --model FILE.onnx (one of them)")
    if model_path is not None and (data_dir is None or plot):
        _fail("--model needs --data (an exported model does not know its dataset folder) "
              "and does not --plot")
    if threads:
        torch.set_num_threads(threads)
    try:
        if model_path is not None:
            result = evaluate_model_file(model_path, data_dir, split=split, n_samples=n_samples,
                                         temperature=temperature, seed=seed, out_dir=out_dir)
        else:
            if data_dir is None:
                data_dir = load_run_config(run_dir)[4]
            result = evaluate_run(run_dir, data_dir, split=split, n_samples=n_samples,
                                  temperature=temperature, plot_dir=run_dir if plot else None,
                                  device=device, seed=seed, which=which, n_plot=n_plot)
    except (DataError, RunError, PlotUnavailable, EngineError) as e:
        _fail(str(e))
    table = result.get("table") if isinstance(result, dict) else None
    if table:
        click.echo(table)


@main.command("evaluate-task")
@click.option("--model", "model_path", type=click.Path(),
              help="An exported task model (humanize/drumify/infill .onnx), scored with the "
                   "runtime engine.")
@click.option("--checkpoint", type=click.Path(),
              help="Or a training checkpoint (RUN/best.pt), scored in torch.")
@click.option("--data", "data_dir", required=True, type=click.Path(),
              help="Prepared 2-bar dataset folder (from `groove-train prepare --bars 2`).")
@click.option("--split", default="test", show_default=True,
              type=click.Choice(["train", "validation", "test"]))
@click.option("--out", "out_path", type=click.Path(), help="Write every number here as JSON.")
@click.option("--seed", default=0, show_default=True, help="Seed of the feels and baselines.")
@click.option("--temperature", default=1.0, show_default=True,
              type=click.FloatRange(min=0.0), help="0: the most likely pattern.")
@click.option("--batch", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]),
              help="With --checkpoint.")
@click.option("--like-previous", is_flag=True,
              help="Humanize with --model only: give the model each window's previous two bars "
                   "of the same take as the feel (what `groove-live humanize --like` does), "
                   "beside a baseline that copies that feel.")
def evaluate_task(model_path, checkpoint, data_dir, split, out_path, seed, temperature, batch,
                  device, like_previous):
    """Score a humanize, drumify or infill model against simple baselines: a table with the
    goal lines, and with --out a JSON file."""
    from groove_live.engine import EngineError

    from .data import DataError
    from .task_eval import TaskEvalError, evaluate_task_model

    try:
        if like_previous:
            from .feel_eval import evaluate_like_previous_model

            if model_path is None:
                raise TaskEvalError("--like-previous scores an exported model: give --model")
            result = evaluate_like_previous_model(model_path, data_dir, split, seed,
                                                  temperature, batch, out_path)
        else:
            result = evaluate_task_model(model_path, checkpoint, data_dir, split=split,
                                         seed=seed, temperature=temperature, batch=batch,
                                         device=device, out=out_path)
    except (DataError, EngineError, TaskEvalError) as e:
        _fail(str(e))
    click.echo(result["table"])
    if out_path:
        click.echo(f"wrote {out_path}")


@main.command("calibrate-task")
@click.option("--run", "run_dir", required=True, type=click.Path(),
              help="Run folder of a drumify or infill model.")
@click.option("--data", "data_dir", required=True, type=click.Path(),
              help="Prepared 2-bar dataset folder (from `groove-train prepare --bars 2`).")
@which_option
@click.option("--split", default="validation", show_default=True,
              type=click.Choice(["train", "validation"]),
              help="Fit on this split (never the test split, which scores the result).")
def calibrate_task(run_dir, data_dir, which, split):
    """Choose a drumify or infill model's hit threshold at temperature 0 for the best hit F1
    on validation data; writes RUN/calibration.json, which `groove-export onnx` bakes in."""
    from .calibrate import CALIBRATION_FILE, CalibrationError, calibrate_run
    from .data import DataError
    from .run import RunError

    try:
        result = calibrate_run(run_dir, data_dir, which, split)
    except (CalibrationError, DataError, RunError) as e:
        _fail(str(e))
    best, zero = result["at_bias"], result["at_zero"]
    click.echo(f"{result['run_id']}: {result['metric']} on {split} ({result['n_windows']} "
               f"windows) {zero['f1']:.3f} at bias 0 (precision {zero['precision']:.3f}, recall "
               f"{zero['recall']:.3f}) -> {best['f1']:.3f} at bias {result['hit_bias']:g} "
               f"(precision {best['precision']:.3f}, recall {best['recall']:.3f})")
    click.echo(f"wrote {run_dir}/{CALIBRATION_FILE}")


@main.command("average")
@click.option("--run", "run_dir", required=True, type=click.Path(),
              help="Run folder whose kept checkpoints are averaged.")
@click.option("--from-step", required=True, type=click.IntRange(min=0),
              help="First step of the stretch (inclusive).")
@click.option("--to-step", required=True, type=click.IntRange(min=0),
              help="Last step of the stretch (inclusive).")
@click.option("--out", "out_dir", required=True, type=click.Path(),
              help="New run folder for the averaged weights (its best.pt).")
def average(run_dir, from_step, to_step, out_dir):
    """Average the weights of a run's checkpoints from --from-step to --to-step into a new run
    folder, which export and the evaluate commands read like any run (a GAN's circling
    generator settles nearer the middle this way)."""
    from .average import average_run
    from .run import RunError

    try:
        result = average_run(run_dir, from_step, to_step, out_dir)
    except RunError as e:  # CheckpointError included
        _fail(str(e))
    steps = result["steps"]
    click.echo(f"averaged {len(steps)} checkpoints of {run_dir} (steps "
               f"{', '.join(map(str, steps))}) -> {result['weights']}")


@main.command("evaluate-musicvae")
@click.option("--run", "run_dir", required=True, type=click.Path(),
              help="Run folder of a categorical, hierarchical or GrooVAE model.")
@click.option("--data", "data_dir", required=True, type=click.Path(),
              help="Prepared dataset folder of the model's length (`prepare --bars N`).")
@click.option("--split", default="test", show_default=True,
              type=click.Choice(["train", "validation", "test"]))
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Of the sampled column and of --structure's samples (greedy is always "
                   "reported too).")
@click.option("--structure", "n_structure", default=0, show_default=True,
              type=click.IntRange(min=0),
              help="Also sample this many phrases and compare their bar self-similarity and "
                   "fills with the split's.")
@click.option("--max-windows", type=click.IntRange(min=1),
              help="Score this many windows spread over the split (default: all).")
@click.option("--out", "out_path", type=click.Path(), help="Write every number here as JSON.")
@which_option
@click.option("--seed", default=0, show_default=True, help="Seed of sampling and of the prior.")
@click.option("--batch", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--threads", default=0, help="torch intra-op threads (0 = torch's default).")
def evaluate_musicvae(run_dir, data_dir, split, temperature, n_structure, max_windows, out_path,
                      which, seed, batch, device, threads):
    """MusicVAE's Table 1 (per-step accuracy, teacher-forced / greedy / sampled) and hit F1
    against baselines; with --structure, bar self-similarity and fills against GMD."""
    import torch

    from .data import DataError
    from .musicvae_eval import MusicVAEEvalError, evaluate_musicvae as run_eval
    from .run import RunError

    if threads:
        torch.set_num_threads(threads)
    if device == "cuda" and not torch.cuda.is_available():
        _fail("--device cuda, but torch sees no CUDA device")
    try:
        result = run_eval(run_dir, data_dir, split=split, temperature=temperature, seed=seed,
                          max_windows=max_windows, structure=n_structure, batch_size=batch,
                          which=which, device=device, out=out_path)
    except (DataError, RunError, MusicVAEEvalError) as e:
        _fail(str(e))
    click.echo(result["table"])
    if out_path:
        click.echo(f"wrote {out_path}")


@main.command("evaluate-harmonizer")
@click.option("--run", "run_dir", required=True, type=click.Path(),
              help="Run folder of a chorale harmonizer (preset chorale_wgan_gp*).")
@click.option("--data", "data_dir", default="data_cache/jsb_2bar", show_default=True,
              type=click.Path(), help="Chorale cache (`prepare-chorales`).")
@click.option("--split", default="test", show_default=True,
              type=click.Choice(["train", "validation", "test"]))
@click.option("--seed", default=0, show_default=True, help="Seed of the noise and of random.")
@click.option("--samples", default=8, show_default=True, type=click.IntRange(min=2),
              help="Noise draws per melody for the mode-collapse check.")
@click.option("--collapse-melodies", default=16, show_default=True, type=click.IntRange(min=1),
              help="Melodies of the mode-collapse check, spread over the split.")
@click.option("--max-windows", type=click.IntRange(min=1),
              help="Score this many windows spread over the split (default: all).")
@which_option
@click.option("--out", "out_dir", type=click.Path(),
              help="Write evaluation.json, piano-roll and training-curve PNGs here.")
@click.option("--threads", default=0, help="torch intra-op threads (0 = torch's default).")
def evaluate_harmonizer(run_dir, data_dir, split, seed, samples, collapse_melodies, max_windows,
                        which, out_dir, threads):
    """The harmonizer against Bach, the rule-based and the random harmonizer (metrics against
    the train split), the 10 % goals, and a mode-collapse check."""
    import torch

    from .harmonizer_eval import HarmonizerEvalError, evaluate_harmonizer as run_eval

    if threads:
        torch.set_num_threads(threads)
    try:
        result = run_eval(run_dir, data_dir, split=split, seed=seed, samples=samples,
                          collapse_melodies=collapse_melodies, max_windows=max_windows,
                          which=which, out=out_dir)
    except HarmonizerEvalError as e:
        _fail(str(e))
    click.echo(f"{result['model']}: {result['windows']} {split} windows, metrics against the "
               f"train split")
    click.echo(result["table"])
    click.echo(result["summary"])
    if out_dir:
        click.echo(f"wrote {', '.join(result['files'].values())}")


if __name__ == "__main__":
    main()
