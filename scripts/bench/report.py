"""Outputs of the load benchmark: the table on stdout, results.csv, results-rounds.csv,
results.md and results.svg (a hand-written SVG chart), for W1-W5. W6 (the cluster) is added to
results.csv, results-rounds.csv and results.md by report_w6.py, which also writes its own files.

Every number in the table is a median over the measured rounds; results-rounds.csv keeps every
single measurement, so the spread can be checked.
"""

import csv
import datetime
import os
import platform
import statistics
import subprocess

TARGETS = ("direct", "twemproxy", "keyward", "keyward-shared")
# W3 only: examples/floor_relay.rs, a relay that copies bytes and does nothing else. Its ratio
# to direct is what the extra hop of any proxy costs on the machine; not a column of the table.
FLOOR = "floor-relay"
# The two keyward processes (same binary): the default mode and share_connections = true.
KEYWARDS = ("keyward", "keyward-shared")
# (numerator, denominator) of the ratio columns.
RATIOS = (("keyward", "direct"), ("keyward", "twemproxy"),
          ("keyward-shared", "direct"), ("keyward-shared", "twemproxy"))
COLORS = {"direct": "#7f7f7f", "twemproxy": "#e69f00", "keyward": "#0072b2",
          "keyward-shared": "#56b4e9",
          # W6 (report_w6.py): the cluster targets.
          "direct-cluster": "#7f7f7f", "keyward-cluster": "#0072b2",
          "keyward-cluster-spread": "#009e73"}
MODES_SENTENCE = (
    "keyward runs as two processes from the same binary with identical configurations except "
    "`[upstream] share_connections`: \"keyward\" is the default (`false`: every client gets an "
    "upstream connection of its own, opened when it connects) and \"keyward-shared\" sets "
    "`true` (stateless requests of all clients share one pipelined upstream connection, "
    "twemproxy-style; a client that needs per-connection state moves to a connection of its "
    "own); both run with the default `[server] threads = 1`.")
W4_NAMES = {
    "direct": "DEL x1000 direct",
    "twemproxy": "DEL x1000 via twemproxy",
    "keyward": "REMOVEKEYS x1000 via keyward",
    "keyward-shared": "REMOVEKEYS x1000 via keyward-shared",
}
W4_SINGLE = "DEL x1 direct"
W4_KW_DEL = {"keyward": "DEL x1000 via keyward",
             "keyward-shared": "DEL x1000 via keyward-shared"}
W4_UNLINK = "UNLINK x1000 direct"
# results.md gets its W6 section from report_w6.py, between these markers; this module writes
# them with a placeholder, so that the section can be replaced on its own (W6_ONLY=1).
W6_MD_BEGIN = "<!-- W6 begin: this section is written by scripts/bench/report_w6.py -->"
W6_MD_END = "<!-- W6 end -->"
W6_READ_BULLET = (
    "- W6 (W1 and W4 through keyward in cluster mode in front of a 3-primary Redis Cluster, "
    "against a cluster-aware client going direct) has its own section above and its own report, "
    "[w6.md](w6.md), with chart w6.svg; its rows are the ones with workload W6 in results.csv "
    "and section W6 in results-rounds.csv. `W6_ONLY=1 scripts/bench.sh` runs W6 alone and "
    "replaces only these W6 parts, so the W6 section can be newer than the rest of this file: "
    "it says when it was measured.")
WORKLOAD_TITLES = {
    "W1": "W1 50 clients, pipeline 16",
    "W2": "W2 50 clients, no pipelining",
    "W3": "W3 1 client, no pipelining",
}


