#!/usr/bin/env python3
"""keyward load benchmark: direct Redis vs twemproxy vs keyward (both modes), in one run.

Started by scripts/bench.sh, which builds keyward, raises the file-descriptor limit, makes a work
directory and kills whatever is left on exit. This script starts a redis-server, a twemproxy
(nutcracker) in front of it and two keyward processes from the same binary in front of it, all on
free 127.0.0.1 ports: "keyward" with the default configuration (`[upstream] share_connections =
false`: one upstream connection per client) and "keyward-shared" with the identical configuration
except `share_connections = true` (stateless requests of all clients share one pipelined upstream
connection). It runs the workloads W1-W5 against all four targets, alternating the targets round
by round in a rotating order so that drift on a shared machine falls on every target alike, and
reports medians over the rounds (see report.py for the outputs).

W6 comes last (or alone, with W6_ONLY=1): a 3-primary Redis Cluster and keyward in cluster mode
in front of it, W1 and W4 through keyward against going direct with a cluster-aware client (see
run_w6; report_w6.py for the outputs).

Standard library only. `bench.py hold PORT N` is the helper process of W5 that holds N idle
connections open.
"""

import argparse
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import report  # noqa: E402
import report_w6  # noqa: E402
from resp import Client, RespError, encode  # noqa: E402

TARGETS = ("direct", "twemproxy", "keyward", "keyward-shared")
# W3 also runs against the floor: examples/floor_relay.rs, a relay that only copies bytes. It
# shows what the extra hop of any proxy costs on this machine by itself.
FLOOR = "floor-relay"
# The two keyward processes: target name -> value of `[upstream] share_connections`.
KEYWARD_MODES = {"keyward": False, "keyward-shared": True}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


class Deadline(Exception):
    """The whole run took longer than MAX_SECONDS."""


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------

def env_int(name, default):
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def env_float(name, default):
    value = os.environ.get(name, "")
    return float(value) if value.strip() else default


def settings():
    quick = os.environ.get("QUICK", "") not in ("", "0")
    s = {
        "quick": quick,
        # Measured rounds of W1-W3 (each round runs every target once per workload).
        "rounds": env_int("ROUNDS", 1 if quick else 5),
        # Rounds of W4 (each round populates and deletes once per variant).
        "w4_rounds": env_int("W4_ROUNDS", 1 if quick else env_int("ROUNDS", 5)),
        # Target wall time of one redis-benchmark run (SET then GET), in seconds.
        "duration": env_float("DURATION", 0.6 if quick else 2.5),
        # Fixed request counts per test, overriding the calibration from the warm-up round.
        "w1_n": env_int("W1_N", 0),
        "w2_n": env_int("W2_N", 0),
        "w3_n": env_int("W3_N", 0),
        # Keys deleted per measurement, batched variants and the one-key-per-call variant.
        "w4_keys": env_int("W4_KEYS", 200_000 if quick else 1_000_000),
        "w4_single_keys": env_int("W4_SINGLE_KEYS", 5_000 if quick else 30_000),
        # Idle connections held open in W5 (lowered if the fd limit cannot take them).
        "w5_conns": env_int("W5_CONNS", 2_000 if quick else 10_000),
        # Hard cap on the whole run, in seconds.
        "max_seconds": env_int("MAX_SECONDS", 600 if quick else 2400),
        # W6 (keyward in front of a 3-primary Redis Cluster) alone, without W1-W5.
        "w6_only": os.environ.get("W6_ONLY", "") not in ("", "0"),
        # Rounds of W6a and W6b; fixed request count per W6a test (0: calibrated); keys per
        # W6b measurement.
        "w6_rounds": env_int("W6_ROUNDS", 1 if quick else env_int("ROUNDS", 5)),
        "w6_n": env_int("W6_N", 0),
        "w6_keys": env_int("W6_KEYS", 200_000 if quick else 1_000_000),
    }
    if s["rounds"] < 1 or s["w4_rounds"] < 1 or s["w6_rounds"] < 1:
        raise SystemExit("ROUNDS, W4_ROUNDS and W6_ROUNDS must be at least 1")
    if s["w6_keys"] < 1000:
        raise SystemExit("W6_KEYS must be at least 1000")
    return s


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------

class Procs:
    """Long-lived processes started by this run. Every pid is also written to WORK/pids so that
    bench.sh can kill what is left if this script itself is killed."""

    def __init__(self, work):
        self.work = work
        self.procs = []

    def start(self, name, argv, logfile, **kw):
        out = open(logfile, "ab")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=kw.pop("stdin", subprocess.DEVNULL), cwd=self.work, **kw)
        out.close()
        with open(os.path.join(self.work, "pids"), "a") as f:
            f.write("%d\n" % proc.pid)
        self.procs.append((name, proc))
        return proc

    @staticmethod
    def stop(proc, grace=5.0):
        if proc.poll() is not None:
            return
        try:
            proc.terminate()
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        except OSError:
            pass

    def stop_all(self):
        for _, proc in reversed(self.procs):
            self.stop(proc)


