#!/usr/bin/env bash
# The main job, end to end: set-up, local stack up, a worker on the default model and the
# auditor in the background, then one chat answered through Kafka (streamed).
# The stack and processes keep running afterwards; `make down` stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
LLMBUS=.venv/bin/llmbus
STATE="${LLMBUS_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/llmbus}"
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"

"$LLMBUS" up
mkdir -p "$STATE/logs"

start_bg() {  # name, then the llmbus arguments
  local name=$1; shift
  local pid_file="$STATE/$name.pid"
  if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$pid_file"))"
    return
  fi
  : > "$STATE/logs/$name.log"
  setsid "$LLMBUS" "$@" >>"$STATE/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$pid_file"
  echo "$name started (pid $!, log $STATE/logs/$name.log)"
}

start_bg auditor auditor
start_bg worker worker
# The first start compiles the model for this CPU (a few minutes, cached afterwards).
echo "waiting for the worker to load the model..."
for _ in $(seq 1 600); do
  grep -q '^worker .* serving' "$STATE/logs/worker.log" && break
  kill -0 "$(cat "$STATE/worker.pid")" 2>/dev/null || { tail -50 "$STATE/logs/worker.log"; exit 1; }
  sleep 1
done

question="${1:-What is the capital of France?}"
echo "> $question"
"$LLMBUS" chat --stream "$question"
echo
echo "Stack, worker and auditor keep running: try '.venv/bin/llmbus chat \"...\"'; stop with 'make down'."
