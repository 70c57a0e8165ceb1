"""Scale-out: `run --shard K/N` shares and two torchrun ranks on CPU (gloo) against one process.

These are the README's batch recipes in reduced form: a Slurm job array / GNU parallel / xargs -P each run one
`--shard K/N` (here: three shards of a four-cube folder, one after the other), and torchrun on one node
(here: two CPU ranks). "The same outputs" means the same data bytes and the same header, apart from the
provenance's command line and date, which honestly differ between two runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hsidenoise.cli import app
from hsidenoise.cube import Cube, CubeMeta
from hsidenoise.errors import ConfigError
from hsidenoise.io import write_cube
from hsidenoise.scaleout import Ranks, Shard

REPO = Path(__file__).resolve().parents[1]
LOWRANK = ("--method", "lowrank", "--spatial", "dct")
"""The weight-free method, with the DCT eigen-image denoiser: a real denoiser that runs in well under a second."""


@pytest.fixture
def campaign(tmp_path: Path) -> Path:
    """``tmp_path/lines``: four tiny ENVI cubes of odd sizes (a campaign's flight lines) and a README."""
    folder = tmp_path / "lines"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i, (bands, rows, cols) in enumerate([(7, 13, 11), (5, 9, 17), (9, 11, 9), (7, 15, 13)]):
        signal = np.linspace(0.2, 0.8, bands)[:, None, None] * np.ones((bands, rows, cols))
        noisy = signal + 0.05 * rng.standard_normal((bands, rows, cols))
        meta = CubeMeta(wavelengths=np.linspace(450.0, 900.0, bands), wavelength_units="nm")
        write_cube(folder / f"line_{i:02d}.hdr", Cube(noisy.astype(np.float32), meta))
    (folder / "README.txt").write_text("flight lines")
    return folder


def outputs(folder: Path) -> dict[str, bytes]:
    """Every file of an output folder as bytes, with the provenance lines that name the command or the date
    (they differ between any two runs) taken out of the ENVI headers."""
    files = {}
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        if path.suffix == ".hdr":
            kept = [
                line
                for line in data.decode().splitlines()
                if not line.replace(" ", "").startswith(("hsidenoisecommand=", "hsidenoisedate="))
            ]
            data = "\n".join(kept).encode()
        files[path.name] = data
    return files


def cli(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result.exit_code, result.stdout, result.stderr


# ------------------------------------------------------------------------------------------------- shards


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 12])
def test_shards_cover_every_input_exactly_once(count):
    names = [f"scenes/line_{i:02d}.hdr" for i in range(10)]
    given = [names[i] for i in np.random.default_rng(count).permutation(len(names))]  # any command-line order
    shares = [Shard(index, count).select(given) for index in range(count)]
    assert sorted(name for share in shares for name in share) == sorted(names)  # all, none twice
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert [set(Shard(index, count).select(names)) for index in range(count)] == [set(s) for s in shares]
    for share in shares:  # a share keeps the given order
        assert share == [name for name in given if name in share]


def test_shard_syntax():
    assert Shard.parse("0/4") == Shard(0, 4) and Shard.parse(" 3 / 4 ") == Shard(3, 4)
    for text in ("4/4", "1/0", "-1/4", "1", "a/b", "1/2/3", ""):
        with pytest.raises(ConfigError, match="--shard"):
            Shard.parse(text)


@pytest.mark.parametrize("text", ["3/3", "x", "1/0", "-1/3"])
def test_a_bad_shard_is_a_usage_error(campaign, tmp_path, text):
    code, stdout, stderr = cli("run", campaign, "-o", tmp_path / "out", "--method", "identity", "--shard", text)
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1 and "--shard" in stderr
    assert not (tmp_path / "out").exists()


def test_three_shards_one_after_the_other_write_what_one_process_writes(campaign, tmp_path):
    code, _, stderr = cli("run", campaign, "-o", tmp_path / "one", *LOWRANK, "--json")
    assert code == 0, stderr
    documents = []
    for index in range(3):  # what `--array=0-2` with --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT runs
        code, stdout, stderr = cli("run", f"{campaign}/*.hdr", "-o", tmp_path / "shared", *LOWRANK, "--shard",
                                   f"{index}/3", "--json")  # fmt: skip
        assert code == 0, stderr
        documents.append(json.loads(stdout))
    assert outputs(tmp_path / "shared") == outputs(tmp_path / "one")
    assert len(outputs(tmp_path / "one")) == 8  # four header + data pairs
    shares = [[Path(run["input"]).name for run in document["runs"]] for document in documents]
    assert shares == [["line_00.hdr", "line_03.hdr"], ["line_01.hdr"], ["line_02.hdr"]]  # round robin
    assert [document["summary"]["shard"] for document in documents] == ["0/3", "1/3", "2/3"]
    code, stdout, _ = cli("run", campaign, "-o", tmp_path / "shared", *LOWRANK, "--shard", "0/5", "--json")
    assert code == 0 and json.loads(stdout)["summary"]["skipped"] == 1  # a re-run of a share resumes it
    code, stdout, _ = cli("run", campaign, "-o", tmp_path / "none", *LOWRANK, "--shard", "4/5", "--json")
    assert code == 0 and json.loads(stdout)["runs"] == []  # more shares than inputs: an empty share is fine