def free_ports(count):
    """Asks the kernel for `count` distinct free loopback ports."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_ready(port, proc, name, logfile, timeout=20.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited with status %s; its log (%s):\n%s"
                               % (name, proc.returncode, logfile, tail(logfile)))
        try:
            with Client(port, timeout=2.0) as c:
                if c.call("PING") == "PONG":
                    return
        except (OSError, ConnectionError, RespError) as err:
            last = err
        time.sleep(0.1)
    raise RuntimeError("%s did not answer PING on 127.0.0.1:%d within %.0f s (%s); log:\n%s"
                       % (name, port, timeout, last, tail(logfile)))


def tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def cpu_seconds(pid):
    """User + system CPU time of a process so far, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds():
    """CPU seconds spent non-idle by the whole machine (all CPUs) since boot."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    values = [int(v) for v in parts[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLK_TCK


class Env:
    """The four targets and everything needed to talk to them."""

    def __init__(self, work, keyward_bin, relay_bin, procs, fd_limit, max_conns):
        self.work = work
        self.procs = procs
        ports = free_ports(len(TARGETS) + 2)
        self.port = dict(zip(TARGETS + (FLOOR,), ports))
        self.nc_stats_port = ports[len(TARGETS) + 1]
        maxclients = max(1000, min(20000, fd_limit - 64))
        self.redis_log = os.path.join(work, "redis.log")
        self.redis = procs.start("redis-server", [
            "redis-server", "--port", str(self.port["direct"]), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--maxclients", str(maxclients),
            "--dir", work, "--daemonize", "no",
        ], self.redis_log)
        wait_ready(self.port["direct"], self.redis, "redis-server", self.redis_log)

        self.nc_conf = os.path.join(work, "nutcracker.yml")
        with open(self.nc_conf, "w") as f:
            f.write(
                "bench:\n"
                "  listen: 127.0.0.1:%d\n"
                "  redis: true\n"
                "  hash: fnv1a_64\n"
                "  distribution: ketama\n"
                "  server_connections: 1\n"
                "  preconnect: true\n"
                "  auto_eject_hosts: false\n"
                "  servers:\n"
                "   - 127.0.0.1:%d:1\n" % (self.port["twemproxy"], self.port["direct"]))
        self.nc_log = os.path.join(work, "nutcracker.log")
        self.nc = procs.start("nutcracker", [
            "nutcracker", "-c", self.nc_conf, "-s", str(self.nc_stats_port), "-a", "127.0.0.1",
            "-o", self.nc_log, "-p", os.path.join(work, "nutcracker.pid"),
        ], self.nc_log + ".stdout")
        wait_ready(self.port["twemproxy"], self.nc, "nutcracker", self.nc_log)

        # The two keyward processes: the same binary, configurations identical except for
        # share_connections (set explicitly in both, so that each file says which mode it is).
        self.kw = {}
        self.kw_log = {}
        for name, shared in KEYWARD_MODES.items():
            conf = os.path.join(work, "%s.toml" % name)
            with open(conf, "w") as f:
                f.write(
                    "# Generated by scripts/bench/bench.py: built-in defaults except these.\n"
                    "[server]\n"
                    "listen = \"127.0.0.1:%d\"\n"
                    "max_clients = %d\n"
                    "[upstream]\n"
                    "nodes = [\"127.0.0.1:%d\"]\n"
                    "share_connections = %s\n" % (self.port[name], max_conns + 1000,
                                                  self.port["direct"],
                                                  "true" if shared else "false"))
            self.kw_log[name] = os.path.join(work, "%s.log" % name)
            self.kw[name] = procs.start(name, [
                keyward_bin, "--config", conf, "--log-level", "warn",
            ], self.kw_log[name])
            wait_ready(self.port[name], self.kw[name], name, self.kw_log[name])

        self.relay_log = os.path.join(work, "floor-relay.log")
        self.relay = procs.start(FLOOR, [
            relay_bin, "127.0.0.1:%d" % self.port[FLOOR], "127.0.0.1:%d" % self.port["direct"],
        ], self.relay_log)
        wait_ready(self.port[FLOOR], self.relay, FLOOR, self.relay_log)

        self.pid = {"direct": self.redis.pid, "twemproxy": self.nc.pid, FLOOR: self.relay.pid,
                    **{name: proc.pid for name, proc in self.kw.items()}}

    def check_alive(self):
        for name, proc in (("redis-server", self.redis), ("nutcracker", self.nc),
                           (FLOOR, self.relay), *self.kw.items()):
            if proc.poll() is not None:
                raise RuntimeError("%s died (status %s)" % (name, proc.returncode))

    def redis_call(self, *args):
        with Client(self.port["direct"], timeout=60.0) as c:
            return c.call(*args)


def rotated(items, r):
    k = r % len(items)
    return list(items[k:]) + list(items[:k])


# --------------------------------------------------------------------------------------------
# W1-W3: redis-benchmark
# --------------------------------------------------------------------------------------------

RB_WORKLOADS = {
    # name: (clients, pipeline, warm-up request count, minimum request count)
    "W1": (50, 16, 300_000, 20_000),
    "W2": (50, 1, 30_000, 5_000),
    "W3": (1, 1, 3_000, 1_000),
}
RB_COLUMNS = ("rps", "avg_latency_ms", "min_latency_ms", "p50_latency_ms", "p95_latency_ms",
              "p99_latency_ms", "max_latency_ms")


def run_redis_benchmark(env, target, workload, n, timeout):
    clients, pipeline, _, _ = RB_WORKLOADS[workload]
    argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(env.port[target]),
            "-c", str(clients), "-n", str(n), "-t", "set,get", "--csv"]
    if pipeline > 1:
        argv += ["-P", str(pipeline)]
    return timed_redis_benchmark(argv, "%s %s" % (workload, target), n, timeout,
                                 [env.pid[target]] if target != "direct" else [],
                                 [env.redis.pid])


def timed_redis_benchmark(argv, label, n, timeout, proxy_pids, redis_pids):
    """Runs one redis-benchmark (SET and GET with --csv) and returns its SET and GET rows with
    the wall time and the CPU time the proxy and Redis processes spent meanwhile, or None."""
    proxy_cpu0 = sum(cpu_seconds(p) for p in proxy_pids)
    redis_cpu0 = sum(cpu_seconds(p) for p in redis_pids)
    t0 = time.monotonic()
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        log("redis-benchmark %s timed out after %.0f s" % (label, timeout))
        return None
    wall = time.monotonic() - t0
    proxy_cpu = sum(cpu_seconds(p) for p in proxy_pids) - proxy_cpu0
    redis_cpu = sum(cpu_seconds(p) for p in redis_pids) - redis_cpu0
    rows = {}
    header = None
    # In --cluster mode redis-benchmark first lists the primaries; those lines are skipped.
    for line in out.stdout.splitlines():
        cells = [c.strip().strip('"') for c in line.split(",")]
        if cells and cells[0] == "test":
            header = cells
            continue
        if header and len(cells) == len(header) and cells[0] in ("SET", "GET"):
            rows[cells[0]] = {h: float(v) for h, v in zip(header[1:], cells[1:])}
    if set(rows) != {"SET", "GET"} or any(c not in rows["SET"] for c in RB_COLUMNS):
        log("redis-benchmark %s: unexpected output (status %d):\n%s\n%s"
            % (label, out.returncode, out.stdout[-2000:], out.stderr[-2000:]))
        return None
    return {"tests": rows, "wall_s": wall, "proxy_cpu_s": proxy_cpu, "redis_cpu_s": redis_cpu,
            "n": n}


def calibrated_n(workload, result, duration):
    """Requests per test so that SET + GET together take about `duration` seconds."""
    _, _, warm_n, min_n = RB_WORKLOADS[workload]
    if result is None:
        return warm_n
    per_request = sum(1.0 / max(result["tests"][t]["rps"], 1.0) for t in ("SET", "GET"))
    n = int(duration / per_request)
    step = 1000 if n >= 10_000 else 100
    return max(min_n, (n // step) * step)


def rb_targets(workload):
    """The targets of a redis-benchmark workload: the floor relay only takes part in W3."""
    return TARGETS + (FLOOR,) if workload == "W3" else TARGETS


def run_rb_workloads(env, s, rows):
    fixed = {"W1": s["w1_n"], "W2": s["w2_n"], "W3": s["w3_n"]}
    n_of = {}
    log("W1-W3 warm-up round (calibrates the request counts; not reported)")
    for workload in RB_WORKLOADS:
        for target in rb_targets(workload):
            warm_n = RB_WORKLOADS[workload][2]
            res = run_redis_benchmark(env, target, workload, warm_n, timeout=120)
            n_of[(workload, target)] = fixed[workload] or calibrated_n(workload, res,
                                                                       s["duration"])
    log("request counts per test: " + ", ".join(
        "%s/%s=%d" % (w, t, n) for (w, t), n in sorted(n_of.items())))
    for r in range(1, s["rounds"] + 1):
        for workload in RB_WORKLOADS:
            order = rotated(rb_targets(workload), r - 1 + list(RB_WORKLOADS).index(workload))
            for pos, target in enumerate(order):
                env.check_alive()
                n = n_of[(workload, target)]
                res = run_redis_benchmark(env, target, workload, n,
                                          timeout=max(60.0, 20 * s["duration"]))
                if res is None:
                    continue
                for test, cols in res["tests"].items():
                    rows.append({
                        "round": r, "order": pos, "workload": workload, "test": test,
                        "target": target, "n": n, "wall_s": round(res["wall_s"], 3),
                        "proxy_cpu_s": round(res["proxy_cpu_s"], 3),
                        "redis_cpu_s": round(res["redis_cpu_s"], 3),
                        "cpu_us_per_req": round(1e6 * res["proxy_cpu_s"] / (2 * n), 3),
                        **{c: cols[c] for c in RB_COLUMNS},
                    })
                log("round %d %s %-14s SET %10.0f rps  GET %10.0f rps  p50 %.3f/%.3f ms  (n=%d)"
                    % (r, workload, target, res["tests"]["SET"]["rps"],
                       res["tests"]["GET"]["rps"], res["tests"]["SET"]["p50_latency_ms"],
                       res["tests"]["GET"]["p50_latency_ms"], n))


# --------------------------------------------------------------------------------------------
# W4: keys removed per second
# --------------------------------------------------------------------------------------------

# name: (target, command, keys per call)
W4_VARIANTS = {
    "REMOVEKEYS x1000 via keyward": ("keyward", "REMOVEKEYS", 1000),
    "DEL x1000 direct": ("direct", "DEL", 1000),
    "DEL x1 direct": ("direct", "DEL", 1),
    "DEL x1000 via twemproxy": ("twemproxy", "DEL", 1000),
    "DEL x1000 via keyward": ("keyward", "DEL", 1000),
    "REMOVEKEYS x1000 via keyward-shared": ("keyward-shared", "REMOVEKEYS", 1000),
    "DEL x1000 via keyward-shared": ("keyward-shared", "DEL", 1000),
    # What keyward sends upstream for REMOVEKEYS (delete_command = "UNLINK", the default).
    "UNLINK x1000 direct": ("direct", "UNLINK", 1000),
}


def key_name(i):
    return b"kwbench:key:%08d" % i


class KeySets:
    """Pre-generated population files (for redis-cli --pipe) and pre-encoded delete commands."""

    def __init__(self, work):
        self.work = work
        self.files = {}
        self.commands = {}

    def population_file(self, count):
        if count not in self.files:
            path = os.path.join(self.work, "populate-%d.resp" % count)
            with open(path, "wb") as f:
                for start in range(0, count, 10_000):
                    f.write(b"".join(encode(b"SET", key_name(i), b"v")
                                     for i in range(start, min(count, start + 10_000))))
            self.files[count] = path
        return self.files[count]

    def delete_commands(self, command, batch, count):
        key = (command, batch, count)
        if key not in self.commands:
            self.commands[key] = [
                encode(command, *[key_name(i) for i in range(start, min(count, start + batch))])
                for start in range(0, count, batch)
            ]
        return self.commands[key]


def populate(env, keysets, count):
    env.redis_call("FLUSHALL")
    path = keysets.population_file(count)
    with open(path, "rb") as f:
        out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(env.port["direct"]),
                              "--pipe"], stdin=f, capture_output=True, text=True, timeout=300)
    if out.returncode != 0 or "errors: 0" not in out.stdout:
        raise RuntimeError("redis-cli --pipe failed: %s %s" % (out.stdout[-500:],
                                                                out.stderr[-500:]))
    size = env.redis_call("DBSIZE")
    if size != count:
        raise RuntimeError("populated %d keys but DBSIZE is %d" % (count, size))


def run_delete(env, target, commands, expected, timeout):
    """Sends every command and waits for its reply before the next; returns (removed, seconds)."""
    removed, elapsed, _ = delete_loop(env.port[target], target, commands, expected, timeout)
    return removed, elapsed


def delete_loop(port, label, commands, expected, timeout):
    """run_delete on a port; returns (removed, seconds, CPU seconds of this client)."""
    with Client(port, timeout=timeout) as c:
        if c.call("PING") != "PONG":  # the connection (and keyward's upstream one) is set up
            raise RuntimeError("no PONG from %s" % label)
        removed = 0
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for cmd in commands:
            c.send(cmd)
            reply = c.read()
            if not isinstance(reply, int):
                raise RuntimeError("%s answered %r" % (label, reply))
            removed += reply
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    if removed != expected:
        raise RuntimeError("%s removed %d keys, expected %d" % (label, removed, expected))
    return removed, elapsed, cpu


def run_w4(env, s, rows):
    keysets = KeySets(env.work)
    names = list(W4_VARIANTS)
    for r in range(1, s["w4_rounds"] + 1):
        for pos, name in enumerate(rotated(names, r - 1)):
            env.check_alive()
            target, command, batch = W4_VARIANTS[name]
            count = s["w4_single_keys"] if batch == 1 else s["w4_keys"]
            commands = keysets.delete_commands(command, batch, count)
            populate(env, keysets, count)
            try:
                removed, elapsed = run_delete(env, target, commands, count, timeout=120)
            except (OSError, ConnectionError, RuntimeError) as err:
                log("W4 %s failed: %s" % (name, err))
                continue
            left = env.redis_call("DBSIZE")
            if left != 0:
                log("W4 %s: %d keys left after deletion (expected 0)" % (name, left))
                continue
            rate = removed / elapsed
            rows.append({"round": r, "order": pos, "variant": name, "target": target,
                         "command": command, "batch": batch, "keys": removed,
                         "calls": len(commands), "seconds": round(elapsed, 4),
                         "keys_per_s": round(rate, 1),
                         "us_per_call": round(1e6 * elapsed / len(commands), 2),
                         "dbsize_after": left})
            log("round %d W4 %-35s %10.0f keys/s  (%d keys, %.3f s, %.1f us/call)"
                % (r, name, rate, removed, elapsed, 1e6 * elapsed / len(commands)))
    env.redis_call("FLUSHALL")


# --------------------------------------------------------------------------------------------
# W6: keyward in front of a 3-primary Redis Cluster
# --------------------------------------------------------------------------------------------

CLUSTER_PRIMARIES = 3
CLUSTER_SLOTS = 16384
# W6a: the clients and pipeline depth of W1.
W6A_CLIENTS, W6A_PIPELINE = 50, 16
# W6a targets, in the order of round 1:
#   direct-cluster          redis-benchmark --cluster against the primaries themselves: it
#                           reads the slot map and every client talks straight to one primary;
#   keyward-cluster         plain redis-benchmark against keyward --cluster, exactly W1;
#   keyward-cluster-spread  the same with -r W6A_RANDOM_KEYS: keys over all slots, so that every
#                           pipelined batch of 16 is split over the three primaries (reference).
W6A_TARGETS = ("direct-cluster", "keyward-cluster", "keyward-cluster-spread")
W6A_RANDOM_KEYS = 100_000
# W6b: name -> target. Both delete the same keys, 1000 per call, one call at a time.
W6B_VARIANTS = {
    "REMOVEKEYS x1000 via keyward-cluster": "keyward-cluster",
    "DEL per slot group direct (1000 keys per call)": "direct-cluster",
}


def _crc16_table():
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


CRC16_TABLE = _crc16_table()


def crc16(data, crc=0):
    """CRC-16/XMODEM (polynomial 0x1021, initial value 0, no reflection), the checksum Redis
    Cluster hashes keys with. `crc` continues the checksum of a prefix."""
    table = CRC16_TABLE
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ b]
    return crc


def hash_tag(key):
    """The part of a key that Redis Cluster hashes: the text between the first `{` and the first
    `}` after it, if that is not empty; otherwise the whole key."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


