#!/usr/bin/env bash
# Load benchmark: direct Redis vs twemproxy vs keyward (both modes), in one run, and keyward in
# front of a Redis Cluster.
#
#   scripts/bench.sh                 full run, W1-W6 (5 rounds; about 5-10 minutes on 2 cores)
#   QUICK=1 scripts/bench.sh         smoke run (1 round, small sizes; 1-2 minutes after the build)
#   W6_ONLY=1 scripts/bench.sh       only W6, the cluster (about 2 minutes; QUICK=1: 40 seconds)
#
# Builds keyward in release mode, starts a redis-server (no persistence), a twemproxy
# (nutcracker, server_connections: 1) in front of it and two keyward processes from the same
# binary in front of that, all on free 127.0.0.1 ports: "keyward" (default configuration,
# [upstream] share_connections = false: one upstream connection per client) and "keyward-shared"
# (the same configuration except share_connections = true: stateless requests of all clients
# share one pipelined upstream connection). Runs the workloads of issue 4 against all four
# targets, taking turns in a rotating order round by round; W3 also against the floor, a relay
# that only copies bytes (examples/floor_relay.rs), to show what the hop alone costs. Prints a table of medians with the
# ratios keyward/direct, keyward/twemproxy, keyward-shared/direct and keyward-shared/twemproxy
# and the issue's targets for both keyward modes (PASS/MISS, reported, not enforced), and writes
# docs/bench/results.{csv,md,svg}, targets.csv and results-rounds.csv (every single measurement).
#
# W6, last: a 3-primary Redis Cluster (no replicas) on free ports, and keyward --cluster in front
# of it. W6a: W1 through keyward vs `redis-benchmark --cluster` going direct; W6b: REMOVEKEYS of
# 1000 keys per call through keyward vs a cluster-aware client deleting the same keys with one
# DEL per hash slot, directly on the primaries. Written to docs/bench/w6.{md,csv,svg} and
# w6-rounds.csv, and as the W6 rows/section of results.csv, results-rounds.csv and results.md.
# With W6_ONLY=1 only W6 runs (still after the build; nutcracker is not needed) and only the W6
# parts of those files are replaced: the W1-W5 results of an earlier full run stay as they are.
#
# Knobs (environment):
#   QUICK=1            small and fast (1 round, short runs, 2,000 connections in W5)
#   ROUNDS=N           measured rounds of W1-W3 (default 5); W4_ROUNDS defaults to ROUNDS
#   DURATION=S         seconds one redis-benchmark run (SET then GET) should take (default 2.5)
#   W1_N, W2_N, W3_N   fixed request counts per test instead of the calibrated ones
#   W4_KEYS=N          keys per batched delete measurement (default 1000000)
#   W4_SINGLE_KEYS=N   keys for the one-key-per-call DEL measurement (default 30000)
#   W5_CONNS=N         idle connections in W5 (default 10000; lowered to fit the fd limit)
#   W6_ONLY=1          run W6 only (see above)
#   W6_ROUNDS=N        rounds of W6a and W6b (default ROUNDS, i.e. 5; QUICK: 1)
#   W6_N=N             fixed request count per W6a test instead of the calibrated ones
#   W6_KEYS=N          keys per W6b measurement (default 1000000; QUICK: 200000)
#   MAX_SECONDS=S      hard cap on the measurements (default 2400; QUICK: 600)
#   OUT_DIR=DIR        where the results go (default docs/bench)
#   KEEP_WORK=1        keep the work directory (logs, generated configs) for inspection
#   SKIP_BUILD=1       use target/release/keyward as it is
#   KEYWARD_REV=REV    build and measure a committed revision (e.g. HEAD) from a clean export
#                      instead of the working tree (target dir: ~/.cache/keyward-bench/target)
#   KEYWARD_BIN=PATH   measure this keyward binary instead of building one
#   METRICS_COMPARE=1  instead of W1-W6: W1 and W2 of the built binary with metrics off and on
#                      ([admin] listen unset / set), alternating, pinned to CPUs
#                      (scripts/bench/ab_pinned.sh; ROUNDS repetitions, default 5), printed as
#                      a table of medians and ratios
#   HOOKS_COMPARE=1    the same pinned A/B with no hooks and with the ten hooks of
#                      scripts/bench/hooks10.toml (issue 12: W1 at least 0.97x)
#   HTTP_COMPARE=1     instead of W1-W6: POST /v1/keys/remove against REMOVEKEYS, 1000 keys per
#                      call, one call in flight, ROUNDS rounds of 200,000 keys
#                      (scripts/bench/http_remove.py; issue 12: at least 0.5x)
#
# Needs: cargo, redis-server (Redis 7 or later, for W6's --cluster-port), redis-cli and
# redis-benchmark (redis-tools), nutcracker (not for W6_ONLY=1), python3 (standard library only).
set -euo pipefail

