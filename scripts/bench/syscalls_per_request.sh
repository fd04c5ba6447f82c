#!/usr/bin/env bash
# System calls, sleeps and CPU per request of a proxy in front of one Redis: keyward with shared
# connections (one or more binaries) and twemproxy, under W2 (50 clients, no pipelining) and W1
# (50 clients, pipeline 16). Counts, unlike requests per second, hardly move with what else the
# machine is doing.
#
#   scripts/bench/syscalls_per_request.sh BINARY [BINARY...]
#
# Counted with `perf stat` on kernel tracepoints (no strace: tracing every call slows the proxy
# down so much that it batches differently): per request, the proxy's system calls, epoll_wait
# calls, reads that found nothing (EAGAIN), writes, epoll_ctl calls, context switches (sleeps in
# epoll_wait) and CPU microseconds, and the CPU microseconds per request of Redis and of
# redis-benchmark in the same run: on 2 cores the three share, so a proxy that makes Redis or the
# client work harder loses throughput too. N requests each of SET and GET (env N, default
# 100000); ROUNDS runs of each (env, default 1), the proxies taking turns.
set -euo pipefail
N=${N:-100000}
ROUNDS=${ROUNDS:-1}
LOADS=${LOADS:-"1 16"}
WORK=$(mktemp -d -t keyward-syscalls.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do redis-cli -p "$1" PING >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

rp=$(free_port)
redis-server --port "$rp" --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
rpid=$!
pids+=("$rpid")
wait_port "$rp"

start_proxy() { # name binary -> sets ppid, pport
    pport=$(free_port)
    if [ "$1" = twemproxy ]; then
        printf 'bench:\n  listen: 127.0.0.1:%s\n  redis: true\n  hash: fnv1a_64\n  distribution: ketama\n  server_connections: 1\n  preconnect: true\n  auto_eject_hosts: false\n  servers:\n   - 127.0.0.1:%s:1\n' \
            "$pport" "$rp" >"$WORK/nc.yml"
        nutcracker -c "$WORK/nc.yml" -s "$(free_port)" -a 127.0.0.1 -o "$WORK/nc.log" >/dev/null 2>&1 &
    else
        printf '[server]\nlisten = "127.0.0.1:%s"\n[upstream]\nnodes = ["127.0.0.1:%s"]\nshare_connections = true\n[guard]\ndeny_commands = []\n' \
            "$pport" "$rp" >"$WORK/proxy.toml"
        "$2" --config "$WORK/proxy.toml" --log-level warn >"$WORK/keyward.log" 2>&1 &
    fi
    ppid=$!
    pids+=("$ppid")
    wait_port "$pport"
}

events=raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl
events=$events,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_sendto
events=$events,context-switches,task-clock

printf "%-22s %-4s %9s %9s %9s %9s %9s %9s %9s %9s %9s %9s\n" proxy load req/s syscalls epoll_wait \
    EAGAIN writes epoll_ctl ctxsw cpu_us redis_us bench_us
run() { # label name binary pipeline
    local pipeline=$4
    start_proxy "$2" "$3"
    redis-benchmark -p "$pport" -c 50 -P "$pipeline" -n "$N" -t set,get -q >/dev/null # warm-up
    perf stat -x, -e "$events" -e syscalls:sys_exit_recvfrom,syscalls:sys_exit_read --filter 'ret < 0' \
        -p "$ppid" -o "$WORK/proxy.perf" &
    local perf_proxy=$!
    perf stat -x, -e task-clock -p "$rpid" -o "$WORK/redis.perf" &
    local perf_redis=$!
    sleep 0.3
    perf stat -x, -e task-clock -o "$WORK/bench.perf" -- \
        redis-benchmark -p "$pport" -c 50 -P "$pipeline" -n "$N" -t set,get --csv >"$WORK/bench.csv"
    kill -INT "$perf_proxy" "$perf_redis"; wait "$perf_proxy" "$perf_redis" 2>/dev/null || true
    kill "$ppid"; wait "$ppid" 2>/dev/null || true
    python3 - "$WORK" "$((2 * N))" "$1" "$([ "$pipeline" = 1 ] && echo W2 || echo W1)" <<'PY'
import sys, os
work, n, label, load = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def read(name):
    out = {}
    for line in open(os.path.join(work, name)):
        f = line.strip().split(",")
        if len(f) > 2 and f[0] and f[0][0].isdigit():
            out[f[2]] = out.get(f[2], 0.0) + float(f[0])
    return out
p, r, b = read("proxy.perf"), read("redis.perf"), read("bench.perf")
rps = [float(l.split(",")[1].strip('"')) for l in open(os.path.join(work, "bench.csv"))
       if l.startswith('"SET"') or l.startswith('"GET"')]
eagain = p.get("syscalls:sys_exit_recvfrom", 0) + p.get("syscalls:sys_exit_read", 0)
writes = sum(p.get("syscalls:sys_enter_" + w, 0) for w in ("writev", "write", "sendto"))
print("%-22s %-4s %9.0f %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f %9.2f %9.2f %9.2f" % (
    label, load, sum(rps) / len(rps), p["raw_syscalls:sys_enter"] / n,
    p["syscalls:sys_enter_epoll_wait"] / n, eagain / n, writes / n,
    p["syscalls:sys_enter_epoll_ctl"] / n, p["context-switches"] / n,
    p["task-clock"] * 1000 / n, r["task-clock"] * 1000 / n, b["task-clock"] * 1000 / n))
PY
}
for _ in $(seq 1 "$ROUNDS"); do
    for pipeline in $LOADS; do
        run twemproxy twemproxy "" "$pipeline"
        for bin in "$@"; do
            run "$(basename "$bin")" keyward "$bin" "$pipeline"
        done
    done
done
trap - EXIT
cleanup
rm -rf "$WORK"