# ------------------------------------------------------------------------------------------------- torchrun


def test_ranks_from_the_environment():
    assert Ranks.from_env({}) is None
    assert Ranks.from_env({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}) is None  # one process: no launch
    ranks = Ranks.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert ranks == Ranks(3, 4, 1) and ranks.shard == Shard(3, 4)
    assert ranks.device("cpu") == "cpu"
    for bad in ({"RANK": "4", "WORLD_SIZE": "4"}, {"RANK": "x", "WORLD_SIZE": "2"}):
        with pytest.raises(ConfigError):
            Ranks.from_env(bad)


def subprocess_env() -> dict[str, str]:
    """The environment of the CLI processes: one thread each (as torchrun sets it), no GPU, no launch."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def hsidenoise(*args: object, launcher: tuple[str, ...] = (sys.executable, "-m")) -> subprocess.CompletedProcess:
    """``LAUNCHER hsidenoise run ARGS`` (by default ``python -m hsidenoise run ARGS``) in its own process(es)."""
    command = [*launcher, "hsidenoise", "run", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def campaign_with_a_bad_line(tmp_path_factory) -> tuple[list[Path], Path, dict]:
    """The inputs (the campaign folder and one garbage GeoTIFF), and one plain process's output folder and
    --json document for them: the reference of the launcher tests."""
    root = tmp_path_factory.mktemp("campaign")
    folder = root / "lines"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i, (bands, rows, cols) in enumerate([(7, 13, 11), (5, 9, 17), (9, 11, 9), (7, 15, 13)]):
        noisy = np.linspace(0.2, 0.8, bands)[:, None, None] + 0.05 * rng.standard_normal((bands, rows, cols))
        write_cube(folder / f"line_{i:02d}.hdr", Cube(noisy.astype(np.float32), CubeMeta()))
    bad = root / "line_04.tif"
    bad.write_bytes(b"garbage" * 40)
    single = hsidenoise(folder, bad, *LOWRANK, "--json", "-o", root / "one")
    assert single.returncode == 1, single.stderr  # the bad cube fails the batch, after the others are written
    assert len(outputs(root / "one")) == 8  # four header + data pairs
    return [folder, bad], root / "one", json.loads(single.stdout)


def test_two_torchrun_ranks_on_cpu_write_what_one_process_writes(campaign_with_a_bad_line, tmp_path):
    """`torchrun --standalone --nproc-per-node 2 -m hsidenoise run ...` with gloo on the CPU: the same files,
    and one summary (rank 0's stdout) that also lists the failure of a cube another rank ran."""
    inputs, reference, one = campaign_with_a_bad_line
    launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m")
    launched = hsidenoise(*inputs, *LOWRANK, "--json", "-o", tmp_path / "ranks", launcher=launcher)
    assert launched.returncode != 0, launched.stderr  # torchrun reports the ranks' exit 1
    both = json.loads(launched.stdout)  # the whole of stdout is one document
    assert outputs(tmp_path / "ranks") == outputs(reference)
    assert [run["input"] for run in both["runs"]] == [run["input"] for run in one["runs"]]  # the plan's order
    assert [Path(fail["input"]).name for fail in both["failed"]] == ["line_04.tif"]
    assert both["summary"] == {**one["summary"], "ranks": 2}
    assert both["summary"]["inputs"] == 5 and both["summary"]["failed"] == 1


def test_two_shards_side_by_side_with_xargs_write_what_one_process_writes(campaign_with_a_bad_line, tmp_path):
    """`seq 0 1 | xargs -P 2 -I{} hsidenoise run ... --shard {}/2`: two processes at once into one folder."""
    inputs, reference, _ = campaign_with_a_bad_line
    result = subprocess.run(
        ["xargs", "-P", "2", "-I{}", sys.executable, "-m", "hsidenoise", "run", *map(str, inputs), *LOWRANK,
         "-o", str(tmp_path / "shared"), "--shard", "{}/2", "--quiet"],
        input="0\n1\n", capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=300,
    )  # fmt: skip
    assert result.returncode == 123, result.stderr  # xargs: some command (the bad cube's share) exited 1
    assert result.stdout == "" and result.stderr.count("failed") == 2  # its line and its count
    assert outputs(tmp_path / "shared") == outputs(reference)
