"""What a command does for its process: SIGTERM cleans up like Ctrl-C, warnings stay off stderr, CPU threads
follow --threads and OMP_NUM_THREADS (issue 12).

The SIGTERM and warning tests run `python -m hsidenoise` in a subprocess: signals and Python's warning printer
only behave as for a user there (pytest records warnings itself).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hsidenoise.cli import app
from hsidenoise.cli.process import TERMINATED_EXIT_CODE
from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.io import write_cube


def hsidenoise(*args: object, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hsidenoise", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------------- SIGTERM


def sigterm_where_it_stopped(process: subprocess.Popen, where: str, check=None) -> tuple[str, str]:
    """Wait until the child stops itself (``HSIDENOISE_TEST_PAUSE_AT``), send SIGTERM, let it go on; its output.

    `check`, called while the child is stopped, returns True or the failure message."""
    try:
        _, status = os.waitpid(process.pid, os.WUNTRACED)  # returns once the child has stopped itself
        if not os.WIFSTOPPED(status):
            pytest.fail(f"the child ended (status {status}) before it reached {where}")
        if check is not None:
            verdict = check()
            assert verdict is True, verdict
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGCONT)
        return process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()


def test_sigterm_during_run_leaves_no_output_and_no_temporary_file(tmp_path: Path) -> None:
    """`kill`, `timeout` and Slurm send SIGTERM: the run stops with a non-zero status and, as after Ctrl-C,
    the staged output (`.<name>.<random>.tmp`) is removed and no output appears.

    No timing guess: the child stops itself after its first written block (``HSIDENOISE_TEST_PAUSE_AT``), the
    test sends SIGTERM while it is stopped and lets it continue, so the signal lands mid-write."""
    rng = np.random.default_rng(3)
    cube = rng.random((13, 101, 99)).astype(np.float32)
    write_cube(tmp_path / "scene.hdr", Cube(cube, CubeMeta()))
    out = tmp_path / "clean"
    out.mkdir()
    process = hsidenoise(
        "run", tmp_path / "scene.hdr", "-o", out / "scene.hdr", "--method", "lowrank", "--spatial", "dct",
        "--tile", 32, "--overlap", 4, "--threads", 1,
        env={**os.environ, "HSIDENOISE_TEST_PAUSE_AT": "block-written#1"},
    )  # fmt: skip
    _, stderr = sigterm_where_it_stopped(
        process, "its first written block", check=lambda: any(out.iterdir()) or "no staged output mid-write"
    )
    assert process.returncode == TERMINATED_EXIT_CODE, stderr
    assert sorted(p.name for p in out.iterdir()) == [], "a temporary or partial output was left behind"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr and "SIGTERM" in lines[0], stderr


def test_sigterm_during_a_json_batch_prints_what_was_done(tmp_path: Path) -> None:
    """`timeout -s TERM ... run in/ -o out/ --json > summary.json` (the README's Slurm recipe): a SIGTERM in a
    batch still prints the batch document, with the finished runs, the interrupted input under
    ``interrupted`` and the unstarted ones counted, and the stderr line says how far it got; exit 143.

    No timing guess: the child stops itself right after its 2nd commit (``committed#2``); SIGTERM lands there,
    after the 2nd output is complete but before its record was made."""
    rng = np.random.default_rng(5)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a", "b", "c"):
        write_cube(inputs / f"{name}.hdr", Cube(rng.random((5, 9, 11), dtype=np.float32), CubeMeta()))
    out = tmp_path / "out"
    process = hsidenoise(
        "run", inputs, "-o", out, "--method", "identity", "--json", "--quiet", "--threads", 1,
        env={**os.environ, "HSIDENOISE_TEST_PAUSE_AT": "committed#2"},
    )  # fmt: skip
    stdout, stderr = sigterm_where_it_stopped(process, "its second commit")
    assert process.returncode == TERMINATED_EXIT_CODE, stderr
    document = json.loads(stdout)
    assert [Path(run["input"]).name for run in document["runs"]] == ["a.hdr"]
    assert document["failed"] == []
    stopped = document["interrupted"]
    assert Path(stopped["input"]).name == "b.hdr" and stopped["signal"] == "SIGTERM"
    assert stopped["output_complete"] is True and (out / "b.hdr").is_file()
    assert document["summary"] == {
        "inputs": 3, "written": 1, "skipped": 0, "failed": 0, "interrupted": 1, "not_started": 1
    }  # fmt: skip
    assert not (out / "c.hdr").exists()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert "SIGTERM" in lines[0] and "1 of 3 input(s) done" in lines[0], lines[0]


# --------------------------------------------------------------------------------------------------- warnings


def test_numpy_runtime_warnings_do_not_reach_stderr(tmp_path: Path) -> None:
    """An infinite pixel makes numpy warn ("invalid value encountered in subtract") inside the metrics; the
    user sees the scores, not Python's warning text."""
    rng = np.random.default_rng(5)
    cube = rng.random((7, 23, 19)).astype(np.float32)
    cube[3, 4, 5] = np.inf
    write_cube(tmp_path / "inf.hdr", Cube(cube, CubeMeta()))
    write_cube(tmp_path / "other.hdr", Cube(cube + 0.01, CubeMeta()))
    for args in (
        ["eval", tmp_path / "other.hdr", "--ref", tmp_path / "inf.hdr", "--json"],
        ["eval", tmp_path / "other.hdr", "--noisy", tmp_path / "inf.hdr", "--json"],
    ):
        env = {k: v for k, v in os.environ.items() if k != "HSIDENOISE_DEBUG"}
        process = hsidenoise(*args, env=env)
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert "Warning" not in stderr and "warn" not in stderr.lower(), stderr
        assert stdout.lstrip().startswith("{")


# ---------------------------------------------------------------------------------------------------- threads


def test_default_threads_follow_omp_num_threads_else_capped_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from hsidenoise import device

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert device.default_threads() == 3
    for unusable in ("", "0", "two"):
        monkeypatch.setenv("OMP_NUM_THREADS", unusable)
        monkeypatch.setattr(device, "usable_cores", lambda: 64)
        assert device.default_threads() == device.DEFAULT_MAX_THREADS
        monkeypatch.setattr(device, "usable_cores", lambda: 1)
        assert device.default_threads() == 1


@pytest.mark.parametrize(("option", "environment", "expected"), [((), "2", 2), (("--threads", "1"), "2", 1)])
def test_run_uses_threads_option_over_the_environment(tmp_path, threads_restored, option, environment, expected):
    """`--threads N` wins over OMP_NUM_THREADS, which wins over the default; torch and the BLAS variables
    both get the count."""
    import torch

    threads_restored.setenv("OMP_NUM_THREADS", environment)
    torch.set_num_threads(5)
    write_cube(tmp_path / "c.hdr", Cube(np.random.default_rng(0).random((5, 17, 19)).astype(np.float32), CubeMeta()))
    result = CliRunner().invoke(
        app, ["run", str(tmp_path / "c.hdr"), "-o", str(tmp_path / "o.hdr"), "--spatial", "dct", "-q", *option]
    )
    assert result.exit_code == 0, result.stderr
    assert torch.get_num_threads() == expected
    assert os.environ["MKL_NUM_THREADS"] == str(expected)


def test_threads_below_one_is_a_usage_error(tmp_path) -> None:
    result = CliRunner().invoke(app, ["run", str(tmp_path / "c.hdr"), "-o", str(tmp_path / "o.hdr"), "--threads", "0"])
    assert result.exit_code == 2 and not any(tmp_path.iterdir())


def test_library_warnings_print_as_one_prefixed_line_each(tmp_path: Path) -> None:
    """The library logs what the user should know (here: a wavelength vector of the wrong length, ignored);
    the command prints it as one ``warning: ...`` line, not as Python's bare last-resort output."""
    import scipy.io

    path = tmp_path / "odd.mat"
    rng = np.random.default_rng(0)
    scipy.io.savemat(path, {"data": rng.random((6, 5, 4)), "wavelengths": np.arange(3.0)})
    done = subprocess.run(
        [sys.executable, "-m", "hsidenoise", "info", str(path), "--json"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "wavelengths" in lines[0], done.stderr
