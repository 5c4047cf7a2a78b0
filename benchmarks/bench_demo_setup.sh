#!/usr/bin/env bash
# Cold `make demo`, before and after, side by side: wall time and virtualenv size of each, and their ratio.
#
#   bash benchmarks/bench_demo_setup.sh [BEFORE_REF] [ROUNDS]
#
# BEFORE_REF (default 28cbf5b, the last commit whose `make demo` built the full 2 GB .venv) and the working
# tree's HEAD are exported with `git archive` into a temporary folder; each round runs `make demo` in both, in
# alternating order, from no virtualenv and with pip's cache off (PIP_NO_CACHE_DIR=1), so both sides download
# or unpack every package. ffmpeg and the Debian packages are installed once before the first round and count
# for neither side. On a shared machine compare the ratio, not the seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
before_ref=${1:-28cbf5b}
rounds=${2:-1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git archive "$before_ref" | (mkdir -p "$work/before" && tar -x -C "$work/before")
git archive HEAD | (mkdir -p "$work/after" && tar -x -C "$work/after")
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
make -s -C "$work/after" system-deps >/dev/null 2>&1 || true

measure() {  # side -> "seconds megabytes"
  local dir="$work/$1" start end
  rm -rf "$dir/.venv" "$dir/.venv-demo"
  start=$(date +%s.%N)
  if ! make -C "$dir" demo >"$work/$1.log" 2>&1; then
    echo "make demo failed on the $1 side; the end of its output:" >&2
    tail -20 "$work/$1.log" >&2
    exit 1
  fi
  end=$(date +%s.%N)
  echo "$(echo "$end - $start" | bc) $(du -sm "$dir/.venv" "$dir/.venv-demo" 2>/dev/null | awk '{s += $1} END {print s}')"
}

for round in $(seq 1 "$rounds"); do
  if (( round % 2 )); then order="before after"; else order="after before"; fi
  declare -A secs=() size=()
  for side in $order; do
    read -r secs[$side] size[$side] < <(measure "$side")
  done
  printf 'round %d (load %s): before %.1f s, %s MB; after %.1f s, %s MB; after/before time %.2f, size %.2f\n' \
    "$round" "$(cut -d' ' -f1 /proc/loadavg)" "${secs[before]}" "${size[before]}" "${secs[after]}" "${size[after]}" \
    "$(echo "${secs[after]} / ${secs[before]}" | bc -l)" "$(echo "${size[after]} / ${size[before]}" | bc -l)"
done
