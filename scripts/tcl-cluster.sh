#!/usr/bin/env bash
# Redis 7.0.15's own TCL test suite (cluster-compatible subset) through keyward in front of a real
# Redis Cluster of 3 primaries and 3 replicas.
#
# usage: tcl-cluster.sh KEYWARD_BINARY [LOGDIR]
#
#   1. starts 6 redis-server nodes (cluster-enabled, cluster-node-timeout 15000, no persistence)
#      on BASE_PORT..BASE_PORT+5 (bus ports +10000) in a temporary directory, creates the cluster
#      with `redis-cli --cluster create ... --cluster-replicas 1` and waits until every node says
#      cluster_state:ok with 16384 slots assigned and ok, knows all 6 nodes, every replica's link
#      is up and `redis-cli --cluster check` is clean;
#   2. writes LOGDIR/keyward.toml (cluster mode, the 3 primaries as seeds, deny_commands = [])
#      and starts keyward on KEYWARD_PORT, waiting until it answers PING;
#   3. runs ../shared/suites/run-redis-tcl.sh with CLUSTERMODE=1 SINGLEDB=1 against keyward,
#      output teed to LOGDIR/summary.txt (per-unit logs in LOGDIR/unit_*.log);
#   4. stops everything on exit, Ctrl-C or TERM (the runner's whole process tree, keyward, the
#      nodes) and removes the temporary directory.
#
# env:
#   BASE_PORT=27001        first node port (nodes use BASE_PORT..+5, bus ports +10000). If unset
#                          and 27001.. is taken, the script tries 27101, 27201, ... by itself.
#   KEYWARD_PORT           keyward's listen port (default BASE_PORT+99)
#   RUNNER_BASEPORT        the runner's BASEPORT (runtest --baseport; its control socket uses
#                          RUNNER_BASEPORT-32..-1); default BASE_PORT+400, clear of every port above
#   REDIS_SRC=/work/tcl/redis-7.0.15
#   RUNNER=/work/shared/suites/run-redis-tcl.sh
#   HOLD=1                 start the cluster and keyward, skip the suite, wait for Ctrl-C/TERM
#                          (for checking single commands by hand against the same set-up)
#   UNITS, UNIT_TIMEOUT, EXTRA_TAGS, WITH_DEBUG ... are passed to the runner unchanged.
#   ONE_UNIT_AT_A_TIME=1   run the runner once per unit and, between units, SCRIPT KILL and
#                          FUNCTION KILL through keyward: a unit whose test fails while a script
#                          spins (unit/multi's "EXEC and script timeout" fails in a multi-node
#                          cluster, see README) leaves that script running, and every later unit
#                          would abort on BUSY. Totals are summed over the units.
#
# Files in LOGDIR: summary.txt (runner output), unit_*.log, keyward.toml, keyward.log,
# cluster/node-PORT.log, cluster/nodes-before.txt + nodes-after.txt (CLUSTER NODES) and
# cluster/check-before.txt + check-after.txt (`redis-cli --cluster check`), to spot a failover
# that happened during the run.
set -uo pipefail

KEYWARD=${1:?usage: $0 KEYWARD_BINARY [LOGDIR]}
LOGDIR=${2:-$(mktemp -d -t tcl-cluster-logs.XXXXXX)}
HERE=$(cd "$(dirname "$0")" && pwd)
REDIS_SRC=${REDIS_SRC:-$HERE/../../tcl/redis-7.0.15}
RUNNER=${RUNNER:-$HERE/../../shared/suites/run-redis-tcl.sh}
NODE_COUNT=6
READY_TIMEOUT_S=${READY_TIMEOUT_S:-90}

[ -x "$KEYWARD" ] || { echo "error: $KEYWARD is not an executable" >&2; exit 2; }
KEYWARD=$(cd "$(dirname "$KEYWARD")" && pwd)/$(basename "$KEYWARD")
[ -f "$RUNNER" ] || { echo "error: runner $RUNNER not found" >&2; exit 2; }
[ -f "$REDIS_SRC/tests/test_helper.tcl" ] || {
  echo "error: $REDIS_SRC is not a Redis source tree; get it with:" >&2
  echo "  mkdir -p $REDIS_SRC && git --git-dir=/work/.mirror/redis+redis/repo archive 7.0.15 | tar -x -C $REDIS_SRC" >&2
  exit 2; }