def key_slot(key):
    return crc16(hash_tag(key)) % CLUSTER_SLOTS


def bench_key_slots(indexes):
    """[key_slot(key_name(i)) for i in indexes], faster: key_name(i) is a fixed prefix without
    a hash tag and then 8 digits, so the checksum of the prefix is computed once."""
    prefix = b"kwbench:key:"
    if key_name(12345) != prefix + b"00012345" or b"{" in prefix:
        raise RuntimeError("bench_key_slots does not match key_name")
    base = crc16(prefix)
    return [crc16(b"%08d" % i, base) % CLUSTER_SLOTS for i in indexes]


def node_call(port, *args, timeout=60.0):
    with Client(port, timeout=timeout) as c:
        return c.call(*args)


class ClusterEnv:
    """Three cluster-enabled redis-servers made into one cluster (no replicas) and keyward in
    cluster mode in front of them, on free 127.0.0.1 ports. The cluster bus ports are set with
    --cluster-port (Redis 7), so that they are free ports too rather than port + 10000."""

    def __init__(self, work, keyward_bin, procs):
        self.work = work
        ports = free_ports(2 * CLUSTER_PRIMARIES + 1)
        self.ports = ports[:CLUSTER_PRIMARIES]
        bus_ports = ports[CLUSTER_PRIMARIES:2 * CLUSTER_PRIMARIES]
        self.kw_port = ports[-1]
        self.nodes = []
        self.node_logs = []
        for port, bus in zip(self.ports, bus_ports):
            logfile = os.path.join(work, "cluster-node-%d.log" % port)
            self.node_logs.append(logfile)
            self.nodes.append(procs.start("cluster node %d" % port, [
                "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", os.path.join(work, "nodes-%d.conf" % port),
                "--cluster-node-timeout", "5000", "--cluster-port", str(bus),
                "--save", "", "--appendonly", "no", "--dir", work, "--daemonize", "no",
            ], logfile))
        self.kw = None
        for port, proc, logfile in zip(self.ports, self.nodes, self.node_logs):
            wait_ready(port, proc, "cluster node :%d" % port, logfile)
        self.create()
        self.wait_ok(timeout=60.0)
        self.owner = self.slot_owners()
        self.check_slots()

        self.kw_conf = os.path.join(work, "keyward-cluster.toml")
        with open(self.kw_conf, "w") as f:
            f.write(
                "# Generated by scripts/bench/bench.py: built-in defaults except these.\n"
                "[server]\n"
                "listen = \"127.0.0.1:%d\"\n"
                "[upstream]\n"
                "mode = \"cluster\"\n"
                "nodes = [%s]\n" % (self.kw_port, ", ".join(
                    "\"127.0.0.1:%d\"" % p for p in self.ports)))
        self.kw_log = os.path.join(work, "keyward-cluster.log")
        self.kw = procs.start("keyward-cluster", [
            keyward_bin, "--config", self.kw_conf, "--log-level", "warn"], self.kw_log)
        wait_ready(self.kw_port, self.kw, "keyward-cluster", self.kw_log)

    def create(self):
        argv = ["redis-cli", "--cluster", "create",
                *["127.0.0.1:%d" % p for p in self.ports],
                "--cluster-replicas", "0", "--cluster-yes"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL)
        with open(os.path.join(self.work, "cluster-create.log"), "w") as f:
            f.write(out.stdout + out.stderr)
        if out.returncode != 0 or "All 16384 slots covered" not in out.stdout:
            raise RuntimeError("redis-cli --cluster create failed (status %d):\n%s\n%s"
                               % (out.returncode, out.stdout[-2000:], out.stderr[-2000:]))

    def wait_ok(self, timeout):
        """Until every node says cluster_state:ok, all slots served, all primaries known."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self.check_alive()
            ready = True
            for port in self.ports:
                info = node_call(port, "CLUSTER", "INFO").decode()
                fields = dict(line.split(":", 1) for line in info.split("\r\n") if ":" in line)
                if (fields.get("cluster_state") != "ok"
                        or fields.get("cluster_slots_ok") != str(CLUSTER_SLOTS)
                        or fields.get("cluster_known_nodes") != str(CLUSTER_PRIMARIES)
                        or fields.get("cluster_size") != str(CLUSTER_PRIMARIES)):
                    ready = False
                    last = ":%d %s" % (port, {k: fields.get(k) for k in (
                        "cluster_state", "cluster_slots_ok", "cluster_known_nodes",
                        "cluster_size")})
                    break
            if ready:
                return
            time.sleep(0.2)
        raise RuntimeError("the cluster did not reach cluster_state:ok within %.0f s (%s)"
                           % (timeout, last))

    def slot_owners(self):
        """For every slot, the index in self.ports of the primary that serves it, as every node
        sees it (they must agree)."""
        maps = []
        for port in self.ports:
            owner = [None] * CLUSTER_SLOTS
            for entry in node_call(port, "CLUSTER", "SLOTS"):
                start, end, primary = entry[0], entry[1], entry[2]
                index = self.ports.index(int(primary[1]))
                for slot in range(start, end + 1):
                    owner[slot] = index
            maps.append(owner)
        if any(m != maps[0] for m in maps) or None in maps[0]:
            raise RuntimeError("the nodes disagree on the slot map, or a slot has no owner")
        return maps[0]

    def check_slots(self):
        """The CRC16 here must agree with Redis: a sample of keys against CLUSTER KEYSLOT."""
        indexes = list(range(0, 1_000_000, 16_661))
        fast = dict(zip(indexes, bench_key_slots(indexes)))
        sample = [(key_name(i), fast[i]) for i in indexes]
        sample += [(key, None) for key in (b"foo", b"{user1000}.following", b"foo{}{bar}",
                                           b"foo{{bar}}zap", b"{}x")]
        with Client(self.ports[0]) as c:
            for key, quick in sample:
                want = c.call("CLUSTER", "KEYSLOT", key)
                if key_slot(key) != want or quick not in (None, want):
                    raise RuntimeError("slot of %r: %d (%s) here, %d in Redis"
                                       % (key, key_slot(key), quick, want))

    def pids(self):
        return [p.pid for p in self.nodes]

    def check_alive(self):
        for port, proc in zip(self.ports, self.nodes):
            if proc.poll() is not None:
                raise RuntimeError("cluster node :%d died (status %s)" % (port, proc.returncode))
        if self.kw is not None and self.kw.poll() is not None:
            raise RuntimeError("keyward-cluster died (status %s)" % self.kw.returncode)

    def dbsize(self):
        return sum(node_call(p, "DBSIZE") for p in self.ports)

    def stop(self):
        if self.kw is not None:
            Procs.stop(self.kw)
        for proc in self.nodes:
            Procs.stop(proc)


def w6a_argv(cl, target, n):
    common = ["-c", str(W6A_CLIENTS), "-P", str(W6A_PIPELINE), "-n", str(n), "-t", "set,get",
              "--csv"]
    if target == "direct-cluster":
        return ["redis-benchmark", "--cluster", "-h", "127.0.0.1", "-p", str(cl.ports[0]),
                *common]
    argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(cl.kw_port), *common]
    if target == "keyward-cluster-spread":
        argv += ["-r", str(W6A_RANDOM_KEYS)]
    return argv


def run_w6a(cl, s, rows, info):
    def bench(target, n, timeout):
        return timed_redis_benchmark(
            w6a_argv(cl, target, n), "W6a %s" % target, n, timeout,
            [cl.kw.pid] if target != "direct-cluster" else [], cl.pids())

    info["random_keys"] = W6A_RANDOM_KEYS
    log("W6a warm-up round (calibrates the request counts; not reported)")
    n_of = {}
    for target in W6A_TARGETS:
        res = bench(target, RB_WORKLOADS["W1"][2], timeout=120)
        n_of[target] = s["w6_n"] or calibrated_n("W1", res, s["duration"])
    info["n"] = n_of
    log("W6a request counts per test: " + ", ".join("%s=%d" % kv for kv in n_of.items()))
    for r in range(1, s["w6_rounds"] + 1):
        for pos, target in enumerate(rotated(W6A_TARGETS, r - 1)):
            cl.check_alive()
            n = n_of[target]
            res = bench(target, n, timeout=max(60.0, 20 * s["duration"]))
            if res is None:
                continue
            for test, cols in res["tests"].items():
                rows.append({
                    "round": r, "order": pos, "workload": "W6a", "test": test, "target": target,
                    "n": n, "wall_s": round(res["wall_s"], 3),
                    "proxy_cpu_s": round(res["proxy_cpu_s"], 3),
                    "redis_cpu_s": round(res["redis_cpu_s"], 3),
                    "cpu_us_per_req": round(1e6 * res["proxy_cpu_s"] / (2 * n), 3),
                    **{c: cols[c] for c in RB_COLUMNS},
                })
            log("round %d W6a %-22s SET %10.0f rps  GET %10.0f rps  p50 %.3f/%.3f ms  (n=%d)"
                % (r, target, res["tests"]["SET"]["rps"], res["tests"]["GET"]["rps"],
                   res["tests"]["SET"]["p50_latency_ms"], res["tests"]["GET"]["p50_latency_ms"],
                   n))


class ClusterKeys:
    """The W6b keys key_name(0..count-1), located on the cluster: population files per primary,
    REMOVEKEYS commands of 1000 keys for keyward, and for the direct client the same 1000-key
    calls grouped by hash slot, one DEL per slot, each primary's DELs in one write."""

    def __init__(self, work, cl, count):
        slots = bench_key_slots(range(count))
        owner = cl.owner
        self.count = count
        self.per_node = [0] * len(cl.ports)
        self.files = []
        node_keys = [[] for _ in cl.ports]
        for i, slot in enumerate(slots):
            node_keys[owner[slot]].append(i)
        for index, keys in enumerate(node_keys):
            path = os.path.join(work, "populate-cluster-%d-%d.resp" % (index, count))
            with open(path, "wb") as f:
                for start in range(0, len(keys), 10_000):
                    f.write(b"".join(encode(b"SET", key_name(i), b"v")
                                     for i in keys[start:start + 10_000]))
            self.files.append(path)
            self.per_node[index] = len(keys)
        self.removekeys = []
        # Per call: [(node index, DELs of that node's slot groups as one buffer, DEL count)].
        self.direct = []
        self.direct_commands = 0
        for start in range(0, count, 1000):
            idx = range(start, min(count, start + 1000))
            self.removekeys.append(encode(b"REMOVEKEYS", *[key_name(i) for i in idx]))
            groups = {}
            for i in idx:
                groups.setdefault(slots[i], []).append(key_name(i))
            per_node = {}
            for slot, keys in groups.items():
                per_node.setdefault(owner[slot], []).append(encode(b"DEL", *keys))
            self.direct.append([(node, b"".join(cmds), len(cmds))
                                for node, cmds in sorted(per_node.items())])
            self.direct_commands += len(groups)


