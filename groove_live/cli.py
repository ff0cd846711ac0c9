"""`groove-live`: the runtime's command line (thin click commands over library functions)."""
from __future__ import annotations

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="groove-live")
def main() -> None:
    """A machine drummer for live coders: GrooVAE over OSC and MIDI."""


def _register() -> None:
    # Subcommands live next to the library code they wrap; importing them must stay torch-free.
    from .offline_cli import info, interpolate, sample  # noqa: F401  (issue: engine/offline)
    from .live.cli import serve

    for command in (info, interpolate, sample, serve):
        main.add_command(command)


try:
    _register()
except ImportError as e:  # pragma: no cover - only while a part is not written yet
    import sys
    print(f"groove-live: some commands are unavailable ({e})", file=sys.stderr)