def command_output(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = "%.1f GiB" % (kib / 1024 / 1024)
    except (OSError, ValueError, IndexError):
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "redis": command_output(["redis-server", "--version"]),
        "redis_benchmark": command_output(["redis-benchmark", "--version"]),
        "nutcracker": command_output(["nutcracker", "--version"]),
        "python": platform.python_version(),
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------

def summarize(results, meta):
    """Rows of the summary: one per (workload, test, metric), a median per target."""
    rows = []

    def add(workload, test, metric, unit, better, per_target, extra=None):
        """per_target: {target: [value, ...]} or {target: [(round, value), ...]}."""
        by_round = {}
        for t, items in list(per_target.items()):
            if items and isinstance(items[0], tuple):
                by_round[t] = dict(items)
                per_target[t] = [v for _, v in items]
        vals = {t: median(per_target.get(t, [])) for t in TARGETS}
        spread = {t: (min(per_target[t]), max(per_target[t]), len(per_target[t]))
                  if per_target.get(t) else (None, None, 0) for t in TARGETS}
        ratios = RATIOS
        if per_target.get(FLOOR):
            vals[FLOOR] = median(per_target[FLOOR])
            ratios = RATIOS + ((FLOOR, "direct"),)
        row = {"workload": workload, "test": test, "metric": metric, "unit": unit,
               "better": better, "values": vals, "spread": spread,
               "ratio": {(a, b): ratio(vals[a], vals[b]) for a, b in ratios},
               "paired": {}}
        # Ratios within each round (the targets ran back to back there), then their median
        # and range: robust to drift between rounds.
        for a, b in ratios:
            num_, den = by_round.get(a, {}), by_round.get(b, {})
            paired = [num_[r] / den[r] for r in num_ if r in den and den[r]]
            row["paired"][(a, b)] = ((median(paired), min(paired), max(paired))
                                     if paired else (None, None, None))
        row["by_round"] = by_round
        if extra:
            row.update(extra)
        rows.append(row)
        return row

    rb = results["rb"]
    for workload in ("W1", "W2", "W3"):
        for test in ("SET", "GET"):
            sel = [r for r in rb if r["workload"] == workload and r["test"] == test]
            for metric, col, unit, better in (
                    ("throughput", "rps", "req/s", "higher"),
                    ("p50 latency", "p50_latency_ms", "ms", "lower"),
                    ("p99 latency", "p99_latency_ms", "ms", "lower")):
                add(workload, test, metric, unit, better,
                    {t: [(r["round"], r[col]) for r in sel if r["target"] == t]
                     for t in TARGETS + (FLOOR,)})
            if workload == "W3":
                # One client, one request at a time: the mean round trip is exactly 1/throughput,
                # with none of the 8-microsecond bucketing of redis-benchmark's percentiles.
                add(workload, test, "mean latency (1/throughput)", "ms", "lower",
                    {t: [(r["round"], 1000.0 / r["rps"]) for r in sel
                         if r["target"] == t and r["rps"]] for t in TARGETS + (FLOOR,)})
        sel = [r for r in rb if r["workload"] == workload and r["test"] == "SET"]
        if workload != "W3":
            add(workload, "SET+GET", "proxy CPU per request", "us", "lower",
                {t: [(r["round"], r["cpu_us_per_req"]) for r in sel if r["target"] == t]
                 for t in TARGETS if t != "direct"})

    w4 = results["w4"]
    per = {t: [(r["round"], r["keys_per_s"]) for r in w4 if r["variant"] == W4_NAMES[t]]
           for t in TARGETS}
    add("W4", "delete 1000 keys per call", "keys removed", "keys/s", "higher", per,
        {"labels": {"direct": "DEL x1000", "twemproxy": "DEL x1000", "keyward": "REMOVEKEYS",
                    "keyward-shared": "REMOVEKEYS"}})
    single = [(r["round"], r["keys_per_s"]) for r in w4 if r["variant"] == W4_SINGLE]
    add("W4", "DEL one key per call", "keys removed", "keys/s", "higher", {"direct": single})
    kw_del = {t: [(r["round"], r["keys_per_s"]) for r in w4 if r["variant"] == name]
              for t, name in W4_KW_DEL.items()}
    add("W4", "plain DEL x1000 (reference)", "keys removed", "keys/s", "higher", kw_del)
    unlink = [(r["round"], r["keys_per_s"]) for r in w4 if r["variant"] == W4_UNLINK]
    add("W4", "UNLINK x1000 (reference)", "keys removed", "keys/s", "higher",
        {"direct": unlink})

    w5 = {r["target"]: r for r in results["w5"]}
    for metric, col, unit in (
            ("RSS idle", "rss_idle_kib", "KiB"),
            ("RSS with N connections", "rss_connected_kib", "KiB"),
            ("per connection, connected", "bytes_per_conn_connected", "bytes"),
            ("per connection, after 1 PING", "bytes_per_conn_after_ping", "bytes")):
        add("W5", "%d idle conns" % meta.get("w5_conns", 0), metric, unit, "lower",
            {t: [w5[t][col]] for t in TARGETS if t in w5})
    return rows


def find(rows, workload, test, metric):
    for r in rows:
        if r["workload"] == workload and r["test"] == test and r["metric"] == metric:
            return r
    return None


def targets(rows):
    """The targets of issue 4, for each keyward mode: (label, measured ratio or value,
    comparison, threshold, kind, range of the same ratio taken round by round, keyward target).
    The two modes' checks of the same target are adjacent."""
    out = []

    def rng(r, a, b):
        if not r:
            return ""
        _, lo, hi = r["paired"].get((a, b), (None, None, None))
        return "" if lo is None else "%.2f-%.2fx" % (lo, hi)

    def rng2(a, ta, b, tb):
        if not a or not b:
            return ""
        x, y = a["by_round"].get(ta, {}), b["by_round"].get(tb, {})
        paired = [x[r] / y[r] for r in x if r in y and y[r]]
        return "%.2f-%.2fx" % (min(paired), max(paired)) if paired else ""

    def both(make):
        for kw in KEYWARDS:
            out.append(make(kw) + (kw,))

    def vs(r, kw, other):
        return r and r["ratio"][(kw, other)]

    for workload in ("W1", "W2"):
        for test in ("SET", "GET"):
            r = find(rows, workload, test, "throughput")
            both(lambda kw: ("%s %s throughput %s/twemproxy" % (workload, test, kw),
                             vs(r, kw, "twemproxy"), ">=", 1.0, "target",
                             rng(r, kw, "twemproxy")))
    for test in ("SET", "GET"):
        r = find(rows, "W1", test, "throughput")
        both(lambda kw: ("W1 %s throughput %s/direct" % (test, kw), vs(r, kw, "direct"), ">=",
                         0.8, "aim", rng(r, kw, "direct")))
    def floor(r, label):
        # The same goal for the relay that does nothing: where it misses too, no proxy can
        # meet the goal on this machine.
        if r and (FLOOR, "direct") in r["ratio"]:
            out.append((label, r["ratio"][(FLOOR, "direct")], "<=", 1.3, "floor",
                        rng(r, FLOOR, "direct"), FLOOR))

    for test in ("SET", "GET"):
        r = find(rows, "W3", test, "p50 latency")
        both(lambda kw: ("W3 %s p50 latency %s/direct" % (test, kw), vs(r, kw, "direct"), "<=",
                         1.3, "target", rng(r, kw, "direct")))
        floor(r, "W3 %s p50 latency %s/direct (the floor)" % (test, FLOOR))
    for test in ("SET", "GET"):
        r = find(rows, "W3", test, "mean latency (1/throughput)")
        both(lambda kw: ("W3 %s mean latency %s/direct (finer check)" % (test, kw),
                         vs(r, kw, "direct"), "<=", 1.3, "extra", rng(r, kw, "direct")))
        floor(r, "W3 %s mean latency %s/direct (the floor)" % (test, FLOOR))
    batch = find(rows, "W4", "delete 1000 keys per call", "keys removed")
    single = find(rows, "W4", "DEL one key per call", "keys removed")
    unlink = find(rows, "W4", "UNLINK x1000 (reference)", "keys removed")

    def removekeys(kw):
        return batch and batch["values"][kw]

    both(lambda kw: ("W4 REMOVEKEYS via %s / direct DEL x1000 (keys/s)" % kw,
                     vs(batch, kw, "direct"), ">=", 0.8, "target", rng(batch, kw, "direct")))
    both(lambda kw: ("W4 REMOVEKEYS via %s / direct DEL x1 per call (keys/s)" % kw,
                     ratio(removekeys(kw), single and single["values"]["direct"]), ">=", 20.0,
                     "target", rng2(batch, kw, single, "direct")))
    both(lambda kw: ("W4 REMOVEKEYS via %s / direct UNLINK x1000, what it sends" % kw,
                     ratio(removekeys(kw), unlink and unlink["values"]["direct"]), ">=", 0.8,
                     "extra", rng2(batch, kw, unlink, "direct")))
    for metric in ("per connection, connected", "per connection, after 1 PING"):
        r = next((x for x in rows if x["workload"] == "W5" and x["metric"] == metric), None)
        both(lambda kw: ("W5 %s bytes %s" % (kw, metric.replace("per connection, ",
                                                                 "per conn, ")),
                         r and r["values"][kw], "<", 16384.0, "target", ""))
    return out


def verdict(value, op, threshold):
    if value is None:
        return "n/a"
    ok = {">=": value >= threshold, "<=": value <= threshold, "<": value < threshold}[op]
    return "PASS" if ok else "MISS"


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------

def fmt_value(v, unit):
    if v is None:
        return "-"
    if unit == "ms":
        return "%.3f" % v
    if unit == "us":
        return "%.2f" % v
    if unit in ("KiB", "bytes"):
        return "{:,.0f}".format(v)
    return "{:,.0f}".format(v)


def fmt_ratio(v):
    return "-" if v is None else "%.2fx" % v


def fmt_target_value(v, threshold):
    if v is None:
        return "-"
    if threshold > 100:
        return "{:,.0f} B".format(v)
    if "%.2f" % v == "%.2f" % threshold and v != threshold:
        # 0.996x would print as 1.00x next to a MISS of ">= 1.0x": one more digit.
        return "%.3fx" % v
    return "%.2fx" % v


def table_lines(rows, markdown):
    head = ["workload", "test", "metric", "unit", *TARGETS,
            *["%s/%s" % (a, b) for a, b in RATIOS]]
    body = []
    for r in rows:
        vals = [fmt_value(r["values"][t], r["unit"]) for t in TARGETS]
        labels = r.get("labels")
        if labels and markdown:
            # On stdout a note under the table says which command each W4 column sent.
            vals = ["%s %s" % (v, "(%s)" % labels[t]) if v != "-" else v
                    for v, t in zip(vals, TARGETS)]
        body.append([r["workload"], r["test"], r["metric"], r["unit"], *vals,
                     *[fmt_ratio(r["ratio"][k]) for k in RATIOS]])
    if markdown:
        lines = ["| " + " | ".join(head) + " |",
                 "|" + "|".join(["---"] * 4 + ["---:"] * (len(head) - 4)) + "|"]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return lines
    # Ratio headers on two lines ("keyward-shared" over "/twemproxy"), to keep the table narrow.
    head1 = [h.split("/")[0] if "/" in h else "" for h in head]
    head2 = ["/" + h.split("/")[1] if "/" in h else h for h in head]
    widths = [max(len(x[i]) for x in [head1, head2] + body) for i in range(len(head))]

    def line(cells):
        return "  ".join(c.ljust(w) if i < 4 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    sep = "  ".join("-" * w for w in widths)
    out = [line(head1), line(head2), sep]
    last = None
    for b in body:
        if last is not None and b[0] != last:
            out.append("")
        out.append(line(b))
        last = b[0]
    return out


def target_lines(checks, markdown):
    out = []
    if markdown:
        out += ["| target | measured (median) | per round | goal | result |",
                "|---|---:|---:|---|---|"]
    width = max([len(c[0]) for c in checks] + [10])
    swidth = max([len(c[5]) + 2 for c in checks] + [15])
    for label, value, op, threshold, kind, spread, _proxy in checks:
        goal = "%s %s%s" % (op, ("{:,.0f} B".format(threshold) if threshold > 100
                                 else "%.1fx" % threshold),
                            {"aim": " (aim)", "extra": " (extra)",
                             "floor": " (floor)"}.get(kind, ""))
        result = verdict(value, op, threshold)
        if markdown:
            out.append("| %s | %s | %s | %s | **%s** |" % (
                label, fmt_target_value(value, threshold), spread or "-", goal, result))
        else:
            out.append("  %-*s %10s  %-*s  %-16s %s" % (
                width, label, fmt_target_value(value, threshold), swidth,
                "(%s)" % spread if spread else "", goal, result))
    return out


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def col(name):
    return name.replace("-", "_")


def write_csv(rows, checks, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        head = ["workload", "test", "metric", "unit", "better", *[col(t) for t in TARGETS]]
        for t in TARGETS:
            head += [col(t) + "_min", col(t) + "_max"]
        head.append("rounds")
        head += ["%s_over_%s" % (col(a), col(b)) for a, b in RATIOS]
        for a, b in RATIOS:
            head += ["paired_%s_over_%s_%s" % (col(a), col(b), x)
                     for x in ("median", "min", "max")]
        w.writerow(head)
        for r in rows:
            spread = []
            for t in TARGETS:
                lo, hi, _ = r["spread"][t]
                spread += [lo, hi]
            rounds = max(r["spread"][t][2] for t in TARGETS)
            paired = []
            for k in RATIOS:
                paired += [num(x, 4) for x in r["paired"][k]]
            w.writerow([r["workload"], r["test"], r["metric"], r["unit"], r["better"],
                        *[num(r["values"][t]) for t in TARGETS], *[num(x) for x in spread],
                        rounds, *[num(r["ratio"][k], 4) for k in RATIOS], *paired])


def write_targets_csv(checks, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["target", "keyward_target", "measured", "comparison", "threshold", "kind",
                    "result", "per_round_range"])
        for label, value, op, threshold, kind, spread, proxy in checks:
            w.writerow([label, proxy, num(value, 4), op, threshold, kind,
                        verdict(value, op, threshold), spread])


def num(v, digits=3):
    if v is None:
        return ""
    if isinstance(v, float):
        return ("%." + str(digits) + "f") % v
    return str(v)


def write_rounds_csv(results, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["section", "round", "order", "workload_or_variant", "test", "target",
                    "metric", "value", "unit", "detail"])
        for r in results["rb"]:
            detail = "n=%d wall=%.2fs proxy_cpu=%.2fs redis_cpu=%.2fs" % (
                r["n"], r["wall_s"], r["proxy_cpu_s"], r["redis_cpu_s"])
            for col, unit in (("rps", "req/s"), ("avg_latency_ms", "ms"),
                              ("min_latency_ms", "ms"), ("p50_latency_ms", "ms"),
                              ("p95_latency_ms", "ms"), ("p99_latency_ms", "ms"),
                              ("max_latency_ms", "ms"), ("cpu_us_per_req", "us")):
                w.writerow(["rb", r["round"], r["order"], r["workload"], r["test"], r["target"],
                            col, r[col], unit, detail])
        for r in results["w4"]:
            w.writerow(["W4", r["round"], r["order"], r["variant"], "", r["target"],
                        "keys_per_s", r["keys_per_s"], "keys/s",
                        "keys=%d calls=%d seconds=%s us_per_call=%s dbsize_after=%d" % (
                            r["keys"], r["calls"], r["seconds"], r["us_per_call"],
                            r["dbsize_after"])])
        for r in results["w5"]:
            for col in ("rss_idle_kib", "rss_connected_kib", "rss_after_ping_kib",
                        "rss_after_close_kib", "bytes_per_conn_connected",
                        "bytes_per_conn_after_ping"):
                w.writerow(["W5", 1, "", "W5", "", r["target"], col, r[col],
                            "KiB" if col.endswith("kib") else "bytes", "conns=%d" % r["conns"]])


def machine_lines(meta):
    s = meta.get("settings", {})
    return [
        ("date", meta.get("date")),
        ("machine", "%s CPUs (nproc), %s, %s RAM, Linux %s" % (
            meta.get("nproc"), meta.get("cpu"), meta.get("memory"), meta.get("kernel"))),
        ("redis", meta.get("redis")),
        ("redis-benchmark", meta.get("redis_benchmark")),
        ("twemproxy", meta.get("nutcracker")),
        ("keyward", "git %s (%s), %s; two processes of this binary: keyward "
                    "(share_connections = false, the default) and keyward-shared "
                    "(share_connections = true), both threads = 1" % (
                        meta.get("keyward_commit"), meta.get("keyward_tree"),
                        meta.get("rustc"))),
        ("settings", "QUICK=%s ROUNDS=%s W4_ROUNDS=%s DURATION=%ss W4_KEYS=%s "
                     "W4_SINGLE_KEYS=%s W5 connections=%s (asked %s, fd limit %s)" % (
                         int(bool(s.get("quick"))), s.get("rounds"), s.get("w4_rounds"),
                         s.get("duration"), s.get("w4_keys"), s.get("w4_single_keys"),
                         meta.get("w5_conns"), meta.get("w5_conns_requested"),
                         meta.get("fd_limit"))),
        ("load", "loadavg at start %s, at end %s; CPU used by other processes during the run: "
                 "about %s cores on average; run took %s s" % (
                     meta.get("loadavg_start"), meta.get("loadavg_end"),
                     meta.get("foreign_cpu_cores"), meta.get("elapsed_s"))),
        ("logs", "at --log-level warn during the run: %s" % log_counts(
            meta.get("keyward_log_warnings"))),
    ]


def log_counts(counts):
    if not isinstance(counts, dict):
        return "keyward wrote %s line(s)" % counts
    return ", ".join("%s wrote %s line(s)" % (name, n) for name, n in counts.items())


def write_markdown(rows, checks, meta, path):
    lines = ["# keyward load benchmark: direct Redis vs twemproxy vs keyward (both modes)", "",
             "Generated by `scripts/bench.sh` (`%s`). Every value is the median over the "
             "measured rounds; the four targets take turns in a rotating order inside every "
             "round. Per-round values: [results-rounds.csv](results-rounds.csv); summary: "
             "[results.csv](results.csv); targets: [targets.csv](targets.csv)."
             % meta.get("command", "scripts/bench.sh"), "",
             MODES_SENTENCE, "",
             "![throughput, latency, deletes and memory per connection](results.svg)", "",
             "## Machine", "", "| | |", "|---|---|"]
    lines += ["| %s | %s |" % (k, v) for k, v in machine_lines(meta)]
    lines += ["", "## Results", ""]
    lines += table_lines(rows, markdown=True)
    lines += ["", "## Targets (issue 4), for each keyward mode", ""]
    lines += target_lines(checks, markdown=True)
    lines += ["", W6_MD_BEGIN, "## W6: keyward in front of a 3-primary Redis Cluster", "",
              "W6 has not been written into this file yet.", W6_MD_END]
    lines += ["", "## How to read it", "",
              "- W1-W3 run `redis-benchmark -t set,get` (SET, then GET, one fixed key) with "
              "`-c 50 -P 16`, `-c 50` and `-c 1`. A warm-up round calibrates the request "
              "count per target so that one run takes about DURATION seconds; it is not "
              "reported. Latencies are redis-benchmark's own percentiles, in ms; its histogram "
              "has 8-microsecond buckets below 2 ms (lowest discernible value 10 us, 2 "
              "significant digits), so a W3 p50 of 0.047 ms means 40-47 us and the p50 ratio "
              "moves in steps of about 15%. The W3 \"mean latency (1/throughput)\" row is exact "
              "for one client sending one request at a time, and backs the p50 target with a "
              "finer measure (\"extra\" in the targets).",
              "- The W3 targets marked \"(floor)\" are not keyward's: they measure "
              "`examples/floor_relay.rs`, a relay that copies bytes between the client and Redis "
              "and does nothing else (two blocked threads per connection, no event loop, no "
              "parsing), in the same rounds. Any proxy adds the same second loopback round trip; "
              "the relay's ratio to direct is what that hop alone costs on this machine, the "
              "floor under every proxy's W3 ratio.",
              "- Ratios in the results table are ratios of the medians. The targets table adds "
              "the same ratio taken within each round (where the targets ran back to back), "
              "lowest to highest: when that range straddles the goal, the verdict is within "
              "the noise of this machine. results.csv has the median and range of these "
              "per-round ratios (paired_* columns).",
              "- Each keyward mode is its own process with its own CPU and memory, measured "
              "exactly like the other targets; only one target is under load at a time.",
              "- proxy CPU per request: user+system CPU time of the proxy process during the "
              "run (from /proc/PID/stat) divided by the requests of the run. On a shared "
              "2-core machine this is steadier than throughput.",
              "- W4 times deletions with a raw-socket RESP client in Python: one command, then "
              "wait for its reply, then the next (no pipelining); the keys are populated with "
              "`redis-cli --pipe` before each measurement and DBSIZE is checked to be 0 "
              "afterwards. keyward's REMOVEKEYS becomes UNLINK upstream (its default); for "
              "these small string values UNLINK frees at once, like DEL. twemproxy splits a "
              "multi-key DEL into fragments and sums the counts. The keyward and keyward-shared "
              "columns of the first W4 row are REMOVEKEYS x1000; the \"plain DEL x1000 "
              "(reference)\" row is a plain DEL forwarded by each keyward mode; \"UNLINK x1000 "
              "direct\" is what keyward sends upstream for a REMOVEKEYS, sent directly, so that "
              "the gap between REMOVEKEYS and DEL splits into Redis's share and keyward's.",
              "- W5 runs first, on fresh processes: VmRSS of the process idle, with N idle "
              "client connections open, and after one PING on each. keyward in its default "
              "mode opens each client's upstream connection when the client connects, so "
              "\"connected\" already includes it; keyward-shared opens none per client (its "
              "shared connection is set up once). bytes per connection = (RSS with - RSS "
              "idle) / N. The direct column is redis-server itself, for reference.",
              W6_READ_BULLET,
              "- twemproxy answers redis-benchmark's initial `CONFIG GET` with an error (it does "
              "not support CONFIG); redis-benchmark prints a warning and goes on."]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# SVG
# --------------------------------------------------------------------------------------------

def esc(text):
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def short(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return "%.2fM" % (v / 1e6)
    if v >= 1e4:
        return "%.0fk" % (v / 1e3)
    if v >= 1e3:
        return "%.1fk" % (v / 1e3)
    if v >= 100:
        return "%.0f" % v
    return "%.1f" % v


class Svg:
    def __init__(self, width, height):
        self.w, self.h = width, height
        self.parts = []

    def add(self, s):
        self.parts.append(s)

    def text(self, x, y, s, size=12, anchor="start", weight="normal", fill="#222", rotate=None):
        tr = ' transform="rotate(%d %.1f %.1f)"' % (rotate, x, y) if rotate else ""
        self.add('<text x="%.1f" y="%.1f" font-size="%d" text-anchor="%s" font-weight="%s" '
                 'fill="%s"%s>%s</text>' % (x, y, size, anchor, weight, fill, tr, esc(s)))

    def rect(self, x, y, w, h, fill, title=None):
        t = "<title>%s</title>" % esc(title) if title else ""
        self.add('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s">%s</rect>'
                 % (x, y, max(w, 0), max(h, 0), fill, t))

    def line(self, x1, y1, x2, y2, stroke="#999", dash=None, width=1):
        d = ' stroke-dasharray="%s"' % dash if dash else ""
        self.add('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%s"%s/>'
                 % (x1, y1, x2, y2, stroke, width, d))

    def render(self):
        return ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
                'viewBox="0 0 %d %d" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">\n'
                '<rect width="100%%" height="100%%" fill="white"/>\n%s\n</svg>\n'
                % (self.w, self.h, self.w, self.h, "\n".join(self.parts)))


def nice_scale(v, ticks=5):
    """A rounded axis maximum at or above v and its tick step (1, 2, 2.5 or 5 times 10^k)."""
    import math
    if not v or v <= 0:
        v = 1.0
    raw = v / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            step = m * mag
            break
    top = math.ceil(v / step - 1e-9) * step
    return top, step


def nice_max(v):
    return nice_scale(v)[0]


def bar_panel(svg, x0, y0, w, h, title, groups, series, ymax, yfmt, refs=(), note=None):
    """groups: [(label, {series: value})]; draws grouped vertical bars with value labels."""
    svg.text(x0, y0 - 28, title, size=15, weight="bold")
    if note:
        svg.text(x0, y0 - 10, note, size=11, fill="#555")
    ymax, step = nice_scale(ymax or 1.0)
    i = 0
    while i * step <= ymax + 1e-9:
        v = i * step
        y = y0 + h - h * v / ymax
        svg.line(x0, y, x0 + w, y, stroke="#e5e5e5")
        svg.text(x0 - 6, y + 4, yfmt(v), size=11, anchor="end", fill="#555")
        i += 1
    for value, label in refs:
        y = y0 + h - h * min(value / ymax, 1.0)
        svg.line(x0, y, x0 + w, y, stroke="#c0392b", dash="6,4", width=1.5)
        for k, part in enumerate(label.split("\n")):
            svg.text(x0 + w + 6, y + 4 + 13 * k, part, size=11, fill="#c0392b")
    gw = w / max(len(groups), 1)
    bw = gw * 0.8 / max(len(series), 1)
    for gi, (label, vals) in enumerate(groups):
        gx = x0 + gi * gw + gw * 0.1
        for si, name in enumerate(series):
            v = vals.get(name)
            if v is None:
                continue
            bh = h * min(v / ymax, 1.0)
            bx = gx + si * bw
            svg.rect(bx + 1, y0 + h - bh, bw - 2, bh, COLORS.get(name, "#444"),
                     title="%s %s: %s" % (label, name, yfmt(v)))
            lab = vals.get("_label_" + name, yfmt(v))
            svg.text(bx + bw / 2, y0 + h - bh - 4, lab, size=10, anchor="middle")
        svg.text(x0 + gi * gw + gw / 2, y0 + h + 16, label, size=12, anchor="middle")
    svg.line(x0, y0 + h, x0 + w, y0 + h, stroke="#333")


def legend(svg, x, y, items):
    for name, label in items:
        svg.rect(x, y - 11, 14, 14, COLORS[name])
        svg.text(x + 20, y + 1, label, size=13)
        x += 30 + 8 * len(label)


def write_svg(rows, meta, path):
    svg = Svg(1200, 1080)
    svg.text(30, 34, "keyward (2 modes) vs twemproxy vs direct Redis (medians of %s rounds, %s)" % (
        meta.get("settings", {}).get("rounds"), meta.get("date")), size=19, weight="bold")
    svg.text(30, 56, "%s CPUs, %s, Linux %s; %s; %s" % (
        meta.get("nproc"), meta.get("cpu"), meta.get("kernel"), meta.get("redis"),
        meta.get("nutcracker")), size=12, fill="#555")
    legend(svg, 30, 84, [("direct", "direct Redis"), ("twemproxy", "twemproxy (nutcracker)"),
                         ("keyward", "keyward (default: connection per client)"),
                         ("keyward-shared", "keyward-shared (share_connections = true)")])

    # Panel 1: throughput relative to direct Redis.
    groups = []
    top = 1.0
    for workload in ("W1", "W2", "W3"):
        for test in ("SET", "GET"):
            r = find(rows, workload, test, "throughput")
            if not r:
                continue
            base = r["values"]["direct"]
            vals = {}
            for t in TARGETS:
                v = r["values"][t]
                if v is not None and base:
                    vals[t] = v / base
                    vals["_label_" + t] = short(v)
                    top = max(top, vals[t])
            groups.append(("%s %s" % (workload, test), vals))
    bar_panel(svg, 90, 150, 960, 250,
              "Throughput relative to direct Redis (bar labels: requests/s)", groups, TARGETS,
              top * 1.08, lambda v: "%.2gx" % v if v else "0",
              refs=[(0.8, "0.8x direct\n(W1 aim)")],
              note="W1: 50 clients, pipeline 16.  W2: 50 clients.  W3: 1 client.  Higher is "
                   "better.")

    # Panel 2: W3 latency.
    groups = []
    top = 0.0
    for test in ("SET", "GET"):
        for metric in ("p50 latency", "p99 latency"):
            r = find(rows, "W3", test, metric)
            if not r:
                continue
            vals = {t: r["values"][t] * 1000 for t in TARGETS if r["values"][t] is not None}
            top = max([top] + list(vals.values()))
            for t in list(vals):
                vals["_label_" + t] = "%.0f" % vals[t]
            groups.append(("%s %s" % (test, metric.split()[0]), vals))
    bar_panel(svg, 90, 500, 500, 220, "W3 latency, 1 client (microseconds)", groups, TARGETS,
              top * 1.12, lambda v: "%.0f" % v,
              note="redis-benchmark percentiles; lower is better. p50/p99 come in 8 us buckets.")

    # Panel 3: W4 keys/s.
    w4rows = [("DEL x1\ndirect", find(rows, "W4", "DEL one key per call", "keys removed"),
               "direct")]
    batch = find(rows, "W4", "delete 1000 keys per call", "keys removed")
    kwdel = find(rows, "W4", "plain DEL x1000 (reference)", "keys removed")
    groups = []
    top = 0.0
    unlink = find(rows, "W4", "UNLINK x1000 (reference)", "keys removed")
    items = [("DEL x1 direct", w4rows[0][1] and w4rows[0][1]["values"]["direct"], "direct"),
             ("DEL x1000 direct", batch and batch["values"]["direct"], "direct"),
             ("UNLINK x1000 direct", unlink and unlink["values"]["direct"], "direct"),
             ("DEL x1000 twemproxy", batch and batch["values"]["twemproxy"], "twemproxy"),
             ("DEL x1000 keyward", kwdel and kwdel["values"]["keyward"], "keyward"),
             ("REMOVEKEYS keyward", batch and batch["values"]["keyward"], "keyward"),
             ("DEL x1000 keyward-shared", kwdel and kwdel["values"]["keyward-shared"],
              "keyward-shared"),
             ("REMOVEKEYS keyward-shared", batch and batch["values"]["keyward-shared"],
              "keyward-shared")]
    for label, v, t in items:
        top = max(top, v or 0)
    svg.text(680, 472, "W4 keys removed per second (1 call at a time)", size=15, weight="bold")
    svg.text(680, 490, "Higher is better.", size=11, fill="#555")
    xmax = nice_max(top * 1.2)
    bx0, bw, by0, bh = 840, 300, 505, 26
    for i, (label, v, t) in enumerate(items):
        y = by0 + i * (bh + 6)
        svg.text(bx0 - 8, y + bh / 2 + 4, label, size=12, anchor="end")
        if v:
            svg.rect(bx0, y, bw * v / xmax, bh, COLORS[t], title="%s: %.0f keys/s" % (label, v))
            svg.text(bx0 + bw * v / xmax + 4, y + bh / 2 + 4, short(v), size=11)
    svg.line(bx0, by0 - 4, bx0, by0 + len(items) * (bh + 6), stroke="#333")
    single = items[0][1]
    kws = [(t, batch and batch["values"][t]) for t in KEYWARDS]
    if single and all(v for _, v in kws):
        svg.text(680, by0 + len(items) * (bh + 6) + 18,
                 "REMOVEKEYS x1000 removes %s" % " and ".join(
                     "%.0fx (%s)" % (v / single, t) for t, v in kws), size=12, fill="#333")
        svg.text(680, by0 + len(items) * (bh + 6) + 34,
                 "the keys/s of a one-DEL-per-key loop", size=12, fill="#333")

    # Panel 4: W5 bytes per connection.
    groups = []
    top = 16384.0
    for metric, label in (("per connection, connected", "connected, never used"),
                          ("per connection, after 1 PING", "after one PING each")):
        r = next((x for x in rows if x["workload"] == "W5" and x["metric"] == metric), None)
        if not r:
            continue
        vals = {t: max(r["values"][t], 0.0) for t in TARGETS if r["values"][t] is not None}
        for t in list(vals):
            vals["_label_" + t] = "%.1f KiB" % (vals[t] / 1024)
        top = max([top] + [v for k, v in vals.items() if not k.startswith("_")])
        groups.append((label, vals))
    bar_panel(svg, 90, 870, 960, 150,
              "W5 resident memory per idle client connection (%s connections; direct = "
              "redis-server itself)" % meta.get("w5_conns"), groups, TARGETS,
              top * 1.1, lambda v: "%.0f KiB" % (v / 1024),
              refs=[(16384, "16 KiB target")], note="Lower is better.")
    with open(path, "w") as f:
        f.write(svg.render())


def write_all(results, meta, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    rows = summarize(results, meta)
    checks = targets(rows)
    print()
    print("keyward load benchmark: medians over %s rounds (W4: %s rounds)" % (
        meta["settings"]["rounds"], meta["settings"]["w4_rounds"]))
    for k, v in machine_lines(meta):
        print("  %-16s %s" % (k, v))
    print()
    for line in table_lines(rows, markdown=False):
        print(line)
    print()
    print("keyward: share_connections = false (default, one upstream connection per client); "
          "keyward-shared: share_connections = true")
    print("(stateless requests of all clients share one pipelined upstream connection); same "
          "binary, otherwise identical configs.")
    print("W4 'delete 1000 keys per call': the direct and twemproxy columns use DEL with 1000 "
          "keys, both keyward columns REMOVEKEYS with 1000 keys.")
    print("W5: the direct column is redis-server's own memory, for reference.")
    print()
    print("Targets from issue 4 for both keyward modes (reported, not enforced; in brackets: "
          "the same ratio taken within each round, lowest-highest):")
    for line in target_lines(checks, markdown=False):
        print(line)
    write_csv(rows, checks, os.path.join(out_dir, "results.csv"))
    write_targets_csv(checks, os.path.join(out_dir, "targets.csv"))
    write_rounds_csv(results, os.path.join(out_dir, "results-rounds.csv"))
    write_markdown(rows, checks, meta, os.path.join(out_dir, "results.md"))
    write_svg(rows, meta, os.path.join(out_dir, "results.svg"))
    print()
    print("wrote %s/results.csv, results-rounds.csv, targets.csv, results.md, results.svg"
          % out_dir)
