"""What `run`, `train` and `finetune` tell the user while and after they work (issue 12): the progress display's
phases and time left, solver non-convergence, `--profile-bands`, `--spectra-pixels`, and `--threads` on the training
commands.

No test measures time: the time-left column is checked on a clock the test sets, the phases through callbacks.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from hsidenoise.cli import app
from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.io import write_cube

BANDS, ROWS, COLS = 9, 23, 29


@pytest.fixture(scope="module")
def cube(tmp_path_factory) -> Path:
    """9 x 23 x 29 float32: two smooth spectra mixed by smooth abundances, plus noise; with wavelengths."""
    folder = tmp_path_factory.mktemp("feedback")
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:ROWS, 0:COLS] / COLS
    spectra = 0.3 + 0.2 * np.sin(np.linspace(0, 3, BANDS)[:, None] * np.array([1.0, 2.3]))
    clean = np.einsum("bk,khw->bhw", spectra, np.stack([np.sin(3 * x) ** 2, np.cos(2 * y) ** 2]))
    noisy = (clean + 0.2 + 0.02 * rng.standard_normal(clean.shape)).astype(np.float32)
    path = folder / "scene.hdr"
    write_cube(path, Cube(noisy, CubeMeta(wavelengths=np.linspace(450.0, 850.0, BANDS), wavelength_units="nm")))
    return path


def invoke(*args: object, code: int = 0):
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert result.exit_code == code, f"exit {result.exit_code}, expected {code}\n{result.stdout}\n{result.stderr}"
    return result


def one_line_refusal(result, folder: Path, before: set[str]) -> str:
    assert result.exit_code == 2, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert {str(p.relative_to(folder)) for p in folder.rglob("*")} == before, "a file was written"
    return lines[0]


# ------------------------------------------------------------------------------------------ progress display


def test_remaining_seconds_is_the_mean_pace_over_the_units_left() -> None:
    from hsidenoise.cli.terminal import remaining_seconds

    assert remaining_seconds(30.0, 3, 12) == pytest.approx(90.0)  # 10 s a tile, 9 tiles left
    assert remaining_seconds(80.0, 2, 10) == pytest.approx(320.0)
    assert remaining_seconds(5.0, 4, 4) == 0.0
    assert remaining_seconds(12.0, 0, 4) is None  # nothing done yet: no estimate rather than a guess
    assert remaining_seconds(12.0, 2, None) is None


def test_time_left_column_does_not_stick_when_tiles_are_slower_than_a_speed_window() -> None:
    """Tiles of 40 s each: rich's own estimate keeps a 30-s window of updates and, with one update in it,
    showed 0:00:01; the column counts the mean pace since the tiles began: 2 of 10 tiles in 80 s -> 5:20 left."""
    from rich.console import Console
    from rich.progress import Progress

    from hsidenoise.cli.terminal import _remaining_column

    now = [0.0]
    column = _remaining_column()
    progress = Progress(column, console=Console(file=io.StringIO()), get_time=lambda: now[0], auto_refresh=False)
    task_id = progress.add_task("scene", total=10, since=None)
    for tile in (1, 2):
        now[0] += 40.0
        progress.update(task_id, completed=tile)
    task = progress.tasks[0]
    assert column.render(task).plain == "0:05:20"
    progress.update(task_id, since=20.0)  # the tiles began at 20 s (after the statistics and the fit)
    assert column.render(task).plain == "0:04:00"  # 60 s for 2 tiles: 30 s a tile, 8 left
    progress.update(task_id, completed=0, since=None)
    assert column.render(task).plain == "-:--:--"


def test_progress_bars_show_the_phase_and_keep_it_while_counting() -> None:
    from rich.console import Console
    from rich.progress import Progress, TextColumn

    from hsidenoise.cli.terminal import PHASES, ProgressBars

    bars = ProgressBars(False)
    now = [100.0]
    bars._progress = Progress(TextColumn("{task.fields[info]}"), console=Console(file=io.StringIO()),
                              get_time=lambda: now[0], auto_refresh=False)  # fmt: skip
    announce, update = bars.phase("scene.hdr"), bars.callback("scene.hdr")
    announce("statistics")
    (task,) = bars._progress.tasks
    assert task.fields["info"] == PHASES["statistics"] and task.total is None
    announce("prepare")
    assert task.fields["info"] == PHASES["prepare"]
    now[0] = 130.0
    announce("tiles")
    assert task.fields["since"] == 130.0  # the time left counts from the first tile, not from the statistics
    update(1, 6)
    assert task.fields["info"] == PHASES["tiles"] and task.total == 6 and task.completed == 1
    assert len(bars._progress.tasks) == 1


def test_run_jobs_announces_each_phase_before_the_first_tile(cube, tmp_path) -> None:
    """The long statistics pass and fit come before any tile: the phase callback says so as they begin."""
    from hsidenoise.batch import plan_jobs, run_jobs
    from hsidenoise.methods import build_method
    from hsidenoise.tiling import TileConfig

    config = TileConfig(tile=16, overlap=4)
    events: list[tuple[str, str]] = []
    run_jobs(
        plan_jobs([cube], tmp_path / "out.hdr"),
        lambda: build_method("lowrank", config=config, spatial="dct"),
        config,
        progress=lambda name: lambda done, total: events.append((name, f"tile {done}/{total}")),
        phase=lambda name: lambda stage: events.append((name, stage)),
    )
    names = {name for name, _ in events}
    stages = [stage for _, stage in events]
    assert names == {cube.name}
    assert stages[:3] == ["statistics", "prepare", "tiles"] and stages[3].startswith("tile 1/")
    assert stages[-1] == "tile 6/6" and stages.count("tiles") == 1


def test_run_command_hands_the_phase_callback_to_the_display(cube, tmp_path, monkeypatch) -> None:
    from hsidenoise.cli.terminal import ProgressBars

    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(ProgressBars, "phase", lambda self, name: lambda stage: seen.append((name, stage)))
    invoke("run", cube, "-o", tmp_path / "out.hdr", "--spatial", "dct", "--tile", 16, "--overlap", 4)
    assert seen == [(cube.name, "statistics"), (cube.name, "prepare"), (cube.name, "tiles")]


# ------------------------------------------------------------------------------------ solver non-convergence


def test_run_summary_counts_tiles_above_the_tolerance() -> None:
    from hsidenoise.batch import solver_convergence

    records = [
        SimpleNamespace(info={"evaluations": 5.0, "converged": 1.0, "max_residual": 1e-4, "tol": 1e-3}),
        SimpleNamespace(info={"evaluations": 9.0, "converged": 0.5, "max_residual": 2.1e-3, "tol": 1e-3}),
        SimpleNamespace(info={"evaluations": 9.0, "converged": 0.0, "max_residual": 4e-3, "tol": 1e-3}),
    ]
    facts = solver_convergence(records)
    assert facts["tiles"] == 3 and facts["tiles_not_converged"] == 2
    assert facts["max_residual"] == pytest.approx(4e-3) and facts["tol"] == pytest.approx(1e-3)
    assert facts["converged_fraction"] == pytest.approx(0.5)
    assert solver_convergence([SimpleNamespace(info={})]) == {}


@pytest.mark.parametrize(("preset", "tile"), [("subspace", 16), ("band-window", 32)])
def test_non_convergence_is_reported_in_json_report_and_one_stderr_line(
    cube, tmp_path, noise_aware_weights, preset, tile
) -> None:
    """One solver evaluation at a tolerance no solve meets: every tile misses it. The subspace model used to
    report no `converged` at all (its converged_fraction read 0 whatever happened), the band-window one no `tol`."""
    from hsidenoise.tiling import TileConfig, plan_tiles

    tiles = len(plan_tiles(ROWS, COLS, TileConfig(tile=tile, overlap=4)))
    report = tmp_path / "report"
    model = ["--model", "subspace", "--random-weights"] if preset == "subspace" else ["--model", noise_aware_weights]
    common = [*model, "--max-iter", 1, "--tol", 1e-12, "--tile", tile, "--overlap", 4]
    with_report = ["--report", report] if preset == "band-window" else []  # the subspace one re-runs the model for SURE
    result = invoke("run", cube, "-o", tmp_path / "out.hdr", *common, *with_report, "--json")
    solver = json.loads(result.stdout)["solver"]
    assert solver["tiles"] == tiles and solver["tiles_not_converged"] == tiles
    assert solver["tol"] == pytest.approx(1e-12) and solver["max_residual"] > 1e-12
    assert solver["converged_fraction"] == 0.0
    if with_report:
        assert json.loads((report / "report.json").read_text())["solver"]["tiles_not_converged"] == tiles
    lines = [line for line in result.stderr.splitlines() if "did not converge" in line]
    assert len(lines) == 1 and lines[0].startswith(f"{tiles} of {tiles} tiles did not converge (residual ")
    if preset == "subspace":  # the cheaper model: --quiet silences the line
        quiet = invoke("run", cube, "-o", tmp_path / "quiet.hdr", *common, "--quiet")
        assert "did not converge" not in quiet.stderr


def test_subspace_solves_that_meet_the_tolerance_count_as_converged(cube, tmp_path) -> None:
    result = invoke(
        "run", cube, "-o", tmp_path / "out.hdr", "--model", "subspace", "--random-weights", "--max-iter", 1,
        "--tol", 1e6, "--tile", 16, "--overlap", 4, "--json",
    )  # fmt: skip
    solver = json.loads(result.stdout)["solver"]
    assert solver["converged_fraction"] == 1.0 and solver["tiles_not_converged"] == 0
    assert "did not converge" not in result.stderr


# -------------------------------------------------------------------------------------------- --profile-bands


def test_profile_bands_reach_the_report(cube, tmp_path) -> None:
    report = tmp_path / "report"
    invoke("run", cube, "-o", tmp_path / "out.hdr", "--spatial", "dct", "--report", report, "--profile-bands", "1,7",
           "-q")  # fmt: skip
    facts = json.loads((report / "report.json").read_text())
    assert facts["profile_bands"] == [1, 7]
    assert [item["reason"] for item in facts["profile_band_choice"]["bands"]] == ["asked for", "asked for"]


@pytest.mark.parametrize(
    ("value", "report", "expected"),
    [
        (str(BANDS), True, f"numbered 0 to {BANDS - 1}"),  # 1-based thinking: band 9 of a 9-band cube
        ("2,-1", True, "from 0"),
        ("two", True, "from 0"),
        ("", True, "from 0"),
        ("1,2", False, "--report"),
    ],
)
def test_bad_profile_bands_are_a_usage_error_before_any_work(cube, tmp_path, value, report, expected) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    args = ["run", str(cube), "-o", str(folder / "out.hdr"), "--spatial", "dct", "--profile-bands", value]
    if report:
        args += ["--report", str(folder / "report")]
    line = one_line_refusal(CliRunner().invoke(app, args), folder, set())
    assert expected in line, line


def test_profile_bands_out_of_range_stop_a_batch_before_any_cube_is_written(cube, tmp_path) -> None:
    """Band 40 exists in a 41-band cube but not in the 9-band one: refused before the first cube is run."""
    wide = tmp_path / "inputs" / "wide.hdr"
    wide.parent.mkdir()
    write_cube(wide, Cube(np.random.default_rng(1).random((41, 13, 11)).astype(np.float32), CubeMeta()))
    folder = tmp_path / "work"
    folder.mkdir()
    result = CliRunner().invoke(
        app, ["run", str(wide), str(cube), "-o", str(folder / "clean"), "--spatial", "dct",
              "--report", str(folder / "report"), "--profile-bands", "0,40"],
    )  # fmt: skip
    line = one_line_refusal(result, folder, set())
    assert "40" in line and cube.name in line and wide.name not in line


# ------------------------------------------------------------------------------------------- --spectra-pixels


def test_spectra_pixels_reach_the_report_at_full_resolution(cube, tmp_path) -> None:
    from hsidenoise.io import read_cube

    report, output = tmp_path / "report", tmp_path / "out.hdr"
    invoke("run", cube, "-o", output, "--spatial", "dct", "--report", report, "--spectra-pixels", " 3,4; 22,28 ",
           "-q")  # fmt: skip
    pixels = json.loads((report / "report.json").read_text())["spectra"]["pixels"]
    assert [(p["row"], p["col"], p["why"]) for p in pixels] == [(3, 4, "asked for"), (22, 28, "asked for")]
    noisy, denoised = read_cube(cube).data, read_cube(output).data
    for pixel in pixels:  # the values are those pixels' own spectra, input and output
        np.testing.assert_allclose(pixel["input"], noisy[:, pixel["row"], pixel["col"]], rtol=1e-6)
        np.testing.assert_allclose(pixel["output"], denoised[:, pixel["row"], pixel["col"]], rtol=1e-6)
    assert (report / "spectra.png").read_bytes()[:4] == b"\x89PNG"


def test_default_spectra_pixels_are_the_four_measured_ones(cube, tmp_path) -> None:
    report = tmp_path / "report"
    invoke("run", cube, "-o", tmp_path / "out.hdr", "--spatial", "dct", "--report", report, "-q")
    pixels = json.loads((report / "report.json").read_text())["spectra"]["pixels"]
    assert [p["why"] for p in pixels] == ["brightest", "darkest", "median brightness", "most changed"]
    means = [np.mean(p["input"]) for p in pixels]
    assert means[0] >= means[2] >= means[1]


@pytest.mark.parametrize(
    ("value", "report", "expected"),
    [
        (f"{ROWS},0", True, f"{ROWS} rows and {COLS} columns"),  # 1-based thinking: row 23 of 23 rows
        (f"0,{COLS}", True, f"{ROWS} rows and {COLS} columns"),
        ("3", True, "ROW,COL"),
        ("3,4,5", True, "ROW,COL"),
        ("3,-4", True, "ROW,COL"),
        ("a,b", True, "ROW,COL"),
        ("", True, "ROW,COL"),
        ("1,1;", True, "ROW,COL"),
        (";".join(f"{i},{i}" for i in range(9)), True, "at most 8"),
        ("1,2", False, "--report"),
    ],
)
def test_bad_spectra_pixels_are_a_usage_error_before_any_work(cube, tmp_path, value, report, expected) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    args = ["run", str(cube), "-o", str(folder / "out.hdr"), "--spatial", "dct", "--spectra-pixels", value]
    if report:
        args += ["--report", str(folder / "report")]
    line = one_line_refusal(CliRunner().invoke(app, args), folder, set())
    assert expected in line, line


# --------------------------------------------------------------------------------------- train/finetune threads


@pytest.mark.parametrize("command", ["train", "finetune"])
@pytest.mark.parametrize(("option", "environment", "expected"), [((), "2", 2), (("--threads", "1"), "2", 1)])
def test_training_commands_take_threads(tmp_path, threads_restored, command, option, environment, expected) -> None:
    """The training loop is replaced by a stand-in that records the thread count it was called with."""
    import torch

    from hsidenoise import training

    seen: dict[str, int] = {}

    def stand_in(cfg, *args, **kwargs):
        seen["torch"] = torch.get_num_threads()
        return SimpleNamespace(weights=None, checkpoint=tmp_path / "checkpoint.pt", steps=0, epochs=0,
                               wall_time_s=0.0, validation=None)  # fmt: skip

    threads_restored.setattr(training, "fit", stand_in)
    threads_restored.setattr(training, "finetune", stand_in)
    threads_restored.setenv("OMP_NUM_THREADS", environment)
    torch.set_num_threads(5)
    extra = ["--from", str(tmp_path / "w.safetensors")] if command == "finetune" else []
    invoke(command, "--data", tmp_path, "--out", tmp_path / "out", "--json", *extra, *option)
    assert seen["torch"] == expected and os.environ["MKL_NUM_THREADS"] == str(expected)


def test_training_threads_below_one_is_a_usage_error(tmp_path) -> None:
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--threads", "0"])
    assert result.exit_code == 2 and not any(tmp_path.iterdir())
