#!/usr/bin/env bash
# Runs the Switchboard load harness: builds the gateway and the harness in
# release mode, then runs every scenario against the gateway and the bare
# proxy baseline in the same run.
#
#   benches/run.sh            full run (about 6 minutes on 2 cores)
#   benches/run.sh --short    instruction counts only, checked against
#                             benches/baseline.json (a few minutes)
#
# Other flags go to the harness (`--help`). Results: target/bench/results.json.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -p switchboard -p switchboard-benches
bin="$target_dir/release"

args=("--bin-dir" "$bin")
if [[ " $* " == *" --short "* ]]; then
  # Refreshing the baseline (`--out benches/baseline.json`) skips the check.
  if [[ " $* " != *" --out "* ]]; then
    args+=("--baseline" "benches/baseline.json" "--out" "$target_dir/bench/short.json")
  fi
elif [[ " $* " != *" --out "* ]]; then
  args+=("--out" "$target_dir/bench/results.json")
fi

# The load generator and the mock vendor run on the last core, the server
# under test on core 0 (the harness pins its children with taskset).
cores=$(nproc)
if command -v taskset > /dev/null && [ "$cores" -ge 2 ]; then
  last=$((cores - 1))
  exec taskset -c "$last" "$bin/harness" --server-cores 0 --client-cores "$last" "${args[@]}" "$@"
else
  exec "$bin/harness" "${args[@]}" "$@"
fi