cd "$(dirname "$0")/.."
repo="$(pwd)"

tools="cargo redis-server redis-cli redis-benchmark python3"
if [ "${W6_ONLY:-0}" = "0" ]; then
    tools="$tools nutcracker"
fi
for tool in $tools; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool is missing (Debian: apt-get install redis-server redis-tools nutcracker python3)" >&2
        exit 1
    fi
done

out_dir="${OUT_DIR:-docs/bench}"
quick="${QUICK:-0}"
if [ "$quick" != "0" ] && [ -n "$quick" ]; then
    default_max=600
else
    default_max=2400
fi
max_seconds="${MAX_SECONDS:-$default_max}"

work=""
bench_pid=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM HUP
    if [ -n "$bench_pid" ] && kill -0 "$bench_pid" 2>/dev/null; then
        # timeout passes the TERM on to bench.py, which stops its servers itself.
        kill -TERM "$bench_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$bench_pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    if [ -n "$work" ] && [ -f "$work/pids" ]; then
        # Only processes this run started (listed by bench.py), and only while they still run
        # in the work directory (a recycled pid belongs to someone else).
        while read -r pid; do
            [ -n "$pid" ] || continue
            if [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$work" ]; then
                kill -TERM "$pid" 2>/dev/null || true
            fi
        done <"$work/pids"
        sleep 0.5
        while read -r pid; do
            [ -n "$pid" ] || continue
            if [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$work" ]; then
                kill -KILL "$pid" 2>/dev/null || true
            fi
        done <"$work/pids"
    fi
    if [ -n "$work" ] && [ -d "$work" ]; then
        if [ "${KEEP_WORK:-0}" != "0" ]; then
            echo "work directory kept: $work" >&2
        else
            rm -rf "$work"
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

work="$(mktemp -d -t keyward-bench.XXXXXX)"
work="$(cd "$work" && pwd -P)"

commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "${KEYWARD_BIN:-}" ]; then
    # A binary built elsewhere (e.g. another revision, for an A/B comparison).
    bin="$KEYWARD_BIN"
    commit="unknown"
    tree="prebuilt binary $KEYWARD_BIN"
elif [ -n "${KEYWARD_REV:-}" ]; then
    # A committed revision, built from a clean export (git archive) in the work directory, so
    # that unfinished edits in the working tree cannot break or change the build.
    commit="$(git -C "$repo" rev-parse --short "${KEYWARD_REV}^{commit}")"
    mkdir "$work/src"
    git -C "$repo" archive "$commit" | tar -x -C "$work/src"
    cache="${XDG_CACHE_HOME:-$HOME/.cache}/keyward-bench/target"
    echo "==> cargo build --release of revision $commit (target dir $cache)" >&2
    CARGO_TARGET_DIR="$cache" timeout --foreground 1800 cargo build --release --bin keyward \
        --manifest-path "$work/src/Cargo.toml" >&2
    bin="$cache/release/keyward"
    tree="committed revision $KEYWARD_REV, built from git archive"
else
    if [ "${SKIP_BUILD:-0}" = "0" ]; then
        echo "==> cargo build --release" >&2
        timeout --foreground 1800 cargo build --release --bin keyward >&2
    fi
    bin="target/release/keyward"
    changed="$(git -C "$repo" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | wc -l)"
    if [ "$changed" -gt 0 ]; then
        tree="working tree with $changed uncommitted change(s) under src/ or Cargo.*"
    else
        tree="clean working tree"
    fi
fi
if [ ! -x "$bin" ]; then
    echo "error: no keyward binary at $bin" >&2
    exit 1
fi
# Run a private copy: a rebuild by someone else during the run must not swap the binary.
cp "$bin" "$work/keyward"
# W3's floor: a relay that only copies bytes (examples/floor_relay.rs, std only, any revision).
relay="target/release/examples/floor_relay"
if [ "${SKIP_BUILD:-0}" = "0" ] || [ ! -x "$relay" ]; then
    echo "==> cargo build --release --example floor_relay" >&2
    timeout --foreground 600 cargo build --release --example floor_relay >&2
fi
cp "$relay" "$work/floor_relay"

# W5 holds 10,000 connections; keyward (default mode) needs two descriptors per client connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

rustc_version="$(rustc --version 2>/dev/null || echo unknown)"
cmd="scripts/bench.sh"
for knob in QUICK ROUNDS W4_ROUNDS DURATION W1_N W2_N W3_N W4_KEYS W4_SINGLE_KEYS W5_CONNS \
        W6_ONLY W6_ROUNDS W6_N W6_KEYS KEYWARD_REV KEYWARD_BIN; do
    if [ -n "${!knob:-}" ]; then
        cmd="$knob=${!knob} $cmd"
    fi
done

if [ "${HOOKS_COMPARE:-0}" != "0" ]; then
    echo "==> no hooks vs ten hooks (scripts/bench/hooks10.toml), pinned (work directory $work)" >&2
    timeout -k 20 "$((max_seconds + 60))" \
        bash scripts/bench/ab_pinned.sh "$work/keyward" "$(cat scripts/bench/hooks10.toml)" \
            "${ROUNDS:-5}" &
    bench_pid=$!
    wait "$bench_pid" || status=$?
    bench_pid=""
    exit "${status:-0}"
fi

if [ "${HTTP_COMPARE:-0}" != "0" ]; then
    echo "==> POST /v1/keys/remove vs REMOVEKEYS, 1000 keys per call (work directory $work)" >&2
    timeout -k 20 "$((max_seconds + 60))" \
        python3 scripts/bench/http_remove.py "$work/keyward" "${ROUNDS:-5}" &
    bench_pid=$!
    wait "$bench_pid" || status=$?
    bench_pid=""
    exit "${status:-0}"
fi

if [ "${METRICS_COMPARE:-0}" != "0" ]; then
    echo "==> metrics off vs on, pinned (work directory $work)" >&2
    timeout -k 20 "$((max_seconds + 60))" \
        bash scripts/bench/ab_pinned.sh "$work/keyward" $'[admin]\nlisten = "127.0.0.1:0"' \
            "${ROUNDS:-5}" &
    bench_pid=$!
    wait "$bench_pid" || status=$?
    bench_pid=""
    exit "${status:-0}"
fi

echo "==> running the benchmark (work directory $work, at most ${max_seconds}s)" >&2
status=0
# In the background with `wait`, so that a signal to this script runs its trap at once.
timeout -k 20 "$((max_seconds + 60))" \
    python3 scripts/bench/bench.py --work "$work" --keyward "$work/keyward" \
        --floor-relay "$work/floor_relay" --out "$out_dir" \
        --meta "keyward_commit=$commit" --meta "keyward_tree=$tree" \
        --meta "rustc=$rustc_version" --meta "command=$cmd" &
bench_pid=$!
wait "$bench_pid" || status=$?
bench_pid=""
exit "$status"
