#!/usr/bin/env bash
# One keyward binary with a setting off (A) and on (B), measured one after the other, alternating,
# with every process pinned to a CPU: Redis and redis-benchmark on CPU 0, keyward on CPU 1.
#
#   scripts/bench/ab_pinned.sh BINARY 'TOML for B' [REPS]
#   e.g. scripts/bench/ab_pinned.sh target/release/keyward $'[admin]\nlisten = "127.0.0.1:0"'
#
# Why pinned: on a 2-core machine, unpinned runs are bimodal (whether keyward and Redis share a
# core decides the round: W2 with shared connections measured about 75k or 115k requests/s from
# one round to the next), which hides a few percent of difference. Pinned, rounds agree within
# about 2%. For each mode (share_connections = false / true) and each repetition: W1
# (-c 50 -P 16, SET/GET) and W2 (-c 50, SET/GET) requests per second, A then B; prints the
# medians over the repetitions and the ratio B / A. Needs two CPUs, redis-server,
# redis-benchmark, taskset.
set -euo pipefail
bin=${1:?usage: $0 BINARY 'TOML for B' [REPS]}
extra=${2:?usage: $0 BINARY 'TOML for B' [REPS]}
reps=${3:-3}
W1_N=${W1_N:-800000}
W2_N=${W2_N:-150000}
work=$(mktemp -d -t keyward-ab.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rp=$(free_port); kp=$(free_port)
taskset -c 0 redis-server --port "$rp" --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do redis-cli -p "$rp" PING >/dev/null 2>&1 && break; sleep 0.1; done

rps() { # clients pipeline n -> "SET GET"
    taskset -c 0 redis-benchmark -p "$kp" -c "$1" -P "$2" -n "$3" -t set,get --csv 2>/dev/null |
        grep -E '^"(SET|GET)"' | cut -d, -f2 | tr -d '"' | tr '\n' ' '
}

results="$work/results.txt"
for share in false true; do
    for rep in $(seq 1 "$reps"); do
        for variant in A B; do
            {
                printf '[server]\nlisten = "127.0.0.1:%s"\n[upstream]\nnodes = ["127.0.0.1:%s"]\n' "$kp" "$rp"
                printf 'share_connections = %s\n[guard]\ndeny_commands = []\n' "$share"
                [ "$variant" = B ] && printf '%s\n' "$extra"
            } >"$work/proxy.toml"
            RUST_LOG=warn taskset -c 1 "$bin" --config "$work/proxy.toml" >"$work/keyward.log" 2>&1 &
            kpid=$!
            for _ in $(seq 1 50); do redis-cli -p "$kp" PING >/dev/null 2>&1 && break; sleep 0.1; done
            read -r w1set w1get <<<"$(rps 50 16 "$W1_N")"
            read -r w2set w2get <<<"$(rps 50 1 "$W2_N")"
            kill "$kpid"; wait "$kpid" 2>/dev/null || true
            echo "$share $variant $w1set $w1get $w2set $w2get" >>"$results"
            echo "share_connections=$share rep $rep $variant: W1 SET $w1set GET $w1get, W2 SET $w2set GET $w2get" >&2
        done
    done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
names = ["W1 SET", "W1 GET", "W2 SET", "W2 GET"]
print("\n| share_connections | measure | A (median) | B (median) | B / A |")
print("|---|---|---|---|---|")
for share in ("false", "true"):
    for i, name in enumerate(names):
        a = statistics.median(float(r[2 + i]) for r in rows if r[0] == share and r[1] == "A")
        b = statistics.median(float(r[2 + i]) for r in rows if r[0] == share and r[1] == "B")
        print(f"| {share} | {name} | {a:.0f} | {b:.0f} | {b / a:.3f}x |")
PY