def populate_cluster(cl, ck):
    for port in cl.ports:
        node_call(port, "FLUSHALL")
    for port, path in zip(cl.ports, ck.files):
        with open(path, "rb") as f:
            out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--pipe"],
                                 stdin=f, capture_output=True, text=True, timeout=300)
        if out.returncode != 0 or "errors: 0" not in out.stdout:
            raise RuntimeError("redis-cli --pipe to :%d failed: %s %s"
                               % (port, out.stdout[-500:], out.stderr[-500:]))
    sizes = [node_call(p, "DBSIZE") for p in cl.ports]
    if sizes != ck.per_node:
        raise RuntimeError("populated %s keys per primary but DBSIZE says %s"
                           % (ck.per_node, sizes))


def cluster_delete_loop(cl, calls, expected, timeout):
    """The careful cluster-aware application: for each call, one DEL per slot group, every
    primary's DELs written at once (all primaries first, so that they work in parallel), then
    every reply read. Returns (removed, seconds, CPU seconds of this client)."""
    clients = []
    try:
        for port in cl.ports:
            clients.append(Client(port, timeout=timeout))
            if clients[-1].call("PING") != "PONG":
                raise RuntimeError("no PONG from :%d" % port)
        removed = 0
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for call in calls:
            for node, payload, _ in call:
                clients[node].send(payload)
            for node, _, count in call:
                removed += clients[node].read_integer_sum(count)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        for c in clients:
            c.close()
    if removed != expected:
        raise RuntimeError("the direct cluster client removed %d keys, expected %d"
                           % (removed, expected))
    return removed, elapsed, cpu


