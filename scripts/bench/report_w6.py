"""Outputs of W6 (keyward in front of a 3-primary Redis Cluster).

W6 has files of its own in the output directory: w6.md (its report), w6.csv (medians, in the
columns of results.csv), w6-rounds.csv (every measurement, in the columns of results-rounds.csv)
and w6.svg (chart). The same rows, and a W6 section, also go into results.csv,
results-rounds.csv and results.md, in place of any earlier W6 rows and section; everything else
in those files is left byte for byte as it was. So a full run writes W1-W6 everywhere, and
`W6_ONLY=1 scripts/bench.sh` refreshes W6 without touching the W1-W5 results of an earlier run.
"""

import csv
import io
import os

import report
from report import median, ratio

DIRECT, KEYWARD, SPREAD = "direct-cluster", "keyward-cluster", "keyward-cluster-spread"
TARGETS = (DIRECT, KEYWARD, SPREAD)
LABELS = {
    DIRECT: "direct (cluster-aware client)",
    KEYWARD: "keyward --cluster",
    SPREAD: "keyward --cluster, keys over all slots",
}
# The W6b cells say which command each side sent.
W6B_COMMANDS = {DIRECT: "DEL per slot", KEYWARD: "REMOVEKEYS"}
# The markers around the W6 section of results.md, and its line in "How to read it".
MD_BEGIN, MD_END, READ_BULLET = report.W6_MD_BEGIN, report.W6_MD_END, report.W6_READ_BULLET


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------

def summarize(w6):
    """One row per (part, test, metric): medians per target, ratios to direct (of the medians,
    and taken round by round)."""
    rows = []

    def add(part, test, metric, unit, better, per_target):
        by_round = {t: dict(items) for t, items in per_target.items() if items}
        vals = {t: median(list(by_round[t].values())) if t in by_round else None
                for t in TARGETS}
        spread = {t: (min(by_round[t].values()), max(by_round[t].values()), len(by_round[t]))
                  if t in by_round else (None, None, 0) for t in TARGETS}
        row = {"part": part, "test": test, "metric": metric, "unit": unit, "better": better,
               "values": vals, "spread": spread, "ratio": {}, "paired": {}}
        base = by_round.get(DIRECT, {})
        for t in (KEYWARD, SPREAD):
            row["ratio"][t] = ratio(vals[t], vals[DIRECT])
            mine = by_round.get(t, {})
            paired = [mine[r] / base[r] for r in mine if r in base and base[r]]
            row["paired"][t] = ((median(paired), min(paired), max(paired))
                                if paired else (None, None, None))
        rows.append(row)

    a = w6["a"]
    for test in ("SET", "GET"):
        sel = [r for r in a if r["test"] == test]
        for metric, col, unit, better in (
                ("throughput", "rps", "req/s", "higher"),
                ("p50 latency", "p50_latency_ms", "ms", "lower"),
                ("p99 latency", "p99_latency_ms", "ms", "lower")):
            add("W6a", test, metric, unit, better,
                {t: [(r["round"], r[col]) for r in sel if r["target"] == t] for t in TARGETS})
    sel = [r for r in a if r["test"] == "SET"]
    add("W6a", "SET+GET", "keyward CPU per request", "us", "lower",
        {t: [(r["round"], r["cpu_us_per_req"]) for r in sel if r["target"] == t]
         for t in (KEYWARD, SPREAD)})
    b = w6["b"]
    for metric, col, unit, better in (
            ("keys removed", "keys_per_s", "keys/s", "higher"),
            ("time per call", "us_per_call", "us", "lower"),
            ("client CPU per call", "client_cpu_us_per_call", "us", "lower")):
        add("W6b", "delete 1000 keys per call", metric, unit, better,
            {t: [(r["round"], r[col]) for r in b if r["target"] == t] for t in (DIRECT, KEYWARD)})
    return rows


def find(rows, part, test, metric):
    return next((r for r in rows if r["part"] == part and r["test"] == test
                 and r["metric"] == metric), None)


