"""Which weights of a run folder a command reads: the one `--which` option every command shares.

Torch-free (the CLIs import it at start-up): best.pt (kept by `fit` on validation loss), the
latest checkpoint, or the checkpoint of one step, for a selection made on other metrics (a GAN's
loss does not rank its checkpoints; validation scores of each do).
"""
from __future__ import annotations

import re

import click

WHICH_RE = re.compile(r"^(best|latest|step(\d{1,9}))$")
WHICH_HELP = "best (selected on validation loss), latest, or stepN (checkpoints/step_N.pt)"


def _checked(ctx, param, value: str) -> str:
    if WHICH_RE.match(value) is None:
        raise click.BadParameter(f"{value!r}; say {WHICH_HELP}")
    return value


def which_option(f):
    """The --which option (default best), checked before the command runs."""
    return click.option("--which", default="best", show_default=True, callback=_checked,
                        help=f"Weights: {WHICH_HELP}.")(f)
