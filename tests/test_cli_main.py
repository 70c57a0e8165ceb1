"""The top-level app: --version, --help of every command without heavy imports, the format choices.

Through Typer's CliRunner (helpers and fixtures in ``cli_support.py``). A failure must give the documented exit
code (1 bad data or a failed run, 2 bad usage), one line on stderr without a traceback, nothing on stdout, no
output or temporary file, and an untouched input.
"""

from __future__ import annotations

import json
import subprocess
import sys

from cli_support import invoke

from hsidenoise import __version__

# ----------------------------------------------------------------------------------------- version / help


def test_version(runner):
    result = invoke(runner, "--version")
    assert result.stdout == f"hsidenoise {__version__}\n"
    done = subprocess.run(
        [sys.executable, "-m", "hsidenoise", "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert (done.returncode, done.stdout) == (0, f"hsidenoise {__version__}\n")


def test_help_of_every_command_imports_no_heavy_module():
    """`hsidenoise --help` (and each command's) builds without importing torch, rasterio, h5py or matplotlib."""
    script = (
        "import json, sys\n"
        "from typer.main import get_command\n"
        "from typer.testing import CliRunner\n"
        "import hsidenoise.cli as cli\n"
        "names = sorted(get_command(cli.app).commands)\n"
        "runner = CliRunner()\n"
        "codes = [runner.invoke(cli.app, args).exit_code for args in [['--help']] + [[n, '--help'] for n in names]]\n"
        "heavy = [m for m in ('torch', 'rasterio', 'h5py', 'matplotlib') if m in sys.modules]\n"
        "print(json.dumps({'names': names, 'codes': codes, 'heavy': heavy}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["names"] == sorted(["noise", "eval", "info", "convert", "run", "train", "finetune", "models"])
    assert facts["codes"] == [0] * (len(facts["names"]) + 1)
    assert facts["heavy"] == []


def test_top_level_help_answers_without_typer_and_lists_the_apps_commands():
    """`hsidenoise --help` comes from hsidenoise.console, importing neither Typer nor numpy, and lists exactly
    the commands Typer registers, with the summaries Typer's own listing and each command's help start with."""
    import inspect

    from typer.main import get_command

    import hsidenoise.cli as cli
    from hsidenoise.commands import COMMANDS, DESCRIPTION
    from hsidenoise.console import top_level_help

    script = (
        "import json, sys\n"
        "from hsidenoise.console import main\n"
        "sys.argv = ['hsidenoise', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as done:\n"
        "    heavy = [m for m in ('typer', 'numpy', 'rich', 'click') if m in sys.modules]\n"
        "    sys.stderr.write(json.dumps({'code': done.code, 'heavy': heavy}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert json.loads(done.stderr) == {"code": 0, "heavy": []}
    assert done.stdout == top_level_help()
    group = get_command(cli.app)
    assert list(group.commands) == list(COMMANDS)  # the same commands, in the listing's order
    assert group.help == DESCRIPTION
    for name, command in group.commands.items():
        assert command.short_help == COMMANDS[name]
        first_paragraph = " ".join(inspect.getdoc(command.callback).split("\n\n")[0].split())
        assert first_paragraph == COMMANDS[name], name  # `hsidenoise NAME --help` starts with the same line
        assert name in done.stdout
    module = subprocess.run(
        [sys.executable, "-m", "hsidenoise", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert (module.returncode, module.stdout) == (0, top_level_help())


def test_format_choices_are_the_io_formats(runner):
    from hsidenoise.cli.options import FormatChoice
    from hsidenoise.io import FORMATS

    assert [choice.value for choice in FormatChoice] == list(FORMATS)