def run_w6b(cl, s, rows, info, work):
    count = s["w6_keys"]
    log("W6b: locating %d keys on the cluster and encoding the deletes" % count)
    ck = ClusterKeys(work, cl, count)
    info["keys_per_primary"] = ck.per_node
    info["direct_dels_per_call"] = round(ck.direct_commands / len(ck.direct), 1)
    names = list(W6B_VARIANTS)
    for r in range(1, s["w6_rounds"] + 1):
        for pos, name in enumerate(rotated(names, r - 1)):
            cl.check_alive()
            target = W6B_VARIANTS[name]
            populate_cluster(cl, ck)
            try:
                if target == "keyward-cluster":
                    command, calls = "REMOVEKEYS", len(ck.removekeys)
                    removed, elapsed, cpu = delete_loop(cl.kw_port, target, ck.removekeys,
                                                        count, timeout=120)
                else:
                    command, calls = "DEL", len(ck.direct)
                    removed, elapsed, cpu = cluster_delete_loop(cl, ck.direct, count,
                                                                timeout=120)
            except (OSError, ConnectionError, RuntimeError, RespError) as err:
                log("W6b %s failed: %s" % (name, err))
                continue
            left = cl.dbsize()
            if left != 0:
                log("W6b %s: %d keys left after deletion (expected 0)" % (name, left))
                continue
            rate = removed / elapsed
            commands = calls if target == "keyward-cluster" else ck.direct_commands
            rows.append({"round": r, "order": pos, "variant": name, "target": target,
                         "command": command, "keys": removed, "calls": calls,
                         "commands": commands, "seconds": round(elapsed, 4),
                         "keys_per_s": round(rate, 1),
                         "us_per_call": round(1e6 * elapsed / calls, 2),
                         "client_cpu_us_per_call": round(1e6 * cpu / calls, 2),
                         "dbsize_after": left})
            log("round %d W6b %-46s %10.0f keys/s  (%d keys, %.3f s, %.1f us/call, client CPU "
                "%.1f us/call)" % (r, name, rate, removed, elapsed, 1e6 * elapsed / calls,
                                   1e6 * cpu / calls))
    for port in cl.ports:
        node_call(port, "FLUSHALL")


