#!/usr/bin/env bash
# Starts keyward on 127.0.0.1:6380 in front of a Redis on 127.0.0.1:6379.
# If nothing answers on 6379, a throw-away redis-server (no persistence) is started there and
# stopped again when this script ends. Ctrl-C stops both.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            echo "error: redis-server/redis-cli are missing and this user cannot install them" >&2
            echo "       (not root, no sudo): install the packages redis-server and redis-tools" >&2
            exit 1
        fi
    fi
    echo "==> installing redis-server and redis-tools (apt-get)"
    $sudo apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools
fi

redis_pid=""
redis_log=""
cleanup() {
    if [ -n "$redis_pid" ]; then
        echo "==> stopping the local redis-server (pid $redis_pid)"
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    if [ -n "$redis_log" ]; then
        rm -f "$redis_log"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if redis-cli -h 127.0.0.1 -p 6379 PING >/dev/null 2>&1; then
    echo "==> a Redis already answers on 127.0.0.1:6379: using it"
else
    redis_log="$(mktemp -t keyward-redis.XXXXXX.log)"
    echo "==> starting redis-server on 127.0.0.1:6379 (log: $redis_log)"
    redis-server --port 6379 --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
        >"$redis_log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 1 100); do
        if redis-cli -h 127.0.0.1 -p 6379 PING >/dev/null 2>&1; then
            break
        fi
        if ! kill -0 "$redis_pid" 2>/dev/null; then
            echo "error: redis-server did not start; its log:" >&2
            cat "$redis_log" >&2
            exit 1
        fi
        sleep 0.1
    done
    if ! redis-cli -h 127.0.0.1 -p 6379 PING >/dev/null 2>&1; then
        echo "error: redis-server did not answer PING within 10 s; its log:" >&2
        cat "$redis_log" >&2
        exit 1
    fi
fi

echo "==> cargo build --release"
cargo build --release

echo "keyward is listening on 127.0.0.1:6380 — connect with: redis-cli -p 6380"
echo "metrics, health and readiness: http://127.0.0.1:9180/metrics, /healthz, /readyz, /config"
echo "HTTP API: http://127.0.0.1:7380/v1/keys/remove (README \"The HTTP API\")"
# Not exec: the EXIT trap must still stop the redis-server started above.
target/release/keyward --listen 127.0.0.1:6380 --upstream 127.0.0.1:6379 \
    --admin-listen 127.0.0.1:9180 --http-listen 127.0.0.1:7380