for tool in redis-server redis-cli tclsh timeout setsid ps; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; exit 2; }
done
mkdir -p "$LOGDIR/cluster" || exit 2
LOGDIR=$(cd "$LOGDIR" && pwd)

log() { echo "==> $(date +%H:%M:%S) $*"; }

# --- ports ------------------------------------------------------------------------------------
# A port is taken when a socket other than TIME-WAIT uses it locally: a listener, or an outgoing
# connection that got it as its ephemeral port (bus ports +10000 lie in Linux's ephemeral range).
port_in_use() {
  if command -v ss >/dev/null; then
    [ -n "$(ss -Htan state all exclude time-wait "( sport = :$1 )" 2>/dev/null)" ]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}
KEYWARD_PORT_ENV=${KEYWARD_PORT:-}; RUNNER_BASEPORT_ENV=${RUNNER_BASEPORT:-}
ports_free() {   # all node, bus, keyward and runner-control ports for base $1
  local b=$1 p
  for p in $(seq "$b" $((b + NODE_COUNT - 1))); do
    port_in_use "$p" && return 1
    port_in_use $((p + 10000)) && return 1
  done
  port_in_use "${KEYWARD_PORT_ENV:-$((b + 99))}" && return 1
  local r=${RUNNER_BASEPORT_ENV:-$((b + 400))}
  for p in $(seq $((r - 32)) $((r - 1))); do
    port_in_use "$p" && return 1
  done
  return 0
}
AUTO_PORT=0
if [ -n "${BASE_PORT:-}" ]; then
  ports_free "$BASE_PORT" || { echo "error: a port of BASE_PORT=$BASE_PORT's range is in use" >&2; exit 2; }
else
  AUTO_PORT=1
  BASE_PORT=27001
  until ports_free "$BASE_PORT"; do
    BASE_PORT=$((BASE_PORT + 1000))
    [ "$BASE_PORT" -le 29001 ] || { echo "error: no free port range found (27001..29001)" >&2; exit 2; }
  done
fi
set_ports() {
  [ $((BASE_PORT + NODE_COUNT - 1 + 10000)) -le 65535 ] || { echo "error: BASE_PORT too high" >&2; exit 2; }
  KEYWARD_PORT=${KEYWARD_PORT_ENV:-$((BASE_PORT + 99))}
  RUNNER_BASEPORT=${RUNNER_BASEPORT_ENV:-$((BASE_PORT + 400))}
  PORTS=(); for i in $(seq 0 $((NODE_COUNT - 1))); do PORTS+=($((BASE_PORT + i))); done
  for p in "${PORTS[@]}"; do
    if [ "$p" = "$KEYWARD_PORT" ] || { [ "$p" -ge $((RUNNER_BASEPORT - 32)) ] && [ "$p" -lt "$RUNNER_BASEPORT" ]; }; then
      echo "error: node port $p collides with KEYWARD_PORT or the runner's ports" >&2; exit 2
    fi
  done
}
set_ports

# --- cleanup ----------------------------------------------------------------------------------
DIR=$(mktemp -d -t tcl-cluster.XXXXXX)
NODE_PIDS=(); KEYWARD_PID=""; RUNNER_PID=""; TEE_PID=""