def run_w6(work, keyward_bin, procs, s, other_pids=()):
    """W6: W1 and W4 through keyward in front of a 3-primary Redis Cluster, against going direct
    with a cluster-aware client. Starts the cluster and keyward-cluster, runs W6a and W6b, stops
    them again and returns {"a": rows, "b": rows, "info": {...}}. `other_pids`: processes of
    this run that stay idle meanwhile, not counted as foreign load."""
    info = {"loadavg_start": open("/proc/loadavg").read().strip(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    out = {"a": [], "b": [], "info": info}
    started = time.monotonic()
    busy0 = machine_busy_seconds()
    others0 = sum(cpu_seconds(p) for p in other_pids)
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    log("W6: starting a %d-primary Redis Cluster and keyward --cluster" % CLUSTER_PRIMARIES)
    cl = ClusterEnv(work, keyward_bin, procs)
    try:
        ranges = []
        for index in range(len(cl.ports)):
            slots = [i for i, o in enumerate(cl.owner) if o == index]
            ranges.append("%d-%d" % (slots[0], slots[-1]) if slots else "none")
        info["slot_ranges"] = ranges
        log("cluster primaries :%s (slots %s), keyward-cluster :%d"
            % (", :".join(str(p) for p in cl.ports), ", ".join(ranges), cl.kw_port))
        run_w6a(cl, s, out["a"], info)
        log("W6b: keys removed per second on the cluster")
        run_w6b(cl, s, out["b"], info, work)
        cl.check_alive()
        info["keyward_log_lines"] = count_lines(cl.kw_log)
    finally:
        cl.stop()
    # The stopped (and reaped) cluster processes now count in RUSAGE_CHILDREN.
    busy = machine_busy_seconds() - busy0
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours = (self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime
            + kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime
            + sum(cpu_seconds(p) for p in other_pids) - others0)
    elapsed = time.monotonic() - started
    info["elapsed_s"] = round(elapsed, 1)
    info["foreign_cpu_cores"] = round(max(0.0, busy - ours) / max(elapsed, 1e-9), 2)
    info["loadavg_end"] = open("/proc/loadavg").read().strip()
    return out


# --------------------------------------------------------------------------------------------
# W5: resident memory per idle connection
# --------------------------------------------------------------------------------------------

def settled_rss(pid, settle=1.0):
    time.sleep(settle)
    samples = []
    for _ in range(3):
        samples.append(rss_kib(pid))
        time.sleep(0.3)
    return statistics.median(samples)


def holder_cmd(holder, word, expect, timeout):
    if word:
        holder.stdin.write(word + "\n")
        holder.stdin.flush()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = holder.stdout.readline()
        if not line:
            raise RuntimeError("the connection holder exited (status %s)" % holder.poll())
        if line.startswith(expect):
            return int(line.split()[1])
        if line.startswith("ERROR"):
            raise RuntimeError("connection holder: " + line.strip())
    raise RuntimeError("connection holder: no %s within %.0f s" % (expect, timeout))


def run_w5(env, s, conns, rows):
    script = os.path.abspath(__file__)
    for target in ("keyward", "keyward-shared", "twemproxy", "direct"):
        env.check_alive()
        pid = env.pid[target]
        idle = settled_rss(pid, settle=0.5)
        holder = subprocess.Popen(
            [sys.executable, script, "hold", str(env.port[target]), str(conns)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=env.work)
        with open(os.path.join(env.work, "pids"), "a") as f:
            f.write("%d\n" % holder.pid)
        try:
            opened = holder_cmd(holder, None, "CONNECTED", timeout=180)
            connected = settled_rss(pid)
            pinged_n = holder_cmd(holder, "PING", "PINGED", timeout=180)
            pinged = settled_rss(pid)
            holder_cmd(holder, "CLOSE", "CLOSED", timeout=60)
            after = settled_rss(pid)
        finally:
            Procs.stop(holder)
        row = {"target": target, "conns": opened, "rss_idle_kib": idle,
               "rss_connected_kib": connected, "rss_after_ping_kib": pinged,
               "rss_after_close_kib": after,
               "bytes_per_conn_connected": round(1024 * (connected - idle) / opened, 1),
               "bytes_per_conn_after_ping": round(1024 * (pinged - idle) / pinged_n, 1)}
        rows.append(row)
        log("W5 %-14s idle %d KiB, %d conns %d KiB (%.0f B/conn), after PING %d KiB "
            "(%.0f B/conn), after close %d KiB" % (
                target, idle, opened, connected, row["bytes_per_conn_connected"], pinged,
                row["bytes_per_conn_after_ping"], after))


def hold(port, count):
    """Helper process of W5: opens `count` connections and keeps them until told to close.

    Talks on stdin/stdout: prints `CONNECTED n`; on `PING` sends one PING on every connection
    and reads the replies, prints `PINGED n`; on `CLOSE` (or end of input) closes everything,
    prints `CLOSED n` and exits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, count + 256, 65536))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass
    socks = []
    try:
        for i in range(count):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
            except OSError as err:
                print("ERROR connect %d: %s" % (i, err), flush=True)
                return 1
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(s)
        print("CONNECTED %d" % len(socks), flush=True)
        for line in sys.stdin:
            word = line.strip()
            if word == "PING":
                ping = encode("PING")
                for i, s in enumerate(socks):
                    s.sendall(ping)
                    reply = b""
                    while not reply.endswith(b"\r\n"):
                        chunk = s.recv(64)
                        if not chunk:
                            print("ERROR ping %d: connection closed" % i, flush=True)
                            return 1
                        reply += chunk
                    if reply != b"+PONG\r\n":
                        print("ERROR ping %d: %r" % (i, reply), flush=True)
                        return 1
                print("PINGED %d" % len(socks), flush=True)
            elif word == "CLOSE":
                break
        return 0
    finally:
        n = len(socks)
        for s in socks:
            s.close()
        print("CLOSED %d" % n, flush=True)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "hold":
        return hold(int(sys.argv[2]), int(sys.argv[3]))

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--keyward", required=True, help="the keyward binary to run")
    ap.add_argument("--floor-relay", required=True, help="the examples/floor_relay binary")
    ap.add_argument("--out", required=True, help="directory for results.{csv,md,svg}")
    ap.add_argument("--meta", action="append", default=[], help="KEY=VALUE for the report")
    args = ap.parse_args()

    s = settings()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    def on_alarm(_signum, _frame):
        raise Deadline("the run exceeded MAX_SECONDS=%d" % s["max_seconds"])

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(s["max_seconds"])

    fd_soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    procs = Procs(args.work)
    if s["w6_only"]:
        return main_w6_only(args, s, procs)
    # keyward in its default mode holds two descriptors per client connection (client +
    # upstream); keyward-shared gets the same number of connections, for a like comparison.
    w5_conns = max(100, min(s["w5_conns"], (fd_soft - 256) // 2))
    if w5_conns < s["w5_conns"]:
        log("W5: %d connections instead of %d: the fd limit (%d) must hold 2 per connection "
            "in keyward" % (w5_conns, s["w5_conns"], fd_soft))

    meta = dict(m.split("=", 1) for m in args.meta)
    meta.update(report.machine_info())
    meta["settings"] = s
    meta["fd_limit"] = fd_soft
    meta["w5_conns_requested"] = s["w5_conns"]
    meta["w5_conns"] = w5_conns
    meta["loadavg_start"] = open("/proc/loadavg").read().strip()

    results = {"rb": [], "w4": [], "w5": [], "w6": None}
    started = time.monotonic()
    try:
        env = Env(args.work, args.keyward, args.floor_relay, procs, fd_soft, w5_conns)
        log("redis-server :%d, nutcracker :%d, keyward :%d, keyward-shared :%d (work dir %s)"
            % (env.port["direct"], env.port["twemproxy"], env.port["keyward"],
               env.port["keyward-shared"], args.work))
        busy0 = machine_busy_seconds()
        ours0 = sum(cpu_seconds(p) for p in env.pid.values())
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        # W5 first, on fresh processes: no allocator memory retained from earlier workloads.
        log("W5: resident memory with %d idle connections" % w5_conns)
        run_w5(env, s, w5_conns, results["w5"])
        run_rb_workloads(env, s, results["rb"])
        log("W4: keys removed per second")
        run_w4(env, s, results["w4"])
        try:
            results["w6"] = run_w6(args.work, args.keyward, procs, s,
                                   other_pids=list(env.pid.values()))
        except (OSError, ConnectionError, RuntimeError, RespError,
                subprocess.SubprocessError) as err:
            # W1-W5 are still reported; the W6 section says what went wrong.
            log("W6 failed: %s" % err)
            results["w6"] = {"error": str(err).splitlines()[0] if str(err) else repr(err)}
        env.check_alive()
        busy = machine_busy_seconds() - busy0
        ours = sum(cpu_seconds(p) for p in env.pid.values()) - ours0
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours += (self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime
                 + kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime)
        elapsed = time.monotonic() - started
        meta["elapsed_s"] = round(elapsed, 1)
        meta["foreign_cpu_cores"] = round(max(0.0, busy - ours) / max(elapsed, 1e-9), 2)
        meta["loadavg_end"] = open("/proc/loadavg").read().strip()
        meta["keyward_log_warnings"] = {name: count_lines(path)
                                        for name, path in env.kw_log.items()}
    except Deadline as err:
        log(str(err))
        return 3
    finally:
        signal.alarm(0)
        procs.stop_all()
    report.write_all(results, meta, args.out)
    report_w6.write(results["w6"], meta, args.out)
    return 0


def main_w6_only(args, s, procs):
    """W6_ONLY=1: only W6; its outputs replace the W6 parts of the files in --out."""
    meta = dict(m.split("=", 1) for m in args.meta)
    meta.update(report.machine_info())
    meta["settings"] = s
    try:
        w6 = run_w6(args.work, args.keyward, procs, s)
    except Deadline as err:
        log(str(err))
        return 3
    except (OSError, ConnectionError, RuntimeError, RespError,
            subprocess.SubprocessError) as err:
        log("W6 failed: %s" % err)
        return 1
    finally:
        signal.alarm(0)
        procs.stop_all()
    if not (w6["a"] and w6["b"]):
        log("W6 has no W6a or no W6b measurement; %s/ left as it was" % args.out)
        return 1
    report_w6.write(w6, meta, args.out)
    return 0


def count_lines(path):
    try:
        with open(path, errors="replace") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
