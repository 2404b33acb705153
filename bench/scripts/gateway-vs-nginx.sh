#!/usr/bin/env bash
# The gateway benchmark of docs/benchmarks.md: agent → spike-gateway (resolve, substitute,
# scrub) → upstream, against agent → nginx reverse proxy → the same upstream, with the same
# load client (oha) in one run; then SSE latency through the gateway against a direct
# connection (spike-bench sse). Everything is on loopback and bounded in time.
#
# Needs: nginx (Debian), oha (cargo install oha), and a release build:
#   cargo build --release -p spike-bench
# Usage: bench/scripts/gateway-vs-nginx.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
conns=${2:-32}
bench=target/release/spike-bench
for tool in nginx oha "$bench"; do
  command -v "$tool" >/dev/null || [ -x "$tool" ] || { echo "missing: $tool" >&2; exit 2; }
done
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; nginx -p "$dir" -c nginx.conf -s stop 2>/dev/null; rm -rf "$dir"' EXIT
key=sk-bench-0123456789abcdefghij
# A chat-completion-sized answer (about 600 bytes), only for the real key.
answer='{"id":"chatcmpl-bench","object":"chat.completion","created":1764633600,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":48,"total_tokens":60}}'
mkdir -p "$dir/logs"
cat > "$dir/nginx.conf" <<CONF
worker_processes auto;
error_log logs/error.log warn;
pid nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  upstream api { server 127.0.0.1:8491; keepalive 128; }
  # The upstream: answers the real key only.
  server {
    listen 127.0.0.1:8491;
    location /v1/chat/completions {
      if (\$http_authorization != "Bearer $key") { return 401 '{"error":"invalid_api_key"}'; }
      default_type application/json;
      return 200 '$answer';
    }
  }
  # The peer: nginx as a reverse proxy that adds the key itself.
  server {
    listen 127.0.0.1:8492;
    location / {
      proxy_pass http://api;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer $key";
    }
  }
}
CONF
nginx -p "$dir" -c nginx.conf
"$bench" gateway --upstream 127.0.0.1:8491 --listen 127.0.0.1:8490 --max-time 10m > "$dir/gateway.out" 2>"$dir/gateway.err" &
for _ in $(seq 1 100); do grep -q '^token:' "$dir/gateway.out" 2>/dev/null && break; sleep 0.2; done
token=$(sed -n 's/^token: //p' "$dir/gateway.out")
[ -n "$token" ] || { cat "$dir/gateway.err" >&2; exit 1; }
body='{"model":"bench","messages":[{"role":"user","content":"hi"}]}'
run() { # name url
  oha --no-tui -z "${secs}s" -c "$conns" -m POST -T application/json -d "$body" \
    -H "Authorization: Bearer $token" "$2" --output-format json > "$dir/$1.json"
  python3 - "$1" "$dir/$1.json" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
s, p = r["summary"], r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
print(f"{name:8} {s['requestsPerSec']:10.0f} req/s   p50 {p['p50']*1000:6.2f} ms   p99 {p['p99']*1000:6.2f} ms   status {codes}")
PY
}
# Warm both, then measure alternately.
oha --no-tui -n 200 -c 4 -m POST -d "$body" -H "Authorization: Bearer $token" http://127.0.0.1:8490/r/up/v1/chat/completions >/dev/null
oha --no-tui -n 200 -c 4 -m POST -d "$body" http://127.0.0.1:8492/v1/chat/completions >/dev/null
for round in 1 2; do
  echo "round $round ($secs s, $conns connections)"
  run gateway http://127.0.0.1:8490/r/up/v1/chat/completions
  run nginx http://127.0.0.1:8492/v1/chat/completions
done
# The agent's side never holds the key.
curl -s -X POST -H "Authorization: Bearer $token" -d "$body" http://127.0.0.1:8490/r/up/v1/chat/completions | grep -q "$key" && { echo "key leaked" >&2; exit 1; }
echo "ok: the key never reached the client"
# SSE: first byte and per-event latency through the gateway against a direct connection.
"$bench" sse --streams 200 --events 20 --gap 5ms
