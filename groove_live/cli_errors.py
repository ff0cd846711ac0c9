"""The one way every groove-live, groove-train and groove-export command fails.

Exit codes, the same for every command:
- 0: done.
- 2: something the user can fix (a bad argument, a missing or corrupt file, a model of the wrong
  kind, a port in use): one line on stderr, "PROG: error: what and where", nothing half-written.
  Click's own usage errors exit 2 as well.
- 1: a bug in groove-live (an unexpected exception, with its traceback), never for bad input.
"""
from __future__ import annotations

import sys
from typing import NoReturn

import click

USER_ERROR_EXIT = 2


def fail(prog: str, message: str) -> NoReturn:
    """Print `message` as one line (newlines folded) and exit USER_ERROR_EXIT."""
    line = " ".join(str(message).split()) or "failed"
    click.echo(f"{prog}: error: {line}", err=True)
    sys.exit(USER_ERROR_EXIT)
