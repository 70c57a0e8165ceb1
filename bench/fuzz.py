"""Fuzz the readers with a fresh corpus: damaged and unusual files in every format through info, convert and run.

    .venv/bin/python bench/fuzz.py --files 1000 --seed 7           # about 2 minutes on 2 cores
    .venv/bin/python bench/fuzz.py --files 200 --seed 3 --show 20  # and print 20 of the bad outcomes

The corpus comes from ``tests/fuzz_corpus.py`` (the generator the suite's ``tests/test_fuzz.py`` uses with its
own seed). The cases run in a worker process, in process through Typer's CliRunner; when the worker dies of a
signal (a segfault in a library), the case it was on is counted as a crash and a new worker carries on with the
next one. The table counts outcomes per format and command: ok, clean error (exit 1, one ``error:`` line),
internal error, crash, non-finite output from finite input, leftover files, noise on stderr (tracebacks, Python
warnings, library messages), and any other bad outcome (exit 2, a changed input, an unreadable output).
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
COLUMNS = ("ok", "error", "internal", "crash", "non-finite", "leftover", "noise", "other")


def worker(cases_file: Path, start: int, results: Path, out_dir: Path, seed: int) -> None:
    """Run cases from index `start`, appending one JSON line per outcome (written before the next case)."""
    sys.path.insert(0, str(TESTS))
    import fuzz_corpus

    cases = pickle.loads(cases_file.read_bytes())
    with open(results, "a") as sink:
        for index in range(start, len(cases)):
            sink.write(json.dumps({"started": index}) + "\n")
            sink.flush()
            for outcome in fuzz_corpus.run_corpus([cases[index]], out_dir, seed=seed + index):
                record = {"index": index, "command": outcome.command, "verdict": outcome.verdict}
                record["detail"] = outcome.detail[:300]
                sink.write(json.dumps(record) + "\n")
                sink.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000, help="corpus size (cases; each runs 3 commands)")
    parser.add_argument("--seed", type=int, default=7, help="corpus seed (the suite uses 2026)")
    parser.add_argument("--show", type=int, default=10, help="bad outcomes to print after the table")
    parser.add_argument("--keep", type=Path, default=None, help="write the corpus here instead of a temp folder")
    parser.add_argument("--_worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        cases_file, start, results, out_dir = args._worker
        worker(Path(cases_file), int(start), Path(results), Path(out_dir), args.seed)
        return

    sys.path.insert(0, str(TESTS))
    import fuzz_corpus

    with tempfile.TemporaryDirectory(prefix="hsidenoise-fuzz-") as scratch:
        folder = args.keep or Path(scratch)
        cases = fuzz_corpus.make_corpus(folder / "in", args.seed, args.files)
        cases_file, results = Path(scratch) / "cases.pickle", Path(scratch) / "results.jsonl"
        cases_file.write_bytes(pickle.dumps(cases))
        start = 0
        while start < len(cases):
            command = [sys.executable, __file__, "--seed", str(args.seed), "--_worker"]
            command += [str(cases_file), str(start), str(results), str(folder / "out")]
            done = subprocess.run(command, capture_output=True, text=True)
            records = [json.loads(line) for line in results.read_text().splitlines()]
            last = max((r["started"] for r in records if "started" in r), default=start)
            if done.returncode == 0 and last == len(cases) - 1:
                break
            finished = {r["command"] for r in records if r.get("index") == last}
            for command_name in fuzz_corpus.COMMANDS:
                if command_name not in finished:  # the worker died on this one (the rest were not run)
                    record = {"index": last, "command": command_name, "verdict": "crash"}
                    record["detail"] = f"worker exit {done.returncode}: {done.stderr[-200:]}"
                    with open(results, "a") as sink:
                        sink.write(json.dumps(record) + "\n")
                    break
            start = last + 1
        records = [json.loads(line) for line in results.read_text().splitlines()]
    outcomes = [r for r in records if "verdict" in r]

    table: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for record in outcomes:
        column = record["verdict"] if record["verdict"] in COLUMNS else "other"
        table[(cases[record["index"]].kind, record["command"])][column] += 1
    print(f"bench/fuzz.py --files {args.files} --seed {args.seed}: {len(cases)} files, {len(outcomes)} runs\n")
    print("| format | command | " + " | ".join(COLUMNS) + " |")
    print("| --- | --- | " + " | ".join("---:" for _ in COLUMNS) + " |")
    totals: Counter = Counter()
    for (kind, command_name), counts in sorted(table.items()):
        totals.update(counts)
        print(f"| {kind} | {command_name} | " + " | ".join(str(counts[c]) for c in COLUMNS) + " |")
    print("| **all** | | " + " | ".join(f"**{totals[c]}**" for c in COLUMNS) + " |")
    bad = [r for r in outcomes if r["verdict"] not in ("ok", "error")]
    if bad:
        print(f"\n{len(bad)} bad outcomes; the first {min(args.show, len(bad))}:")
        for record in bad[: args.show]:
            case = cases[record["index"]]
            print(f"- {record['verdict']} {record['command']} {case.kind}/{case.mutation} {case.path.name}: "
                  f"{record['detail'][:200]}")  # fmt: skip


if __name__ == "__main__":
    main()