def results_rows(rows, info):
    """The summary in the shape of report.summarize's rows, for the columns of results.csv:
    direct-cluster in the direct column, keyward-cluster in the keyward column, and the W6a
    reference (keys over all slots) as rows of its own, again against the direct runs."""
    out = []

    def convert(r, test, mine):
        values = {t: None for t in report.TARGETS}
        spread = {t: (None, None, 0) for t in report.TARGETS}
        values["direct"], spread["direct"] = r["values"][DIRECT], r["spread"][DIRECT]
        values["keyward"], spread["keyward"] = r["values"][mine], r["spread"][mine]
        row = {"workload": "W6", "test": test, "metric": r["metric"], "unit": r["unit"],
               "better": r["better"], "values": values, "spread": spread,
               "ratio": {k: None for k in report.RATIOS},
               "paired": {k: (None, None, None) for k in report.RATIOS}}
        row["ratio"][("keyward", "direct")] = r["ratio"][mine]
        row["paired"][("keyward", "direct")] = r["paired"][mine]
        return row

    for r in rows:
        out.append(convert(r, r["test"], KEYWARD))
    for r in rows:
        if r["part"] == "W6a" and r["spread"][SPREAD][2]:
            out.append(convert(r, "%s, keys over all slots (-r %d)"
                               % (r["test"], info.get("random_keys", 0)), SPREAD))
    return out


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

def fmt_ratio(r, t):
    v = r["ratio"].get(t)
    return "-" if v is None else "%.2fx" % v


def fmt_range(r, t):
    _, lo, hi = r["paired"].get(t, (None, None, None))
    return "-" if lo is None else "%.2f-%.2fx" % (lo, hi)