descendants() {   # every descendant pid of $1, depth first (children before their parent's siblings)
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$c"; descendants "$c"
  done
}
kill_tree() {     # TERM $1 and all its descendants (collected first, so reparenting loses none)
  local root=$1 pids p
  kill -0 "$root" 2>/dev/null || return 0
  pids="$root $(descendants "$root")"
  kill -TERM $pids 2>/dev/null
  for _ in $(seq 1 50); do
    local alive=0
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in $pids; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
  wait "$root" 2>/dev/null
  return 0
}
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  [ -n "$RUNNER_PID" ] && kill_tree "$RUNNER_PID"
  if [ "${#NODE_PIDS[@]}" -gt 0 ] && redis-cli -p "${PORTS[0]}" PING >/dev/null 2>&1; then
    redis-cli -p "${PORTS[0]}" CLUSTER NODES > "$LOGDIR/cluster/nodes-after.txt" 2>&1
    redis-cli --cluster check "127.0.0.1:${PORTS[0]}" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' > "$LOGDIR/cluster/check-after.txt"
  fi
  if [ -n "$KEYWARD_PID" ]; then
    log "stopping keyward (pid $KEYWARD_PID)"
    kill_tree "$KEYWARD_PID"
  fi
  if [ "${#NODE_PIDS[@]}" -gt 0 ]; then
    log "stopping ${#NODE_PIDS[@]} redis-server nodes"
    stop_nodes
  fi
  [ -n "$TEE_PID" ] && { exec {TEE_FD}>&- 2>/dev/null; wait "$TEE_PID" 2>/dev/null; }
  rm -rf "$DIR"
  log "logs in $LOGDIR"
  exit "$status"
}
trap cleanup EXIT
trap 'echo; log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

fail() { echo "error: $*" >&2; exit 1; }

