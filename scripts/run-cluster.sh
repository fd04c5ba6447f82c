#!/usr/bin/env bash
# Starts a throw-away local Redis Cluster of 3 primaries and 3 replicas, prints its seed nodes and
# the command that starts keyward in front of it, and keeps it running until Ctrl-C, which stops
# every node and deletes the cluster's temporary directory.
#
# Ports: CLUSTER_BASE_PORT (default 7001) to CLUSTER_BASE_PORT+5 for clients, and the same
# ports + 10000 for the cluster bus (Redis's default). If any of them is already taken, the script
# says which and stops: pick another range, e.g. CLUSTER_BASE_PORT=7101 scripts/run-cluster.sh
#
# Nothing is persisted: no RDB, no AOF; nodes-PORT.conf and the logs live in the temporary
# directory (kept on failure so that the logs can be read).
set -euo pipefail

base_port="${CLUSTER_BASE_PORT:-7001}"
node_count=6
replicas=1
ready_timeout_s=60

if ! [[ "$base_port" =~ ^[0-9]+$ ]] || [ "$base_port" -lt 1024 ] || [ $((base_port + node_count - 1 + 10000)) -gt 65535 ]; then
    echo "error: CLUSTER_BASE_PORT=$base_port: need 1024 <= port and port+$((node_count - 1))+10000 <= 65535" >&2
    exit 1
fi

for tool in redis-server redis-cli; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool not found: install the packages redis-server and redis-tools (Redis 7+)" >&2
        exit 1
    fi
done

ports=()
for i in $(seq 0 $((node_count - 1))); do
    ports+=($((base_port + i)))
done

# A port is taken when something accepts connections on it (Redis or anything else).
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
for port in "${ports[@]}"; do
    for p in "$port" $((port + 10000)); do
        if port_in_use "$p"; then
            echo "error: port $p is already in use; choose another range with CLUSTER_BASE_PORT" >&2
            exit 1
        fi
    done
done

dir="$(mktemp -d -t keyward-cluster.XXXXXX)"
pids=()
keep_dir=0

cleanup() {
    local status=$?
    if [ "${#pids[@]}" -gt 0 ]; then
        echo
        echo "==> stopping ${#pids[@]} cluster nodes"
        for pid in "${pids[@]}"; do
            kill "$pid" 2>/dev/null || true
        done
        for pid in "${pids[@]}"; do
            wait "$pid" 2>/dev/null || true
        done
    fi
    if [ "$keep_dir" -eq 1 ]; then
        echo "==> logs kept in $dir" >&2
    else
        rm -rf "$dir"
    fi
    exit "$status"
}
trap cleanup EXIT
# Ctrl-C reaches the nodes too (same process group) and they shut down on their own; cleanup
# still stops and reaps every one of them.
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
    echo "error: $*" >&2
    keep_dir=1
    exit 1
}

echo "==> starting $node_count redis-server nodes in $dir"
for port in "${ports[@]}"; do
    redis-server \
        --port "$port" \
        --cluster-enabled yes \
        --cluster-config-file "$dir/nodes-$port.conf" \
        --cluster-node-timeout 2000 \
        --save "" \
        --appendonly no \
        --bind 127.0.0.1 \
        --dir "$dir" \
        --daemonize no \
        >"$dir/node-$port.log" 2>&1 &
    pids+=($!)
done

for i in "${!ports[@]}"; do
    port="${ports[$i]}"
    for _ in $(seq 1 100); do
        if redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null | grep -q PONG; then
            break
        fi
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            cat "$dir/node-$port.log" >&2
            fail "redis-server on port $port exited (log above)"
        fi
        sleep 0.1
    done
    redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null | grep -q PONG ||
        fail "redis-server on port $port did not answer PING within 10 s (log: $dir/node-$port.log)"
done

echo "==> redis-cli --cluster create (${node_count} nodes, $replicas replica per primary)"
addrs=()
for port in "${ports[@]}"; do
    addrs+=("127.0.0.1:$port")
done
if ! redis-cli --cluster create "${addrs[@]}" --cluster-replicas "$replicas" --cluster-yes \
    >"$dir/create.log" 2>&1; then
    cat "$dir/create.log" >&2
    fail "redis-cli --cluster create failed (output above)"
fi

# Ready: every node says cluster_state:ok with all slots served, and every replica is in sync.
echo "==> waiting for every node to report cluster_state:ok"
deadline=$((SECONDS + ready_timeout_s))
while :; do
    ready=1
    for port in "${ports[@]}"; do
        info="$(redis-cli -h 127.0.0.1 -p "$port" CLUSTER INFO 2>/dev/null || true)"
        if ! grep -q '^cluster_state:ok' <<<"$info" || ! grep -q '^cluster_slots_ok:16384' <<<"$info"; then
            ready=0
            break
        fi
        repl="$(redis-cli -h 127.0.0.1 -p "$port" INFO replication 2>/dev/null || true)"
        if grep -q '^role:slave' <<<"$repl" && ! grep -q '^master_link_status:up' <<<"$repl"; then
            ready=0
            break
        fi
    done
    if [ "$ready" -eq 1 ]; then
        break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        redis-cli -h 127.0.0.1 -p "${ports[0]}" CLUSTER NODES >&2 || true
        fail "the cluster did not become ready within ${ready_timeout_s} s (CLUSTER NODES above, logs in $dir)"
    fi
    sleep 0.2
done

primaries=()
replica_addrs=()
while read -r _id addr flags _rest; do
    addr="${addr%@*}"
    case ",$flags," in
        *,master,*) primaries+=("$addr") ;;
        *,slave,*) replica_addrs+=("$addr") ;;
    esac
done < <(redis-cli -h 127.0.0.1 -p "${ports[0]}" CLUSTER NODES | sort -t: -k2 -n)

seeds="$(IFS=,; echo "${primaries[*]}")"
cat <<EOF

Redis Cluster is up (3 primaries, 3 replicas; data and logs in $dir):
  primaries: ${primaries[*]}
  replicas:  ${replica_addrs[*]}
  seeds:     $seeds

Check it:    redis-cli -c -p ${ports[0]} CLUSTER SHARDS

Start keyward in front of it (in another terminal, after cargo build --release):
  target/release/keyward --cluster --upstream $seeds --listen 127.0.0.1:6380
then talk to keyward like to one ordinary Redis:
  redis-cli -p 6380

Press Ctrl-C to stop the cluster.
EOF

# Wait in the foreground; stop early (and say so) if a node dies on its own.
while :; do
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            echo "warning: the node on port ${ports[$i]} has exited (log: $dir/node-${ports[$i]}.log)" >&2
            unset 'pids[i]'
        fi
    done
    if [ "${#pids[@]}" -eq 0 ]; then
        fail "every cluster node has exited"
    fi
    # `wait` (unlike a foreground `sleep`) returns as soon as Ctrl-C arrives, so the trap runs
    # before this loop can mistake the nodes' own shutdown for a crash.
    sleep 1 &
    wait $! || true
done
