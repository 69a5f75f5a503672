#!/usr/bin/env bash
# The README's Spin quick start, word for word: the local upstream (127.0.0.1:8788), then
# `spin build && spin up` in the repository (127.0.0.1:3000, spin.toml's local defaults,
# jobs in .spin/ so a restart keeps them). A scheduler posts /_sweep every 10 s, as a
# deployment's cron trigger would. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

setsid target/release/local-upstream --addr 127.0.0.1:8788 &
pids+=($!)
setsid bash -c 'while sleep 10; do curl -s -o /dev/null -X POST -H "Authorization: Bearer dev-key" http://127.0.0.1:3000/_sweep || true; done' &
pids+=($!)

cat <<'MSG'

  edge-predict on Spin: http://127.0.0.1:3000 (key: dev-key), local upstream on 127.0.0.1:8788.
    curl -s -H 'Authorization: Bearer dev-key' -d '{"prompt": "hello"}' \
      http://127.0.0.1:3000/models/demo/production/predict

MSG
setsid bash -c 'spin build && spin up' &
pids+=($!)
wait -n "${pids[@]}"
