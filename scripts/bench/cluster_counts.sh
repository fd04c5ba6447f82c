#!/usr/bin/env bash
# What keyward --cluster spends per request in front of a 3-primary Redis Cluster, counted rather
# than timed: W6a (W1 through keyward: 50 clients, pipeline 16, SET then GET of one key) and W6b
# (REMOVEKEYS of 1000 keys over about 1000 slots, one call at a time).
#
#   scripts/bench/cluster_counts.sh BINARY [BINARY...]
#
# COUNT=callgrind (default): keyward runs under `valgrind --tool=callgrind` and the instructions
# of each workload are printed (per request for W6a, per call for W6b), start-up excluded.
# COUNT=perf: keyward runs natively under `perf stat` (system calls, epoll_wait calls, context
# switches and CPU time per request or per call) and the W6b calls are timed too.
# N: W6a requests per test (default 200000; callgrind 50000); R: W6b calls (default 300;
# callgrind 100).
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${COUNT:-callgrind}
if [ "$COUNT" = callgrind ]; then N=${N:-50000}; R=${R:-100}; else N=${N:-200000}; R=${R:-300}; fi
WORK=$(mktemp -d -t keyward-cluster-counts.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 600); do redis-cli -p "$1" PING >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

ports=()
for _ in 1 2 3; do
    p=$(free_port); bus=$(free_port)
    redis-server --port "$p" --cluster-enabled yes --cluster-config-file "$WORK/nodes-$p.conf" \
        --cluster-port "$bus" --cluster-node-timeout 5000 --save "" --appendonly no \
        --dir "$WORK" >"$WORK/node-$p.log" 2>&1 &
    pids+=($!)
    ports+=("$p")
done
for p in "${ports[@]}"; do wait_port "$p"; done
redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
    >"$WORK/create.log" 2>&1
for _ in $(seq 1 100); do
    ok=1
    for p in "${ports[@]}"; do
        redis-cli -p "$p" CLUSTER INFO | grep -q 'cluster_state:ok' || ok=0
    done
    [ "$ok" = 1 ] && break
    sleep 0.2
done

printf "%-24s %-10s %12s %12s %12s %12s %12s %12s\n" binary workload instr syscalls epoll_wait \
    ctxsw cpu_us us/call
for bin in "$@"; do
    kp=$(free_port)
    printf '[server]\nlisten = "127.0.0.1:%s"\n[upstream]\nmode = "cluster"\nnodes = [%s]\n[guard]\ndeny_commands = []\n' \
        "$kp" "$(printf '"127.0.0.1:%s",' "${ports[@]}" | sed 's/,$//')" >"$WORK/kw.toml"
    out="$WORK/callgrind.$(basename "$bin")"
    if [ "$COUNT" = callgrind ]; then
        valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --config "$WORK/kw.toml" \
            --log-level warn >"$WORK/keyward.log" 2>&1 &
    else
        "$bin" --config "$WORK/kw.toml" --log-level warn >"$WORK/keyward.log" 2>&1 &
    fi
    kpid=$!
    pids+=("$kpid")
    wait_port "$kp"
    begin() { # label
        if [ "$COUNT" = callgrind ]; then
            callgrind_control -d "before-$1" "$kpid" >/dev/null 2>&1
        else
            perf stat -x, -e raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait \
                -e context-switches,task-clock -p "$kpid" -o "$WORK/perf.$1" &
            perf_pid=$!
            sleep 0.3
        fi
    }
    end() { # label units
        if [ "$COUNT" = callgrind ]; then
            callgrind_control -d "$1" "$kpid" >/dev/null 2>&1
            instr=$(grep -l "^desc: Trigger: dump $1\$" "$out".* | xargs grep '^summary:' | awk '{print $2}')
            printf "%-24s %-10s %12.0f\n" "$(basename "$bin")" "$1" "$((instr / $2))"
        else
            kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
            python3 - "$WORK/perf.$1" "$2" "$(basename "$bin")" "$1" "${3:-}" <<'PY'
import sys
path, n, label, load, per_call = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
v = {}
for line in open(path):
    f = line.strip().split(",")
    if len(f) > 2 and f[0] and f[0][0].isdigit():
        v[f[2]] = float(f[0])
print("%-24s %-10s %12s %12.3f %12.3f %12.3f %12.2f %12s" % (
    label, load, "-", v["raw_syscalls:sys_enter"] / n, v["syscalls:sys_enter_epoll_wait"] / n,
    v["context-switches"] / n, v["task-clock"] * 1000 / n, per_call or "-"))
PY
        fi
    }
    redis-benchmark -p "$kp" -c 50 -P 16 -n 20000 -t set,get -q >/dev/null 2>&1 # warm-up
    begin W6a
    redis-benchmark -p "$kp" -c 50 -P 16 -n "$N" -t set,get -q >/dev/null 2>&1
    end W6a "$((2 * N))"
    # W6b: the keys are written straight to their primaries (not counted), then removed through
    # keyward one call of 1000 at a time.
    python3 - "$kp" "$R" "$WORK/w6b.times" "${ports[@]}" <<'PY' &
import os, signal, socket, sys, time
sys.path.insert(0, "scripts/bench")
from resp import Client, encode
import bench
kp, rounds, times = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ports = [int(p) for p in sys.argv[4:]]
owner = {}
with Client(ports[0]) as c:
    for entry in c.call("CLUSTER", "SLOTS"):
        for slot in range(entry[0], entry[1] + 1):
            owner[slot] = int(entry[2][1])
nodes = {p: Client(p) for p in ports}
proxy = Client(kp)
spent = []
for r in range(rounds + 1):
    keys = [b"kwbench:key:%08d" % (r * 1000 + i) for i in range(1000)]
    by_node = {}
    for k in keys:
        by_node.setdefault(owner[bench.key_slot(k)], []).append(k)
    for port, ks in by_node.items():
        nodes[port].sock.sendall(b"".join(encode("SET", k, "v") for k in ks))
        for _ in ks:
            nodes[port].read()
    if r == 0:
        # The first call only warms up; the counting starts after it.
        assert proxy.call("REMOVEKEYS", *keys) == 1000
        open(times + ".ready", "w").close()
        while not os.path.exists(times + ".go"):
            time.sleep(0.05)
        continue
    start = time.perf_counter()
    n = proxy.call("REMOVEKEYS", *keys)
    spent.append(time.perf_counter() - start)
    assert n == 1000, n
spent.sort()
open(times, "w").write("%.1f\n" % (spent[len(spent) // 2] * 1e6))
PY
    py=$!
    while [ ! -f "$WORK/w6b.times.ready" ]; do kill -0 "$py" 2>/dev/null || exit 1; sleep 0.05; done
    begin W6b
    touch "$WORK/w6b.times.go"
    wait "$py"
    end W6b "$R" "$(cat "$WORK/w6b.times")"
    rm -f "$WORK/w6b.times"*
    kill -TERM "$kpid"; wait "$kpid" 2>/dev/null || true
done
trap - EXIT
cleanup
[ -n "${KEEP:-}" ] && echo "work: $WORK" >&2 || rm -rf "$WORK"