# --- cluster ----------------------------------------------------------------------------------
stop_nodes() {
  local p
  for p in "${NODE_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${NODE_PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null
  done
  NODE_PIDS=()
}
start_nodes() {   # 0 when all nodes answer PING; 1 (nodes stopped again) when one did not start
  local p i
  log "starting $NODE_COUNT redis-server nodes on ${PORTS[0]}..${PORTS[-1]} (bus +10000) in $DIR"
  for p in "${PORTS[@]}"; do
    mkdir -p "$DIR/$p"
    # background jobs of a non-interactive shell ignore SIGINT: cleanup stops them with TERM
    redis-server --port "$p" --bind 127.0.0.1 --dir "$DIR/$p" --daemonize no \
      --cluster-enabled yes --cluster-node-timeout 15000 --save '' --appendonly no \
      --cluster-config-file "nodes-$p.conf" \
      > "$LOGDIR/cluster/node-$p.log" 2>&1 &
    NODE_PIDS+=($!)
  done
  for i in "${!PORTS[@]}"; do
    p=${PORTS[$i]}
    for _ in $(seq 1 100); do
      [ "$(redis-cli -p "$p" PING 2>/dev/null)" = PONG ] && break
      if ! kill -0 "${NODE_PIDS[$i]}" 2>/dev/null; then
        echo "warning: redis-server on $p exited: $(grep '#' "$LOGDIR/cluster/node-$p.log" | tail -2)" >&2
        stop_nodes; return 1
      fi
      sleep 0.1
    done
    [ "$(redis-cli -p "$p" PING 2>/dev/null)" = PONG ] || { echo "warning: redis-server on $p does not answer PING" >&2; stop_nodes; return 1; }
  done
}
# An outgoing connection of any process on this host can hold a bus port (+10000 is in the
# ephemeral range) for a moment: retry, in the next free range if BASE_PORT was not given.
for attempt in 1 2 3 4 5; do
  start_nodes && break
  [ "$attempt" -lt 5 ] || fail "the cluster nodes did not start (logs in $LOGDIR/cluster; try another BASE_PORT)"
  rm -rf "${DIR:?}"/* "$LOGDIR"/cluster/node-*.log
  sleep 1
  if [ "$AUTO_PORT" = 1 ]; then
    BASE_PORT=$((BASE_PORT + 100))
    until ports_free "$BASE_PORT"; do
      BASE_PORT=$((BASE_PORT + 100)); [ "$BASE_PORT" -le 30001 ] || fail "no free port range found"
    done
    set_ports
  fi
done

log "redis-cli --cluster create (3 primaries, 3 replicas)"
ADDRS=(); for p in "${PORTS[@]}"; do ADDRS+=("127.0.0.1:$p"); done
redis-cli --cluster create "${ADDRS[@]}" --cluster-replicas 1 --cluster-yes \
  > "$LOGDIR/cluster/create.txt" 2>&1 || { cat "$LOGDIR/cluster/create.txt" >&2; fail "cluster create failed"; }

log "waiting until every node agrees (cluster_state:ok, 16384 slots, 6 nodes, replicas in sync, --cluster check clean)"
deadline=$((SECONDS + READY_TIMEOUT_S))
while :; do
  ready=1
  for p in "${PORTS[@]}"; do
    info=$(redis-cli -p "$p" CLUSTER INFO 2>/dev/null | tr -d '\r')
    grep -qx 'cluster_state:ok' <<<"$info" && grep -qx 'cluster_slots_assigned:16384' <<<"$info" &&
      grep -qx 'cluster_slots_ok:16384' <<<"$info" && grep -qx 'cluster_known_nodes:6' <<<"$info" &&
      grep -qx 'cluster_size:3' <<<"$info" || { ready=0; break; }
    repl=$(redis-cli -p "$p" INFO replication 2>/dev/null | tr -d '\r')
    if grep -qx 'role:slave' <<<"$repl"; then
      grep -qx 'master_link_status:up' <<<"$repl" && ! grep -qx 'master_sync_in_progress:1' <<<"$repl" || { ready=0; break; }
    fi
  done
  if [ $ready = 1 ]; then
    # every node must list the same slot ranges for the same primaries
    maps=$(for p in "${PORTS[@]}"; do
             redis-cli -p "$p" CLUSTER NODES 2>/dev/null | tr -d '\r' | awk '$3 ~ /master/ {print $1, $9, $10, $11}' | sort | md5sum
           done | sort -u | wc -l)
    [ "$maps" = 1 ] || ready=0
  fi
  if [ $ready = 1 ]; then
    redis-cli --cluster check "127.0.0.1:${PORTS[0]}" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' > "$LOGDIR/cluster/check-before.txt"
    if grep -q '^\[OK\] All nodes agree about slots configuration' "$LOGDIR/cluster/check-before.txt" &&
       grep -q '^\[OK\] All 16384 slots covered' "$LOGDIR/cluster/check-before.txt" &&
       ! grep -q 'WARNING\|ERR' "$LOGDIR/cluster/check-before.txt"; then
      break
    fi
  fi
  [ $SECONDS -lt $deadline ] || { redis-cli -p "${PORTS[0]}" CLUSTER NODES >&2; fail "cluster not ready within ${READY_TIMEOUT_S}s"; }
  sleep 0.5
done
redis-cli -p "${PORTS[0]}" CLUSTER NODES | sort -k2 > "$LOGDIR/cluster/nodes-before.txt"
PRIMARIES=$(awk '$3 ~ /master/ {sub(/@.*/, "", $2); print $2}' "$LOGDIR/cluster/nodes-before.txt" | sort -t: -k2 -n)
log "cluster ready; primaries: $(echo $PRIMARIES)"

# --- keyward ----------------------------------------------------------------------------------
SEEDS=$(for a in $PRIMARIES; do printf '"%s", ' "$a"; done); SEEDS=${SEEDS%, }
cat > "$LOGDIR/keyward.toml" <<EOF
# written by tcl-cluster.sh
[server]
listen = "127.0.0.1:$KEYWARD_PORT"

[upstream]
mode = "cluster"
nodes = [$SEEDS]

[guard]
deny_commands = []
EOF
"$KEYWARD" --check-config "$LOGDIR/keyward.toml" > "$LOGDIR/keyward-check-config.txt" 2>&1 ||
  { cat "$LOGDIR/keyward-check-config.txt" >&2; fail "keyward rejects $LOGDIR/keyward.toml"; }
log "starting keyward $("$KEYWARD" --version 2>/dev/null) on 127.0.0.1:$KEYWARD_PORT"
"$KEYWARD" --config "$LOGDIR/keyward.toml" > "$LOGDIR/keyward.log" 2>&1 &
KEYWARD_PID=$!
for _ in $(seq 1 100); do
  [ "$(redis-cli -p "$KEYWARD_PORT" PING 2>/dev/null)" = PONG ] && break
  kill -0 "$KEYWARD_PID" 2>/dev/null || fail "keyward exited: $(tail -5 "$LOGDIR/keyward.log")"
  sleep 0.1
