"""The `hsidenoise` console script: the top-level ``--help`` at once, everything else through Typer.

``hsidenoise --help`` is what a user types first and what shell completion helpers and wrappers call often:
answered by Typer it costs about 0.27 s (Typer, pydantic and rich import, and every command's options are
built), of which the listing itself needs nothing. This module imports nothing heavy: exactly ``--help`` prints
the listing below and exits 0; any other command line goes to :data:`hsidenoise.cli.app`. The command names and
one-line summaries live in :mod:`hsidenoise.commands` once and Typer's own listing uses them too (``short_help``),
so the two cannot drift apart.
"""

from __future__ import annotations

import sys

from hsidenoise.commands import COMMANDS, DESCRIPTION


def top_level_help(width: int = 80) -> str:
    """The text of ``hsidenoise --help``: usage, description, options and the commands with their summaries."""
    import textwrap

    name_width = max(map(len, COMMANDS)) + 2
    lines = ["Usage: hsidenoise [OPTIONS] COMMAND [ARGS]...", "", *textwrap.wrap(DESCRIPTION, width, initial_indent="  ", subsequent_indent="  "), ""]
    lines += ["Options:", "  --version, -V  Print the version.", "  --help         Show this message and exit.", ""]
    lines += ["Commands:"]
    for name, summary in COMMANDS.items():
        wrapped = textwrap.wrap(summary, width - 2 - name_width) or [""]
        lines.append(f"  {name:<{name_width}}{wrapped[0]}")
        lines += [" " * (2 + name_width) + more for more in wrapped[1:]]
    lines += ["", "Run 'hsidenoise COMMAND --help' for a command's options."]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Entry point of the ``hsidenoise`` script and of ``python -m hsidenoise``."""
    if sys.argv[1:] == ["--help"]:
        sys.stdout.write(top_level_help())
        raise SystemExit(0)
    from hsidenoise.cli import app

    app()
