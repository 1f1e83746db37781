#!/usr/bin/env bash
# Stops the demo's worker and auditor (SIGTERM: they finish in-flight work), then the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="${LLMBUS_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/llmbus}"
for name in worker auditor; do
  pid_file="$STATE/$name.pid"
  if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    kill -TERM "$(cat "$pid_file")"
    # The worker's grace period for in-flight requests is 30 s by default.
    for _ in $(seq 1 40); do kill -0 "$(cat "$pid_file")" 2>/dev/null || break; sleep 1; done
    echo "$name stopped"
  fi
  rm -f "$pid_file"
done
[ -x .venv/bin/llmbus ] && .venv/bin/llmbus down "$@"
