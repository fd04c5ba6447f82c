#!/usr/bin/env bash
# Starts a throw-away local Redis under Sentinel: a primary, two replicas and three sentinels
# watching it as "mymaster", prints the command that starts keyward in front of it, and keeps it
# all running until Ctrl-C, which stops every process and deletes the temporary directory.
#
# Ports: SENTINEL_BASE_PORT (default 7201): the primary on it, the replicas on +1 and +2, the
# sentinels on +10, +11 and +12. If any is taken, the script says which and stops.
#
# Try a failover while keyward runs:
#   redis-cli -p $((SENTINEL_BASE_PORT + 10)) SENTINEL FAILOVER mymaster
# keyward logs "primary of 'mymaster' is now ..." within about a second of the sentinels.
set -euo pipefail

base="${SENTINEL_BASE_PORT:-7201}"
data_ports=("$base" $((base + 1)) $((base + 2)))
sentinel_ports=($((base + 10)) $((base + 11)) $((base + 12)))

for tool in redis-server redis-cli; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool not found: install the packages redis-server and redis-tools" >&2
        exit 1
    fi
done
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "${data_ports[@]}" "${sentinel_ports[@]}"; do
    if port_in_use "$port"; then
        echo "error: port $port is taken; pick another range: SENTINEL_BASE_PORT=7301 $0" >&2
        exit 1
    fi
done

dir="$(mktemp -d -t keyward-sentinel.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

wait_ping() {
    for _ in $(seq 1 100); do
        redis-cli -p "$1" PING >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "error: nothing answers PING on port $1; logs in $dir" >&2
    trap - EXIT
    exit 1
}

primary="${data_ports[0]}"
for port in "${data_ports[@]}"; do
    args=(--port "$port" --save "" --appendonly no --dir "$dir" --logfile "$dir/redis-$port.log")
    [ "$port" != "$primary" ] && args+=(--replicaof 127.0.0.1 "$primary")
    redis-server "${args[@]}" &
    pids+=($!)
    wait_ping "$port"
done
for port in "${sentinel_ports[@]}"; do
    cat >"$dir/sentinel-$port.conf" <<EOF
port $port
sentinel monitor mymaster 127.0.0.1 $primary 2
sentinel down-after-milliseconds mymaster 2000
sentinel failover-timeout mymaster 10000
sentinel parallel-syncs mymaster 1
EOF
    redis-server "$dir/sentinel-$port.conf" --sentinel --logfile "$dir/sentinel-$port.log" &
    pids+=($!)
    wait_ping "$port"
done

list=""
for port in "${sentinel_ports[@]}"; do list="${list:+$list,}127.0.0.1:$port"; done
echo "Redis under Sentinel: primary 127.0.0.1:$primary, replicas ${data_ports[1]} and ${data_ports[2]}, sentinels $list"
echo "start keyward in front of it:"
echo "  cargo run --release -- --sentinel mymaster --upstream $list"
echo "a failover: redis-cli -p ${sentinel_ports[0]} SENTINEL FAILOVER mymaster"
echo "Ctrl-C stops everything"
wait