done
[ "$(redis-cli -p "$KEYWARD_PORT" PING 2>/dev/null)" = PONG ] || fail "keyward does not answer PING"
# DBSIZE goes to every primary: an integer means keyward reaches all three
[[ "$(redis-cli -p "$KEYWARD_PORT" DBSIZE 2>&1)" =~ ^[0-9]+$ ]] || fail "keyward cannot serve DBSIZE: $(redis-cli -p "$KEYWARD_PORT" DBSIZE 2>&1)"

if [ "${HOLD:-0}" = 1 ]; then
  log "HOLD=1: cluster on ${PORTS[*]}, keyward on 127.0.0.1:$KEYWARD_PORT; not running the suite. Ctrl-C or TERM stops everything"
  while :; do sleep 1 & wait $!; done
fi

# --- the suite --------------------------------------------------------------------------------
log "running $RUNNER against keyward 127.0.0.1:$KEYWARD_PORT (runner BASEPORT=$RUNNER_BASEPORT), logs in $LOGDIR"
exec {TEE_FD}> >(tee "$LOGDIR/summary.txt")
TEE_PID=$!
# own session: the runner (and runtest, and its test clients) do not get the terminal's Ctrl-C
# directly; cleanup stops the whole tree by pid instead.
run_runner() {   # the runner once, for the units in $1 (empty: its own default list)
  REDIS_SRC=$REDIS_SRC CLUSTERMODE=1 SINGLEDB=1 LOGDIR=$LOGDIR BASEPORT=$RUNNER_BASEPORT \
    UNITS="$1" setsid bash "$RUNNER" 127.0.0.1 "$KEYWARD_PORT" >&$TEE_FD 2>&1 < /dev/null &
  RUNNER_PID=$!
  wait "$RUNNER_PID"; rc=$?
  RUNNER_PID=""
}
if [ "${ONE_UNIT_AT_A_TIME:-0}" = 1 ]; then
  units=${UNITS:-$(sed -n '/^DEFAULT_UNITS="/,/"$/p' "$RUNNER" | tr -d '"' | sed 's/^DEFAULT_UNITS=//')}
  for unit in $units; do
    run_runner "$unit"
    for kill in "SCRIPT KILL" "FUNCTION KILL"; do
      out=$(redis-cli -p "$KEYWARD_PORT" $kill 2>&1)
      [ "$out" = OK ] && echo "between units: $kill after $unit: a script was left running" >&$TEE_FD
    done
  done
  exec {TEE_FD}>&-; wait "$TEE_PID" 2>/dev/null; TEE_PID=""
  passed=$(grep -h '^[0-9]* passed, [0-9]* failed$' "$LOGDIR/summary.txt" | awk '{p += $1; f += $3} END {print p + 0}')
  failed=$(grep -h '^[0-9]* passed, [0-9]* failed$' "$LOGDIR/summary.txt" | awk '{p += $1; f += $3} END {print f + 0}')
  aborted=$(grep -c 'ABORTED' "$LOGDIR/summary.txt")
  echo "total over units: $passed passed, $failed failed, $aborted unit(s) aborted" | tee -a "$LOGDIR/summary.txt"
  exec {TEE_FD}> >(tee -a "$LOGDIR/summary.txt")
  TEE_PID=$!
else
  run_runner "${UNITS:-}"
fi
exec {TEE_FD}>&-; wait "$TEE_PID" 2>/dev/null; TEE_PID=""
kill -0 "$KEYWARD_PID" 2>/dev/null || echo "warning: keyward exited during the run (see $LOGDIR/keyward.log)" | tee -a "$LOGDIR/summary.txt"
for i in "${!PORTS[@]}"; do
  kill -0 "${NODE_PIDS[$i]}" 2>/dev/null || echo "warning: node ${PORTS[$i]} exited during the run" | tee -a "$LOGDIR/summary.txt"
done
exit $rc
