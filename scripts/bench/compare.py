#!/usr/bin/env python3
"""Two keyward binaries side by side in one run: W1, W2 and W4 of the load benchmark.

    scripts/bench/compare.py --before OLD_BINARY --after NEW_BINARY [--rounds 5]
    scripts/bench/compare.py --before B --after B --after-toml '[admin]
    listen = "127.0.0.1:0"'          # one binary, a setting off and on (metrics)

For a refactor that must not cost performance: one redis-server (no persistence) and four
keyward processes in front of it, on free 127.0.0.1 ports: each binary in the default mode
(`share_connections = false`) and in the shared mode (`true`), with `[guard] deny_commands = []`
and otherwise the built-in defaults. Every round runs each workload against the four targets in
a rotating order (so that drift on a shared machine falls on all of them alike):

- W1: `redis-benchmark -c 50 -P 16 -t set,get`, requests per second;
- W2: `redis-benchmark -c 50 -t set,get`, requests per second;
- W4: keys removed per second by REMOVEKEYS of 1000 keys, one call in flight (keys put in place
  directly in Redis with `redis-cli --pipe` before every measurement).

Prints the median of each target over the rounds and the ratio after/before per mode; the
single measurements go to WORK/compare-rounds.csv. Standard library only (shares bench.py's
helpers).
"""

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench import (  # noqa: E402
    KeySets, Procs, delete_loop, free_ports, log, timed_redis_benchmark, wait_ready)
from resp import Client  # noqa: E402

MODES = {"private": False, "shared": True}


def start(args, work, procs):
    ports = free_ports(5)
    redis_port, kw_ports = ports[0], ports[1:]
    redis_log = os.path.join(work, "redis.log")
    redis = procs.start("redis-server", [
        "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", work, "--daemonize", "no"], redis_log)
    wait_ready(redis_port, redis, "redis-server", redis_log)
    targets = {}
    i = 0
    for build, binary, extra in (("before", args.before, args.before_toml),
                                 ("after", args.after, args.after_toml)):
        for mode, shared in MODES.items():
            name = "%s-%s" % (build, mode)
            conf = os.path.join(work, name + ".toml")
            with open(conf, "w") as f:
                f.write("[server]\nlisten = \"127.0.0.1:%d\"\n[upstream]\nnodes = "
                        "[\"127.0.0.1:%d\"]\nshare_connections = %s\n[guard]\n"
                        "deny_commands = []\n%s\n"
                        % (kw_ports[i], redis_port, "true" if shared else "false", extra))
            logfile = os.path.join(work, name + ".log")
            proc = procs.start(name, [binary, "--config", conf], logfile,
                               env=dict(os.environ, RUST_LOG="warn"))
            wait_ready(kw_ports[i], proc, name, logfile)
            targets[name] = (kw_ports[i], proc.pid)
            i += 1
    return redis_port, redis.pid, targets


def rb(port, pid, redis_pid, clients, pipeline, n):
    argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(clients),
            "-n", str(n), "-t", "set,get", "--csv"]
    if pipeline > 1:
        argv += ["-P", str(pipeline)]
    result = timed_redis_benchmark(argv, "port %d" % port, n, 300, [pid], [redis_pid])
    if result is None:
        return None
    return {t: result["tests"][t]["rps"] for t in ("SET", "GET")}


def populate(redis_port, keysets, count):
    with Client(redis_port, timeout=60) as c:
        c.call("FLUSHALL")
    with open(keysets.population_file(count), "rb") as f:
        out = subprocess.run(["redis-cli", "-p", str(redis_port), "--pipe"], stdin=f,
                             capture_output=True, text=True, timeout=300)
    if out.returncode != 0 or "errors: 0" not in out.stdout:
        raise RuntimeError("redis-cli --pipe failed: " + out.stdout[-300:] + out.stderr[-300:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--before-toml", default="", help="TOML appended to the before config")
    ap.add_argument("--after-toml", default="", help="TOML appended to the after config")
    ap.add_argument("--w1-n", type=int, default=400_000)
    ap.add_argument("--w2-n", type=int, default=100_000)
    ap.add_argument("--w4-keys", type=int, default=200_000)
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="keyward-compare-")
    os.makedirs(work, exist_ok=True)
    procs = Procs(work)
    rows = []
    try:
        redis_port, redis_pid, targets = start(args, work, procs)
        names = list(targets)
        keysets = KeySets(work)
        commands = keysets.delete_commands(b"REMOVEKEYS", 1000, args.w4_keys)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            log("round %d/%d: %s" % (r + 1, args.rounds, ", ".join(order)))
            for name in order:
                port, pid = targets[name]
                for workload, clients, pipeline, n in (("W1", 50, 16, args.w1_n),
                                                      ("W2", 50, 1, args.w2_n)):
                    got = rb(port, pid, redis_pid, clients, pipeline, n)
                    if got:
                        for test, rps in got.items():
                            rows.append((r + 1, name, "%s %s" % (workload, test), rps))
                populate(redis_port, keysets, args.w4_keys)
                removed, seconds, _ = delete_loop(port, name, commands, args.w4_keys, 300)
                rows.append((r + 1, name, "W4 REMOVEKEYS x1000", removed / seconds))
    finally:
        procs.stop_all()
    with open(os.path.join(work, "compare-rounds.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("round", "target", "measure", "per_second"))
        w.writerows(rows)
    measures = sorted({m for _, _, m, _ in rows})
    median = {}
    for m in measures:
        for name in targets:
            values = [v for _, t, mm, v in rows if t == name and mm == m]
            if values:
                median[(name, m)] = statistics.median(values)
    print("\nmedians over %d rounds (per second); ratio = after / before, same mode\n"
          % args.rounds)
    print("| measure | before-private | after-private | ratio | before-shared | after-shared "
          "| ratio |")
    print("|---|---|---|---|---|---|---|")
    for m in measures:
        cells = [m]
        for mode in MODES:
            b = median.get(("before-" + mode, m))
            a = median.get(("after-" + mode, m))
            cells += ["%.0f" % b if b else "-", "%.0f" % a if a else "-",
                      "%.2fx" % (a / b) if a and b else "-"]
        print("| " + " | ".join(cells) + " |")
    print("\nsingle measurements: %s" % os.path.join(work, "compare-rounds.csv"))


if __name__ == "__main__":
    main()
