"""A normal (non-editable) install: the wheel carries the shipped weights, and `hsidenoise run --method decsc`
works from it, outside the checkout, with the weights of the installed package.

The wheel is built offline from a copy of the build inputs (``pip wheel --no-deps --no-build-isolation``, with
the setuptools of the running environment), installed without its dependencies into a fresh venv that has no pip,
and that venv then sees the running environment's dependencies through a ``.pth`` file written after the install
(so that pip never takes the checkout's editable install for its own).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "README.md", "hsidenoise", "weights")
"""What the build reads; copied so that building leaves no build/ or egg-info in the checkout."""


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        shown = " ".join(map(str, command))
        pytest.fail(f"{shown} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the checkout's build inputs."""
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(dist), "."],
        cwd=source,
    )
    (built,) = dist.glob("hsidenoise-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv (no pip) with the wheel installed and the running environment's packages on its path."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(venv)], cwd=venv)
    python = venv / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "--ignore-installed", "-q", str(wheel)],
        cwd=venv,
    )
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([str(python), "-c", purelib], cwd=venv).stdout.strip())
    dependencies = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "hsidenoise_test_dependencies.pth").write_text("\n".join(sorted(dependencies)) + "\n", encoding="utf-8")
    return venv


def test_the_wheel_carries_the_shipped_weights_and_model_cards_but_no_checkpoints(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(
        path.name
        for pattern in ("*.safetensors", "*.json", "README.md")
        for path in (REPO / "weights").glob(pattern)
    )
    assert "decsc-dctcsc-coupled.safetensors" in shipped
    prefix = "hsidenoise/_weights/"
    packaged = sorted(name.removeprefix(prefix) for name in names if name.startswith(prefix))
    assert packaged == shipped  # the weights and their cards, and nothing of weights/checkpoints/


def test_run_decsc_from_the_installed_wheel_uses_the_installed_weights(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"  # outside the checkout, so nothing resolves through the working directory
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    located = _run(
        [str(installed / "bin" / "python"), "-c",
         "import json, hsidenoise; from hsidenoise.model import find_default_weights; "
         "print(json.dumps({'package': hsidenoise.__file__, 'weights': str(find_default_weights())}))"],
        cwd=elsewhere,
        env=env,
    )
    where = json.loads(located.stdout)
    assert where["weights"] != "None", f"the installed package finds no shipped weights: {where}"
    venv = installed.resolve()
    assert Path(where["package"]).resolve().is_relative_to(venv), where
    assert Path(where["weights"]).resolve().is_relative_to(venv), where
    assert not Path(where["weights"]).resolve().is_relative_to(REPO), where

    output = elsewhere / "clean.hdr"
    _run(
        [str(installed / "bin" / "hsidenoise"), "run", str(REPO / "examples" / "santa_barbara.hdr"), "-o", str(output),
         "--method", "decsc"],
        cwd=elsewhere,
        env=env,
    )
    assert output.is_file() and output.with_suffix(".img").is_file()
    assert output.with_suffix(".img").stat().st_size > 0


def test_pyproject_lists_every_package_of_the_source_tree():
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "hsidenoise").rglob("__init__.py")
    }
    assert listed == on_disk | {"hsidenoise._weights"}, "add the missing package to pyproject.toml"
