#!/usr/bin/env bash
# Denoise every ENVI cube (*.hdr) of a folder into another folder, the way a pipeline step would.
#
#   examples/batch.sh IN_DIR OUT_DIR [extra `hsidenoise run` options]
#   examples/batch.sh scenes/ clean/ --method lowrank --report clean/reports
#
# One `hsidenoise run` call handles the whole folder: outputs are written to temporary files and renamed, and
# outputs that already exist are skipped, so running the script again after a kill resumes where it stopped
# (pass --overwrite to redo everything). The run's JSON document goes to OUT_DIR/summary.json (it describes
# the latest call; skipped cubes appear with "skipped": "output exists"). Exit status: 0 done, 1 no cube found
# or a cube or the run failed (one line on stderr; summary.json is then left as it was), 2 bad usage.
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

# OUT_DIR exists, so even a single cube is written as OUT_DIR/<name>.hdr.
summary=$out_dir/summary.json
partial=$(mktemp "$out_dir/.summary.json.XXXXXX")
trap 'rm -f -- "$partial"' EXIT
"$hsidenoise" run "${inputs[@]}" -o "$out_dir" "$@" --quiet --json >"$partial"
chmod 0644 -- "$partial"
mv -f -- "$partial" "$summary"
