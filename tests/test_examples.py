"""The shipped example (examples/): the AVIRIS cube, the README's commands and the batch script."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hsidenoise.cli import app
from hsidenoise.io import read_cube
from hsidenoise.quality.metrics import estimate_noise_mad

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
CUBE = EXAMPLES / "santa_barbara.hdr"
SHAPE = (224, 90, 90)
DEAD_BANDS = [0, 1, *range(96, 116), *range(153, 171), 221, 222, 223]
SOURCE = Path("aviris_santa_barbara_lacumbre_224") / "a_hsi_img_for_VI_demo.mat"


@pytest.fixture(scope="module")
def example():
    if not (CUBE.is_file() and CUBE.with_suffix(".img").is_file()):
        pytest.fail(f"{CUBE} (+ .img) is missing; rebuild it with: .venv/bin/python examples/make_example.py")
    return read_cube(CUBE)


def copy_cube(folder: Path, name: str = "santa_barbara") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".hdr", ".img"):
        shutil.copyfile(CUBE.with_suffix(suffix), folder / f"{name}{suffix}")
    return folder / f"{name}.hdr"


def test_example_cube_has_the_documented_layout_and_metadata(example):
    meta = example.meta
    assert example.shape == SHAPE
    assert example.data.dtype == np.int16
    assert CUBE.with_suffix(".img").stat().st_size == np.prod(SHAPE) * 2
    assert meta.interleave == "bsq"
    assert meta.wavelength_units == "Nanometers"
    assert meta.wavelengths is not None and len(meta.wavelengths) == SHAPE[0]
    assert meta.wavelengths[0] == pytest.approx(365.91, abs=0.01)
    assert meta.wavelengths[-1] == pytest.approx(2496.22, abs=0.01)
    assert "AVIRIS" in meta.description and "MIT" in meta.description
    dead = np.flatnonzero((example.data == 0).all(axis=(1, 2))).tolist()
    assert dead == DEAD_BANDS


def test_example_cube_is_the_shared_source_unchanged(example, shared_data):
    source = read_cube(shared_data / SOURCE, var="hsi_img")
    np.testing.assert_array_equal(example.data, source.data)
    np.testing.assert_allclose(example.meta.wavelengths, source.meta.wavelengths, rtol=0, atol=1e-4)


def readme_command(*needles: str) -> list[str]:
    """The first `hsidenoise run` line of examples/README.md holding every needle, as argv after `hsidenoise`."""
    for line in (EXAMPLES / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("hsidenoise run ") and all(needle in line for needle in needles):
            return shlex.split(line.split("#")[0])[1:]
    raise AssertionError(f"examples/README.md has no 'hsidenoise run' line with {needles}")


def test_readme_lowrank_example_denoises_the_cube(example, tmp_path, monkeypatch):
    # The README's --method lowrank --spatial dct command, with out/ moved into tmp_path.
    args = readme_command("--method lowrank", "--spatial dct", "--report")
    args = [str(REPO / a) if a.startswith("examples/") else a for a in args]
    args = [str(tmp_path / a) if a.startswith("out/") else a for a in args]
    result = CliRunner().invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.output

    output = Path(args[args.index("-o") + 1])
    denoised = read_cube(output).data
    assert denoised.shape == SHAPE
    np.testing.assert_array_equal(denoised[DEAD_BANDS], example.data[DEAD_BANDS])
    valid = np.setdiff1d(np.arange(SHAPE[0]), DEAD_BANDS)
    before = np.median(estimate_noise_mad(example.data)[valid])
    after = np.median(estimate_noise_mad(denoised)[valid])
    assert after < before
    report = Path(args[args.index("--report") + 1])
    for name in ("report.json", "row_mean_profiles.png", "quicklook.png", "noise_before_after.png"):
        assert (report / name).is_file(), name
    document = json.loads((report / "report.json").read_text(encoding="utf-8"))
    assert document["untouched_bands"]["dead"] == DEAD_BANDS
    assert document["method"] == "lowrank" and document["method_info"]["spatial"] == "dct"


def run_batch(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("HSIDENOISE", None)
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        ["bash", str(EXAMPLES / "batch.sh"), *map(str, args)], env=env, capture_output=True, text=True, timeout=120
    )


def test_batch_script_denoises_a_folder_and_resumes(example, tmp_path):
    in_dir, out_dir = tmp_path / "in dir", tmp_path / "out dir"
    copy_cube(in_dir)
    first = run_batch(in_dir, out_dir, "--method", "identity")
    assert first.returncode == 0, first.stderr
    output = out_dir / "santa_barbara.hdr"
    np.testing.assert_array_equal(read_cube(output).data, example.data.astype(np.float32))
    document = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    [run] = document["runs"]  # one cube, and still the batch's shape
    assert run["output"] == str(output) and run["method"] == "identity" and document["failed"] == []
    written = output.with_suffix(".img").stat().st_mtime_ns

    second = run_batch(in_dir, out_dir, "--method", "identity")
    assert second.returncode == 0, second.stderr
    [run] = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))["runs"]
    assert run == {"input": str(in_dir / "santa_barbara.hdr"), "output": str(output), "skipped": "output exists"}
    assert output.with_suffix(".img").stat().st_mtime_ns == written


def test_batch_script_records_a_bad_cube_goes_on_and_resumes_after_the_fix(tmp_path):
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    copy_cube(in_dir, "a")
    broken = copy_cube(in_dir, "b").with_suffix(".img")
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    copy_cube(in_dir, "c")
    failed = run_batch(in_dir, out_dir, "--method", "identity")
    assert failed.returncode == 1
    failure, total = failed.stderr.strip().splitlines()  # one line per failed cube, one for the count
    assert "b.img" in failure and "1 of 3" in total, failed.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.hdr", "a.img", "c.hdr", "c.img", "summary.json"]
    document = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    assert [Path(f["input"]).name for f in document["failed"]] == ["b.hdr"]

    copy_cube(in_dir, "b")
    resumed = run_batch(in_dir, out_dir, "--method", "identity")
    assert resumed.returncode == 0, resumed.stderr
    runs = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))["runs"]
    assert [(Path(r["output"]).name, r.get("skipped")) for r in runs] == [
        ("a.hdr", "output exists"), ("b.hdr", None), ("c.hdr", "output exists")
    ]


def test_batch_script_refuses_bad_folders(tmp_path):
    in_dir = tmp_path / "in"
    copy_cube(in_dir)
    assert run_batch(in_dir, in_dir).returncode == 2
    assert run_batch(tmp_path / "nowhere", tmp_path / "out").returncode == 2
    assert run_batch(tmp_path, tmp_path / "out").returncode == 1  # no *.hdr in it
    assert run_batch(in_dir).returncode == 2
