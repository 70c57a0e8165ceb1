"""Batches through the command line: what a glob, a folder or several inputs mean for -o, the --json shape, and
one bad cube among good ones (recorded, the batch goes on, exit 1 at the end).

Tiny synthetic cubes and ``--method identity`` (the batch logic, not the denoising, is under test).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hsidenoise.batch import plan_jobs, report_dirs
from hsidenoise.io.discovery import expand_inputs, several_inputs
from hsidenoise.cli import app
from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.errors import CubeReadError
from hsidenoise.io import read_cube, write_cube

BATCH_KEYS = {"runs", "failed", "summary"}


@pytest.fixture
def scenes(tmp_path: Path, monkeypatch) -> Path:
    """``tmp_path/scenes`` with a.hdr (ENVI pair), b.tif and notes.txt; the working directory is tmp_path."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    rng = np.random.default_rng(3)
    write_cube(folder / "a.hdr", Cube(rng.random((5, 9, 11), dtype=np.float32), CubeMeta()))
    write_cube(folder / "b.tif", Cube(rng.random((3, 7, 13), dtype=np.float32), CubeMeta()))
    (folder / "notes.txt").write_text("not a cube")
    monkeypatch.chdir(tmp_path)
    return folder


def cli(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result.exit_code, result.stdout, result.stderr


def test_a_glob_that_matches_one_cube_writes_into_a_new_folder(scenes):
    """The reported failure: `run 'dir/*.hdr' -o clean/` with one match and no clean/ yet."""
    for out in ("clean/", "clean2"):  # a glob means a batch, with or without the slash
        code, stdout, stderr = cli("run", "scenes/*.hdr", "-o", out, "--method", "identity", "--json")
        assert code == 0, stderr
        folder = Path(out.rstrip("/"))
        assert sorted(p.name for p in folder.iterdir()) == ["a.hdr", "a.img"]
        assert json.loads(stdout)["runs"][0]["output"] == str(folder / "a.hdr")
        np.testing.assert_array_equal(read_cube(folder / "a.hdr").data, read_cube(scenes / "a.hdr").data)


def test_a_trailing_slash_makes_the_output_of_one_file_a_folder(scenes):
    code, stdout, stderr = cli("run", "scenes/b.tif", "-o", "new/deeper/", "--method", "identity", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["output"] == str(Path("new/deeper/b.tif"))  # single-file mode: one document
    assert Path("new/deeper/b.tif").is_file()
    code, _, stderr = cli("run", "scenes/b.tif", "-o", "new/deeper/", "--method", "identity")
    assert code == 1 and "exists" in stderr  # one named file is refused, not skipped, when its output exists


@pytest.mark.parametrize(
    "inputs",
    [["scenes/*.hdr"], ["scenes/*"], ["scenes"], ["scenes/a.hdr", "scenes/b.tif"], ["scenes/b.tif", "scenes/*.tif"]],
    ids=["glob of one", "glob of two", "folder", "two files", "a file and a glob of the same"],
)
def test_json_of_several_input_mode_has_one_shape_however_many_cubes_match(scenes, inputs):
    code, stdout, stderr = cli("run", *inputs, "-o", "out", "--method", "identity", "--json")
    assert code == 0, stderr
    document = json.loads(stdout)
    assert set(document) == BATCH_KEYS and document["failed"] == []
    assert document["summary"] == {
        "inputs": len(document["runs"]),
        "written": len(document["runs"]),
        "skipped": 0,
        "failed": 0,
    }
    again = json.loads(cli("run", *inputs, "-o", "out", "--method", "identity", "--json")[1])
    assert set(again) == BATCH_KEYS and again["summary"]["skipped"] == len(document["runs"])


def test_json_of_one_named_file_stays_one_document(scenes):
    code, stdout, _ = cli("run", "scenes/a.hdr", "-o", "o.hdr", "--method", "identity", "--json")
    assert code == 0
    document = json.loads(stdout)
    assert document["input"] == str(Path("scenes/a.hdr")) and not BATCH_KEYS & set(document)


def test_a_folder_input_takes_the_cubes_in_it(scenes):
    assert expand_inputs([scenes]) == [scenes / "a.hdr", scenes / "b.tif"]  # no notes.txt, no a.img
    assert several_inputs([scenes]) and several_inputs(["x/*.hdr"]) and several_inputs(["a.hdr", "b.hdr"])
    assert not several_inputs(["scenes/a.hdr"])
    (scenes.parent / "empty").mkdir()
    with pytest.raises(CubeReadError, match="folder"):
        expand_inputs([scenes.parent / "empty"])


def test_run_and_train_find_the_same_cubes_in_a_folder(scenes):
    """One rule (io/discovery.py): a training folder is searched recursively with the rule `run` uses."""
    from hsidenoise.io.discovery import find_cube_files

    nested = scenes / "more"
    nested.mkdir()
    (nested / "c.tif").write_bytes((scenes / "b.tif").read_bytes())
    (nested / "orphan.img").write_bytes(b"")  # an ENVI data file without its header is not a pair's data file
    assert find_cube_files([scenes]) == sorted([*expand_inputs([scenes]), *expand_inputs([nested])])
    assert nested / "orphan.img" in find_cube_files([scenes]) and scenes / "a.img" not in find_cube_files([scenes])


def test_plan_of_a_batch_of_one_is_a_folder_and_skips_what_exists(scenes, tmp_path):
    jobs = plan_jobs([scenes / "a.hdr"], tmp_path / "clean", several=True)
    assert [job.output for job in jobs] == [tmp_path / "clean" / "a.hdr"] and not jobs[0].skip
    (tmp_path / "clean").mkdir()
    for name in ("a.hdr", "a.img"):
        (tmp_path / "clean" / name).write_bytes((scenes / name).read_bytes())
    assert plan_jobs([scenes / "a.hdr"], tmp_path / "clean", several=True)[0].skip


def test_one_bad_cube_is_recorded_and_the_batch_goes_on(scenes):
    (scenes / "bad.tif").write_bytes(b"garbage" * 40)  # sorts between a.hdr and b.tif
    args = ("run", "scenes", "-o", "clean", "--method", "identity", "--json")
    code, stdout, stderr = cli(*args)
    assert code == 1
    document = json.loads(stdout)  # the whole of stdout is still the one document
    assert [Path(run["output"]).name for run in document["runs"]] == ["a.hdr", "b.tif"]
    assert [Path(fail["input"]).name for fail in document["failed"]] == ["bad.tif"]
    error = document["failed"][0]["error"]
    assert "bad.tif" in error and "\n" not in error
    assert document["summary"] == {"inputs": 3, "written": 2, "skipped": 0, "failed": 1}
    assert f"failed {Path('scenes/bad.tif')}" in stderr and "1 of 3" in stderr
    assert sorted(p.name for p in Path("clean").iterdir()) == ["a.hdr", "a.img", "b.tif"]  # no bad output, no temp
    code, stdout, _ = cli(*args)  # the re-run skips the good ones and fails the bad one again
    again = json.loads(stdout)
    assert code == 1 and again["summary"] == {"inputs": 3, "written": 0, "skipped": 2, "failed": 1}


def test_a_batch_whose_every_cube_fails_leaves_no_folder(scenes, tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.tif").write_bytes(b"garbage" * 40)
    code, stdout, stderr = cli("run", "junk", "-o", "clean", "--method", "identity", "--json")
    assert code == 1 and json.loads(stdout)["summary"]["failed"] == 1
    assert not Path("clean").exists()
    code, stdout, stderr = cli("run", "junk", "-o", "clean", "--method", "identity")
    assert code == 1 and stdout == "" and "failed" in stderr


def test_a_failed_single_run_still_prints_its_record(scenes):
    (scenes / "bad.tif").write_bytes(b"garbage" * 40)
    code, stdout, stderr = cli("run", "scenes/bad.tif", "-o", "o.tif", "--method", "identity", "--json")
    assert code == 1
    record = json.loads(stdout)
    assert record["input"] == str(Path("scenes/bad.tif")) and "bad.tif" in record["error"]
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("error:")
    assert not Path("o.tif").exists()
    code, stdout, _ = cli("run", "scenes/bad.tif", "-o", "o.tif", "--method", "identity")
    assert code == 1 and stdout == ""  # without --json nothing goes to stdout


def test_report_folders_are_those_of_the_whole_batch_for_a_batch_of_one_and_for_each_share(scenes):
    jobs = plan_jobs(expand_inputs(["scenes/*.hdr"]), Path("one"), several=True)
    assert report_dirs(jobs, Path("r1"), several=True) == {Path("scenes/a.hdr"): Path("r1/a")}
    assert report_dirs(jobs, Path("r1"), several=False) == {Path("scenes/a.hdr"): Path("r1")}
    for index in range(2):  # b.tif's share names its folder as the whole batch does, not as a batch of one
        code, _, stderr = cli("run", "scenes", "-o", "two", "--method", "identity", "--report", "r2", "-q",
                              "--shard", f"{index}/2")  # fmt: skip
        assert code == 0, stderr
    assert sorted(p.name for p in Path("r2").iterdir()) == ["a", "b"]
    assert all((Path("r2") / name / "report.json").is_file() for name in ("a", "b"))


# ------------------------------------------------------------------------------ a report the disk cut short


@pytest.mark.parametrize("several", [False, True], ids=["one cube", "batch"])
def test_a_rerun_writes_a_missing_or_half_report_without_denoising_again(scenes, several):
    """A full disk after the commit left the cube and half a report (report.json alone, as before the fix):
    the same command again writes the report from the existing output, says so, and leaves the cube as it was."""
    source, output = ("scenes", "clean") if several else ("scenes/a.hdr", "clean/a.hdr")
    code, _, stderr = cli("run", source, "-o", output, "--method", "identity", "-q")
    assert code == 0, stderr
    cube = Path("clean/a.hdr")
    before = {path.name: path.stat().st_mtime_ns for path in Path("clean").iterdir()}
    half = Path("rep/a" if several else "rep")
    half.mkdir(parents=True)
    (half / "report.json").write_text('{"input": "scenes/a.hdr"}\n')  # what the full disk left
    code, stdout, stderr = cli("run", source, "-o", output, "--method", "identity", "--report", "rep", "--json")
    assert code == 0, stderr
    document = json.loads(stdout)
    record = document["runs"][0] if several else document
    assert record["skipped"] == "output exists" and "existing output" in record["report_note"]
    assert {"json", "profiles", "quicklook", "noise"} <= set(record["report"])
    assert all(Path(path).is_file() for path in record["report"].values())
    report = json.loads((half / "report.json").read_text())
    assert set(report["report_files"]) == {Path(path).name for key, path in record["report"].items() if key != "json"}
    assert {path.name: path.stat().st_mtime_ns for path in Path("clean").iterdir()} == before, "the cube was redone"
    assert cube.is_file()
    code, _, stderr = cli("run", source, "-o", output, "--method", "identity", "--report", "rep", "-q")
    if several:  # the report is complete now: a plain skip
        assert code == 0, stderr
    else:  # nothing left to do for one named output: the usual refusal
        assert code == 1 and "already exists" in stderr


def test_a_failed_report_leaves_no_partial_files(tmp_path, monkeypatch):
    from hsidenoise.quality import plots as report_module
    from hsidenoise.errors import CubeWriteError

    def full_disk(*args, **kwargs):
        raise CubeWriteError("cannot write the report file quicklook.png: No space left on device")

    monkeypatch.setattr(report_module, "write_quicklook", full_disk)
    rng = np.random.default_rng(4)
    noisy = rng.random((5, 9, 11), dtype=np.float32)
    with pytest.raises(CubeWriteError):
        report_module.write_run_report(tmp_path / "new" / "rep", noisy, noisy * 0.5, summary={})
    assert list(tmp_path.iterdir()) == [], "a half report was left"
    existing = tmp_path / "kept"
    existing.mkdir()
    with pytest.raises(CubeWriteError):
        report_module.write_run_report(existing, noisy, noisy * 0.5, summary={})
    assert list(existing.iterdir()) == [] and not report_module.report_complete(existing)


def test_the_free_space_check_counts_the_report(scenes, monkeypatch):
    """A disk that holds the cube but not its report is refused before any work (the cube's own check passes)."""
    from collections import namedtuple

    from hsidenoise.io import staging

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(staging.shutil, "disk_usage", lambda _: Usage(10**9, 10**9 - 10**6, 10**6))  # 1 MB free
    code, _, stderr = cli("run", "scenes/a.hdr", "-o", "clean/a.hdr", "--method", "identity")
    assert code == 0, stderr  # the tiny cube fits
    code, _, stderr = cli("run", "scenes/b.tif", "-o", "clean/b.tif", "--method", "identity", "--report", "rep")
    assert code == 1 and "not enough disk space" in stderr and "report" in stderr, stderr
    assert not Path("rep").exists() and not Path("clean/b.tif").exists()
