#!/usr/bin/env bash
# Instructions keyward executes for a fixed workload, per binary and mode, counted by callgrind:
# repeatable whatever else the machine is doing, where requests per second on a shared 2-core
# machine move by 10-30% from run to run. For refactors that must not cost performance.
#
#   scripts/bench/callgrind_compare.sh BINARY [BINARY...]
#
# For each binary and each standalone mode (share_connections = false / true): a fresh
# redis-server, keyward under `valgrind --tool=callgrind`, then redis-benchmark W1 (-c 50 -P 16)
# and W2 (-c 50) with N requests each of SET and GET (N: env N, default 50000), one REMOVEKEYS of
# 1000 keys repeated R times (env R, default 200), and SIGTERM. Prints keyward's total
# instruction count (start-up and shutdown included, the same for every binary) per run, and
# the part of it spent in each workload (callgrind_control dumps the counters between them):
# W1 and W2 per request, W4 per REMOVEKEYS.
# EXTRA_TOML (optional) is appended to every configuration; with ALSO_TOML set, every binary
# runs a second time with that appended instead (e.g. metrics off, then on:
# ALSO_TOML=$'[admin]\nlisten = "127.0.0.1:0"').
set -euo pipefail
N=${N:-50000}
R=${R:-200}
WORK=$(mktemp -d -t keyward-callgrind.XXXXXX)
[ -n "${KEEP:-}" ] && echo "work: $WORK" >&2
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do redis-cli -p "$1" PING >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

printf "%-40s %-8s %16s %10s %10s %10s\n" binary mode instructions W1/req W2/req W4/call
variants=("${EXTRA_TOML:-}")
[ -n "${ALSO_TOML:-}" ] && variants+=("$ALSO_TOML")
for bin in "$@"; do
 for variant in "${!variants[@]}"; do
  for shared in false true; do
    rp=$(free_port); kp=$(free_port)
    redis-server --port "$rp" --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
    rpid=$!
    wait_port "$rp"
    cat >"$WORK/proxy.toml" <<EOF
[server]
listen = "127.0.0.1:$kp"
[upstream]
nodes = ["127.0.0.1:$rp"]
share_connections = $shared
[guard]
deny_commands = []
${variants[$variant]}
EOF
    out="$WORK/callgrind.$(basename "$bin").$variant.$shared"
    RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" \
      --config "$WORK/proxy.toml" >"$WORK/keyward.log" 2>&1 &
    kpid=$!
    wait_port "$kp"
    callgrind_control -d start "$kpid" >/dev/null 2>&1
    redis-benchmark -p "$kp" -c 50 -P 16 -n "$N" -t set,get -q >/dev/null
    callgrind_control -d W1 "$kpid" >/dev/null 2>&1
    redis-benchmark -p "$kp" -c 50 -n "$N" -t set,get -q >/dev/null
    callgrind_control -d W2 "$kpid" >/dev/null 2>&1
    python3 - "$rp" "$kp" "$R" <<'PY'
import socket, sys
rp, kp, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out
def call(sock, payload):
    sock.sendall(payload)
    data = b""
    while not data.endswith(b"\r\n"):
        data += sock.recv(65536)
    return data
keys = [b"cg:%d" % i for i in range(1000)]
direct = socket.create_connection(("127.0.0.1", rp))
proxy = socket.create_connection(("127.0.0.1", kp))
for _ in range(rounds):
    call(direct, cmd(b"MSET", *[x for k in keys for x in (k, b"v")]))
    reply = call(proxy, cmd(b"REMOVEKEYS", *keys))
    assert reply == b":1000\r\n", reply
PY
    callgrind_control -d W4 "$kpid" >/dev/null 2>&1
    kill -TERM "$kpid"; wait "$kpid" || true
    kill "$rpid"; wait "$rpid" 2>/dev/null || true
    phase() { grep -l "^desc: Trigger: dump $1\$" "$out".* | head -1 | xargs grep -E "^summary:" | awk "{print \$2}"; }
    total=$(cat "$out" "$out".* | grep -E '^summary:' | awk '{s += $2} END {printf "%d", s}')
    printf "%-40s %-8s %16s %10.0f %10.0f %10.0f\n" "$(basename "$bin")$([ "$variant" = 1 ] && echo ' +ALSO_TOML')" "$([ "$shared" = true ] && echo shared || echo private)" "$total" \
      "$(($(phase W1) / (2 * N)))" "$(($(phase W2) / (2 * N)))" "$(($(phase W4) / (R > 0 ? R : 1)))"
  done
 done
done
