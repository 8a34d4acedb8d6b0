#!/usr/bin/env bash
# Start the local Relationship Service simulator and run the notifier against it
# (config/demo.yaml: SQLite state, stdout + jsonl sinks). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PORT=${SIM_PORT:-8080}
mkdir -p var
containers=$(grep -oE 'container_id: *[0-9a-f-]{36}|- [0-9a-f-]{36}' config/demo.yaml \
  | grep -oE '[0-9a-f-]{36}' | sort -u)
args=()
for c in $containers; do args+=(--container "$c"); done
"$PY" -m notifier simulate --port "$PORT" "${args[@]}" --relationships 5 --change-rate 1 \
  --access-token demo-access-token --rpm 120 >var/simulator.log 2>&1 &
sim=$!
trap 'kill $sim 2>/dev/null || true; wait $sim 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  if (echo >/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null; then break; fi
  sleep 0.1
done
echo "simulator on http://127.0.0.1:$PORT (log: var/simulator.log); events below, Ctrl-C to stop" >&2
"$PY" -m notifier run --config config/demo.yaml
