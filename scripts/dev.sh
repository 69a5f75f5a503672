#!/usr/bin/env bash
# Runs the local upstream (127.0.0.1:8788) and the Worker in `wrangler dev` (127.0.0.1:8787)
# with the local configuration from wrangler.toml and dev.env. Ctrl-C stops both.
# Gateway state persists in .dev-state/, so a restart keeps jobs.
set -euo pipefail
cd "$(dirname "$0")/.."

UPSTREAM_ADDR=127.0.0.1:8788
GATEWAY_PORT=8787
mkdir -p .dev-state

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

# Each server in its own process group, so stopping it stops its children too.
setsid target/release/local-upstream --addr "$UPSTREAM_ADDR" &
pids+=($!)
setsid wrangler dev --ip 127.0.0.1 --port "$GATEWAY_PORT" --persist-to .dev-state/wrangler \
  --env-file dev.env --show-interactive-dev-session=false &
pids+=($!)

for _ in $(seq 1 600); do
  if curl -fs -o /dev/null -X OPTIONS "http://127.0.0.1:$GATEWAY_PORT/"; then break; fi
  sleep 0.5
done

# Play the backend: mint a browser token for the demo page with the server key.
token=$(curl -fs -H 'Authorization: Bearer dev-key' -d '{"models": ["demo"], "chains": ["demo-chain"],
  "operations": ["predict", "async_predict", "status", "cancel", "wake", "sync"],
  "origins": ["http://127.0.0.1:'"$GATEWAY_PORT"'"], "ttl_seconds": 3600}' \
  "http://127.0.0.1:$GATEWAY_PORT/browser_tokens" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).token))') \
  || token="<could not mint a token: is the gateway up? see its output above>"

cat <<MSG

  edge-predict is running.
    gateway:        http://127.0.0.1:$GATEWAY_PORT   (key: dev-key)
    local upstream: http://$UPSTREAM_ADDR   (model: demo, chain: demo-chain)

  Try:
    curl -s -H 'Authorization: Bearer dev-key' -d '{"prompt": "hello"}' \\
      http://127.0.0.1:$GATEWAY_PORT/models/demo/production/predict

    curl -s -H 'Authorization: Bearer dev-key' -d '{"model_input": {"prompt": "hello"}}' \\
      http://127.0.0.1:$GATEWAY_PORT/models/demo/production/async_predict
    curl -s -H 'Authorization: Bearer dev-key' http://127.0.0.1:$GATEWAY_PORT/async_request/<request_id>

  Demo page (valid for an hour; restart for a new token):
    http://127.0.0.1:$GATEWAY_PORT/demo/#token=$token

  Ctrl-C stops both servers.
MSG
wait -n "${pids[@]}"