def table(rows, markdown):
    head = ["part", "test", "metric", "unit", LABELS[DIRECT], LABELS[KEYWARD],
            "keyward/direct", "per round", "keys over all slots (ref.)", "ref./direct"]
    body = []
    for r in rows:
        d = report.fmt_value(r["values"][DIRECT], r["unit"])
        k = report.fmt_value(r["values"][KEYWARD], r["unit"])
        if r["part"] == "W6b" and markdown:
            d = "%s (%s)" % (d, W6B_COMMANDS[DIRECT]) if d != "-" else d
            k = "%s (%s)" % (k, W6B_COMMANDS[KEYWARD]) if k != "-" else k
        body.append([r["part"], r["test"], r["metric"], r["unit"], d, k,
                     fmt_ratio(r, KEYWARD), fmt_range(r, KEYWARD),
                     report.fmt_value(r["values"][SPREAD], r["unit"]), fmt_ratio(r, SPREAD)])
    if markdown:
        lines = ["| " + " | ".join(head) + " |",
                 "|" + "|".join(["---"] * 4 + ["---:"] * (len(head) - 4)) + "|"]
        return lines + ["| " + " | ".join(b) + " |" for b in body]
    head = ["part", "test", "metric", "unit", "direct", "keyward", "keyward/direct",
            "per round", "ref. all slots", "ref./direct"]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]

    def line(cells):
        return "  ".join(c.ljust(w) if i < 4 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return [line(head), "  ".join("-" * w for w in widths)] + [line(b) for b in body]


def headline(rows):
    """The ratios in one sentence each, for the top of the reports."""
    out = []
    for test in ("SET", "GET"):
        r = find(rows, "W6a", test, "throughput")
        if r and r["ratio"][KEYWARD] is not None:
            out.append("W6a %s: keyward %.2fx the req/s of direct%s" % (
                test, r["ratio"][KEYWARD],
                "" if r["ratio"][SPREAD] is None
                else " (%.2fx with keys over all slots)" % r["ratio"][SPREAD]))
    r = find(rows, "W6b", "delete 1000 keys per call", "keys removed")
    if r and r["ratio"][KEYWARD] is not None:
        out.append("W6b: REMOVEKEYS via keyward %.2fx the keys/s of direct DEL per slot group"
                   % r["ratio"][KEYWARD])
    return out


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def rounds_rows(w6):
    out = []
    for r in w6["a"]:
        detail = "n=%d wall=%.2fs keyward_cpu=%.2fs redis_cpu=%.2fs (3 primaries)" % (
            r["n"], r["wall_s"], r["proxy_cpu_s"], r["redis_cpu_s"])
        for col, unit in (("rps", "req/s"), ("avg_latency_ms", "ms"), ("min_latency_ms", "ms"),
                          ("p50_latency_ms", "ms"), ("p95_latency_ms", "ms"),
                          ("p99_latency_ms", "ms"), ("max_latency_ms", "ms"),
                          ("cpu_us_per_req", "us")):
            out.append(["W6", r["round"], r["order"], "W6a", r["test"], r["target"], col, r[col],
                        unit, detail])
    for r in w6["b"]:
        detail = ("keys=%d calls=%d commands=%d seconds=%s us_per_call=%s "
                  "client_cpu_us_per_call=%s dbsize_after=%d" % (
                      r["keys"], r["calls"], r["commands"], r["seconds"], r["us_per_call"],
                      r["client_cpu_us_per_call"], r["dbsize_after"]))
        out.append(["W6", r["round"], r["order"], "W6b " + r["variant"], "", r["target"],
                    "keys_per_s", r["keys_per_s"], "keys/s", detail])
    return out


ROUNDS_HEADER = ["section", "round", "order", "workload_or_variant", "test", "target", "metric",
                 "value", "unit", "detail"]


def csv_text(header, rows):
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(header)
    for row in rows:
        w.writerow(row)
    return buf.getvalue()


def splice_csv(path, text):
    """Replaces the W6 rows of the CSV file at `path` by the rows of `text` (same header; its
    first line). Other lines stay as they are. Returns False if the headers differ."""
    lines = text.splitlines(keepends=True)
    header, body = lines[0], lines[1:]
    if not os.path.exists(path):
        with open(path, "w", newline="") as f:
            f.write(text)
        return True
    with open(path, newline="") as f:
        old = f.read().splitlines(keepends=True)
    if not old or old[0].rstrip("\r\n") != header.rstrip("\r\n"):
        return False
    kept = [line for line in old[1:] if line.split(",", 1)[0] != "W6"]
    if kept and not kept[-1].endswith("\n"):
        kept[-1] += "\r\n"
    with open(path, "w", newline="") as f:
        f.write(old[0] + "".join(kept) + "".join(body))
    return True


def splice_markdown(path, block):
    """Puts `block` (which starts with MD_BEGIN and ends with MD_END) into results.md: in place
    of the earlier W6 section, or else before "## How to read it"."""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    else:
        text = ("# keyward load benchmark\n\nNo full run has written this file yet; W6 was run "
                "alone (`W6_ONLY=1 scripts/bench.sh`).\n")
    begin, end = text.find(MD_BEGIN), text.find(MD_END)
    if begin >= 0 and end > begin:
        text = text[:begin] + block + text[end + len(MD_END):]
    else:
        lines = text.split("\n")
        # A file from before W6 existed: its "not measured yet" note goes.
        lines = [READ_BULLET if line.startswith("- W6 (") and "not measured yet" in line
                 else line for line in lines]
        text = "\n".join(lines)
        anchor = text.find("\n## How to read it")
        if anchor >= 0:
            text = text[:anchor + 1] + block + "\n\n" + text[anchor + 1:]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def settings_line(meta, info):
    s = meta.get("settings", {})
    n = info.get("n", {})
    return ("QUICK=%d W6_ROUNDS=%s DURATION=%ss W6_KEYS=%s; W6a requests per test: %s" % (
        int(bool(s.get("quick"))), s.get("w6_rounds"), s.get("duration"), s.get("w6_keys"),
        ", ".join("%s %s" % (t, "{:,}".format(n[t])) for t in TARGETS if t in n) or "-"))


def machine_table(meta, info):
    rows = [
        ("date", info.get("date")),
        ("machine", "%s CPUs (nproc), %s, %s RAM, Linux %s" % (
            meta.get("nproc"), meta.get("cpu"), meta.get("memory"), meta.get("kernel"))),
        ("redis", meta.get("redis")),
        ("redis-benchmark", meta.get("redis_benchmark")),
        ("keyward", "git %s (%s), %s; `keyward --config keyward-cluster.toml --log-level warn` "
                    "with `[upstream] mode = \"cluster\"` and the three primaries as `nodes`, "
                    "otherwise built-in defaults (threads = 1)" % (
                        meta.get("keyward_commit"), meta.get("keyward_tree"),
                        meta.get("rustc"))),
        ("cluster", "%d primaries, no replicas, on 127.0.0.1: `redis-server --cluster-enabled "
                    "yes --cluster-node-timeout 5000 --save \"\" --appendonly no`, joined by "
                    "`redis-cli --cluster create ... --cluster-replicas 0`; slots %s" % (
                        len(info.get("slot_ranges", [])) or 3,
                        ", ".join(info.get("slot_ranges", [])) or "-")),
        ("settings", settings_line(meta, info)),
        ("load", "loadavg at start %s, at end %s; CPU used by other processes during W6: about "
                 "%s cores on average; W6 took %s s" % (
                     info.get("loadavg_start"), info.get("loadavg_end"),
                     info.get("foreign_cpu_cores"), info.get("elapsed_s"))),
        ("logs", "keyward-cluster wrote %s line(s) at --log-level warn"
                 % info.get("keyward_log_lines")),
    ]
    return ["| | |", "|---|---|"] + ["| %s | %s |" % (k, v) for k, v in rows]


def dels_per_call(info):
    v = info.get("direct_dels_per_call")
    return "?" if v is None else "%g" % v


def how_to_read(info):
    keys = info.get("keys_per_primary") or []
    return [
        "- W6a is W1 (`redis-benchmark -c 50 -P 16 -t set,get`: SET, then GET) against the "
        "cluster. direct: `redis-benchmark --cluster -h 127.0.0.1 -p <first primary>`, which "
        "reads the slot map, spreads its 50 clients over the three primaries and gives each "
        "client's key the hash tag of its primary, so that every request goes straight to its "
        "node. keyward: the plain W1 command against keyward; without `-r` every request names "
        "the one key `key:__rand_int__`, so keyward sends all of them to the primary of that "
        "slot over its shared pipelined connection to it. keys over all slots (reference): the "
        "same against keyward with `-r %d`: random keys over all 16384 slots, so that every "
        "pipelined batch of 16 is split over the three primaries and the replies are put back "
        "in order." % info.get("random_keys", 0),
        "- The three W6a targets take turns in a rotating order in every round; a warm-up round "
        "(not reported) calibrates the request count per target so that one run takes about "
        "DURATION seconds. Values are medians over the rounds, the ratio columns ratios of the "
        "medians; \"per round\" is the keyward/direct ratio taken within each round, lowest to "
        "highest. Latencies are redis-benchmark's own percentiles. keyward CPU per request: "
        "user+system CPU time of the keyward process during the run divided by its requests.",
        "- W6b is W4 on the cluster: %s keys `kwbench:key:NNNNNNNN`, which fall on all 16384 "
        "slots (%s per primary), populated with `redis-cli --pipe` on each primary before each "
        "measurement, then deleted 1000 per call, one call at a time, in the same order by both "
        "sides. keyward: `REMOVEKEYS` of the 1000 keys; keyward groups them by hash slot, sends "
        "one UNLINK per slot to the owning primaries in parallel and sums the counts. direct: "
        "a cluster-aware client of our own (Python, in scripts/bench/bench.py) groups the same "
        "1000 keys by hash slot (CRC16 of the key, or of its hash tag, mod 16384, checked "
        "against `CLUSTER KEYSLOT`) and sends one DEL per slot group to the owning primary "
        "(%s DELs per call of 1000 keys on average: 1000 keys out of 16384 slots hardly ever "
        "share one, and keyward sends just as many UNLINKs), each primary's DELs in one write "
        "and all three primaries written before any reply is read, so that they work in "
        "parallel; then it reads and sums the replies, one scan per primary." % (
            "{:,}".format(sum(keys)) if keys else "?",
            " / ".join("{:,}".format(k) for k in keys) or "?",
            dels_per_call(info)),
        "- The direct client groups and encodes its DELs before the clock starts, so its "
        "figure leaves out the slot hashing an application does on every call (keyward's "
        "figure includes its own): the comparison favours direct. \"client CPU per call\" is "
        "the CPU time the Python client itself spent per call (sending, reading, parsing).",
        "- Each W6b measurement must remove exactly the keys it was given, and DBSIZE summed "
        "over the three primaries must be 0 afterwards; a measurement that fails either check "
        "is dropped (and logged).",
        "- Issue 4 sets no target of its own for W6; the standalone ones (W1: aim at 0.8x "
        "direct; W4: REMOVEKEYS at least 0.8x direct DEL x1000) are the natural yardsticks.",
    ]


def section(rows, meta, info, error=None):
    """The W6 section of results.md, markers included."""
    lines = [MD_BEGIN, "## W6: keyward in front of a 3-primary Redis Cluster", ""]
    if error is not None:
        lines += ["W6 did not complete in this run: %s. w6.md, w6.csv, w6-rounds.csv and w6.svg, "
                  "if present, are from an earlier run (w6.md has its date); rerun W6 alone with "
                  "`W6_ONLY=1 scripts/bench.sh`." % error, MD_END]
        return "\n".join(lines)
    lines += [
        "W1 and W4 again, with keyward in cluster mode in front of three Redis Cluster primaries "
        "(no replicas), against going direct with a cluster-aware client. Measured %s by `%s` "
        "(keyward git %s), medians of %s rounds; load during W6: about %s cores of other "
        "processes. Machine, settings and how to read it: [w6.md](w6.md); every measurement: "
        "[w6-rounds.csv](w6-rounds.csv) (also here in results-rounds.csv, section W6); medians: "
        "[w6.csv](w6.csv) (also in results.csv, workload W6)." % (
            info.get("date"), meta.get("command", "scripts/bench.sh"),
            meta.get("keyward_commit"), meta.get("settings", {}).get("w6_rounds"),
            info.get("foreign_cpu_cores")), "",
        "![W6: keyward --cluster vs direct with a cluster-aware client](w6.svg)", ""]
    lines += table(rows, markdown=True)
    lines += [MD_END]
    return "\n".join(lines)


def write_w6_md(rows, meta, info, path):
    lines = ["# keyward load benchmark, W6: keyward in front of a 3-primary Redis Cluster", "",
             "Generated by `scripts/bench.sh` (`%s`); W6 alone: `W6_ONLY=1 scripts/bench.sh`. "
             "Every value is the median over %s rounds; per-round values: "
             "[w6-rounds.csv](w6-rounds.csv), medians: [w6.csv](w6.csv). The same W6 rows are "
             "in [results.csv](results.csv) and [results-rounds.csv](results-rounds.csv), and "
             "this table in [results.md](results.md)." % (
                 meta.get("command", "scripts/bench.sh"),
                 meta.get("settings", {}).get("w6_rounds")), ""]
    lines += ["- " + h + "." for h in headline(rows)]
    lines += ["", "![W6: keyward --cluster vs direct with a cluster-aware client](w6.svg)", "",
              "## Machine and run", ""]
    lines += machine_table(meta, info)
    lines += ["", "## Results", ""]
    lines += table(rows, markdown=True)
    lines += ["", "## How to read it", ""]
    lines += how_to_read(info)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# SVG
# --------------------------------------------------------------------------------------------

def write_svg(rows, meta, info, path):
    svg = report.Svg(1200, 690)
    svg.text(30, 34, "W6: keyward in front of a 3-primary Redis Cluster vs direct (medians of %s "
             "rounds, %s)" % (meta.get("settings", {}).get("w6_rounds"), info.get("date")),
             size=19, weight="bold")
    svg.text(30, 56, "%s CPUs, %s, Linux %s; %s; keyward git %s" % (
        meta.get("nproc"), meta.get("cpu"), meta.get("kernel"), meta.get("redis"),
        meta.get("keyward_commit")), size=12, fill="#555")
    report.legend(svg, 30, 84, [(DIRECT, "direct, cluster-aware client"),
                                (KEYWARD, "keyward --cluster (W1 as is: one key)"),
                                (SPREAD, "keyward --cluster, keys over all slots (-r)")])

    groups = []
    top = 0.0
    for test in ("SET", "GET"):
        r = find(rows, "W6a", test, "throughput")
        if not r:
            continue
        vals = {t: r["values"][t] for t in TARGETS if r["values"][t] is not None}
        for t in list(vals):
            top = max(top, vals[t])
            if t != DIRECT and r["ratio"][t] is not None:
                vals["_label_" + t] = "%s (%.2fx)" % (report.short(vals[t]), r["ratio"][t])
            else:
                vals["_label_" + t] = report.short(vals[t])
        groups.append((test, vals))
    report.bar_panel(svg, 90, 160, 470, 250, "W6a throughput (requests/s)", groups, TARGETS,
                     top * 1.1, report.short,
                     note="50 clients, pipeline 16; in brackets: ratio to direct. Higher is "
                          "better.")

    groups = []
    top = 0.0
    for test in ("SET", "GET"):
        for metric in ("p50 latency", "p99 latency"):
            r = find(rows, "W6a", test, metric)
            if not r:
                continue
            vals = {t: r["values"][t] for t in TARGETS if r["values"][t] is not None}
            top = max([top] + list(vals.values()))
            for t in list(vals):
                vals["_label_" + t] = "%.2f" % vals[t]
            groups.append(("%s %s" % (test, metric.split()[0]), vals))
    report.bar_panel(svg, 680, 160, 480, 250, "W6a latency (ms)", groups, TARGETS, top * 1.12,
                     lambda v: "%.1f" % v, note="redis-benchmark percentiles. Lower is better.")

    r = find(rows, "W6b", "delete 1000 keys per call", "keys removed")
    svg.text(30, 505, "W6b keys removed per second, 1000 keys per call, one call at a time",
             size=15, weight="bold")
    svg.text(30, 523, "Higher is better. direct: the keys grouped by hash slot ahead of time, "
             "one DEL per slot group, all primaries written before any reply is read.",
             size=11, fill="#555")
    items = [("DEL per slot group, direct", r and r["values"][DIRECT], DIRECT),
             ("REMOVEKEYS via keyward --cluster", r and r["values"][KEYWARD], KEYWARD)]
    xmax = report.nice_max(max([v or 0 for _, v, _ in items] + [1.0]) * 1.15)
    bx0, bw, by0, bh = 290, 760, 545, 34
    for i, (label, v, t) in enumerate(items):
        y = by0 + i * (bh + 10)
        svg.text(bx0 - 8, y + bh / 2 + 4, label, size=12, anchor="end")
        if v:
            svg.rect(bx0, y, bw * v / xmax, bh, report.COLORS[t],
                     title="%s: %.0f keys/s" % (label, v))
            svg.text(bx0 + bw * v / xmax + 4, y + bh / 2 + 4, report.short(v) + " keys/s",
                     size=11)
    svg.line(bx0, by0 - 4, bx0, by0 + len(items) * (bh + 10), stroke="#333")
    if r and r["ratio"][KEYWARD] is not None:
        svg.text(30, by0 + len(items) * (bh + 10) + 22,
                 "REMOVEKEYS via keyward removes %.2fx the keys/s of the direct cluster client "
                 "(per round %s)." % (r["ratio"][KEYWARD], fmt_range(r, KEYWARD)),
                 size=12, fill="#333")
    with open(path, "w") as f:
        f.write(svg.render())


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------

def write(w6, meta, out_dir):
    """Writes the W6 outputs (see the module docstring). `w6` is bench.run_w6's result, or
    {"error": text} when W6 failed in a full run, or None when it did not run."""
    os.makedirs(out_dir, exist_ok=True)
    results_md = os.path.join(out_dir, "results.md")
    if not w6 or "error" in w6:
        error = (w6 or {}).get("error", "not run")
        print()
        print("W6: no results (%s); the W6 files in %s stay as they were" % (error, out_dir))
        splice_markdown(results_md, section([], meta, {}, error=error))
        return
    info = w6["info"]
    rows = summarize(w6)
    print()
    print("W6: keyward --cluster in front of a 3-primary Redis Cluster vs direct with a "
          "cluster-aware client; medians over %s rounds" % meta["settings"]["w6_rounds"])
    for label, value in (("cluster slots", ", ".join(info.get("slot_ranges", []))),
                         ("settings", settings_line(meta, info)),
                         ("load", "CPU used by other processes during W6: about %s cores; "
                                  "W6 took %s s" % (info.get("foreign_cpu_cores"),
                                                    info.get("elapsed_s")))):
        print("  %-14s %s" % (label, value))
    print()
    for line in table(rows, markdown=False):
        print(line)
    print()
    print("W6a direct: redis-benchmark --cluster; keyward: the W1 command against keyward "
          "--cluster (one key); ref.: keyward with -r %d (keys over all slots)."
          % info.get("random_keys", 0))
    print("W6b direct: one DEL per hash-slot group of the 1000 keys (%s per call on average), "
          "grouped ahead of time; keyward: REMOVEKEYS of the 1000 keys."
          % dels_per_call(info))
    for h in headline(rows):
        print("  " + h)

    rrows = results_rows(rows, info)
    w6_csv = os.path.join(out_dir, "w6.csv")
    report.write_csv(rrows, None, w6_csv)
    rounds_text = csv_text(ROUNDS_HEADER, rounds_rows(w6))
    with open(os.path.join(out_dir, "w6-rounds.csv"), "w", newline="") as f:
        f.write(rounds_text)
    write_w6_md(rows, meta, info, os.path.join(out_dir, "w6.md"))
    write_svg(rows, meta, info, os.path.join(out_dir, "w6.svg"))
    with open(w6_csv, newline="") as f:
        summary_text = f.read()
    for name, text in (("results.csv", summary_text), ("results-rounds.csv", rounds_text)):
        if not splice_csv(os.path.join(out_dir, name), text):
            print("warning: %s/%s has other columns than this version writes; its W6 rows were "
                  "not updated (see w6.csv and w6-rounds.csv)" % (out_dir, name))
    splice_markdown(results_md, section(rows, meta, info))
    print()
    print("wrote %s/w6.md, w6.csv, w6-rounds.csv, w6.svg and the W6 rows and section of "
          "results.csv, results-rounds.csv and results.md" % out_dir)
