"""`groove-live`: the runtime's command line (thin click commands over library functions)."""
from __future__ import annotations

import click

from . import __version__
from .live.cli import serve
from .offline_cli import accompany, drumify, humanize, infill, info, interpolate, sample


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="groove-live")
def main() -> None:
    """A machine drummer for live coders: GrooVAE over OSC and MIDI."""


for _command in (serve, sample, interpolate, humanize, drumify, infill, accompany, info):
    main.add_command(_command)
