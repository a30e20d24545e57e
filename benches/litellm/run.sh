#!/usr/bin/env bash
# CPU per request and memory of a LiteLLM proxy worker on the same mock
# vendor and the same machine as the Switchboard harness. Not run by CI:
# it installs LiteLLM from PyPI into a virtualenv (LITELLM_VENV, default
# target/litellm-venv).
#
#   benches/litellm/run.sh
#
# Then compare with `cpu.s1` and `cpu.s4-full` in target/bench/results.json
# (benches/run.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
venv="${LITELLM_VENV:-$target_dir/litellm-venv}"
cargo build --release -p switchboard-benches
bin="$target_dir/release"

if [ ! -x "$venv/bin/litellm" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet 'litellm[proxy]'
fi
"$venv/bin/pip" show litellm | sed -n 's/^Version: /litellm /p'

work=$(mktemp -d)
mock_port=19801
litellm_port=19802
cat > "$work/config.yaml" <<YAML
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: http://127.0.0.1:$mock_port/v1
      api_key: sk-bench
litellm_settings:
  telemetry: false
  drop_params: true
general_settings:
  master_key: sk-bench
YAML

cores=$(nproc)
last=$((cores - 1))
pin() { if command -v taskset > /dev/null && [ "$cores" -ge 2 ]; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }
# In the background, exec so that $! is the server itself.
pin_bg() { if command -v taskset > /dev/null && [ "$cores" -ge 2 ]; then exec taskset -c "$1" "${@:2}"; else exec "${@:2}"; fi; }

pin_bg "$last" "$bin/mock-vendor" --listen "127.0.0.1:$mock_port" &
mock_pid=$!
LITELLM_LOG=ERROR \
  pin_bg 0 "$venv/bin/litellm" --config "$work/config.yaml" --host 127.0.0.1 --port "$litellm_port" --num_workers 1 \
  > "$work/litellm.log" 2>&1 &
litellm_pid=$!
trap 'kill $litellm_pid $mock_pid 2> /dev/null || true; rm -rf "$work"' EXIT

for _ in $(seq 1 120); do
  if curl -s -o /dev/null "http://127.0.0.1:$litellm_port/health/liveliness"; then break; fi
  sleep 1
done
sleep 2
echo "idle RSS (MiB): $(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' /proc/$litellm_pid/status)"

pin "$last" "$bin/harness" --external "127.0.0.1:$litellm_port" --external-pid "$litellm_pid" --seconds 10
