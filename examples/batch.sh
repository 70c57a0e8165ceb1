#!/usr/bin/env bash
# Denoise every ENVI cube (*.hdr) of a folder into another folder, the way a pipeline step would.
#
#   examples/batch.sh IN_DIR OUT_DIR [extra `hsidenoise run` options]
#   examples/batch.sh scenes/ clean/ --method lowrank --report clean/reports
#
# One `hsidenoise run` call handles the whole folder: outputs are written to temporary files and renamed, and
# outputs that already exist are skipped, so running the script again after a kill resumes where it stopped
# (pass --overwrite to redo everything). A cube that fails is recorded and the others still run. The run's JSON
# document goes to OUT_DIR/summary.json, always {"runs": [...], "failed": [...], "summary": {...}}; skipped
# cubes appear with "skipped": "output exists". Exit status: 0 done, 1 no cube found or a cube failed (one line
# on stderr per failure; summary.json lists them), 2 bad usage.
# The hsidenoise used: $HSIDENOISE if set, else the one on PATH, else this repository's .venv/bin/hsidenoise.
set -euo pipefail

usage() {
    echo "usage: $0 IN_DIR OUT_DIR [extra hsidenoise run options]" >&2
    exit 2
}
[[ $# -ge 2 ]] || usage
in_dir=${1%/}
out_dir=${2%/}
shift 2
[[ -n $in_dir && -n $out_dir ]] || usage  # '/' as a folder is not supported
[[ -d $in_dir ]] || { echo "error: input folder $in_dir does not exist" >&2; exit 2; }

repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
if [[ -n ${HSIDENOISE:-} ]]; then
    hsidenoise=$HSIDENOISE
elif command -v hsidenoise >/dev/null 2>&1; then
    hsidenoise=$(command -v hsidenoise)
elif [[ -x $repo_root/.venv/bin/hsidenoise ]]; then
    hsidenoise=$repo_root/.venv/bin/hsidenoise
else
    echo "error: hsidenoise not found on PATH nor in $repo_root/.venv; install it (see README.md)" >&2
    exit 1
fi

shopt -s nullglob
inputs=("$in_dir"/*.hdr)
shopt -u nullglob
if [[ ${#inputs[@]} -eq 0 ]]; then
    echo "error: no *.hdr cube in $in_dir" >&2
    exit 1
fi

mkdir -p -- "$out_dir"
if [[ "$(cd -- "$in_dir" && pwd -P)" == "$(cd -- "$out_dir" && pwd -P)" ]]; then
    echo "error: OUT_DIR must differ from IN_DIR (outputs keep the input names)" >&2
    exit 2
fi

# The folder (not the file list) is the input, so even a single cube is a batch: OUT_DIR/<name>.hdr, and the
# same JSON shape whatever the count.
summary=$out_dir/summary.json
partial=$(mktemp "$out_dir/.summary.json.XXXXXX")
trap 'rm -f -- "$partial"' EXIT
status=0
"$hsidenoise" run "$in_dir/*.hdr" -o "$out_dir/" "$@" --quiet --json >"$partial" || status=$?
if [[ -s $partial ]]; then  # a batch with failed cubes still prints its document: keep it
    chmod 0644 -- "$partial"
    mv -f -- "$partial" "$summary"
fi
exit "$status"
