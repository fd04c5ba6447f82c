#!/usr/bin/env python3
"""POST /v1/keys/remove against REMOVEKEYS, 1000 keys per call, in one run (issue 12).

    scripts/bench/http_remove.py BINARY [ROUNDS] [KEYS]

Starts a redis-server (no persistence) and one keyward (BINARY, default mode) with its HTTP API
on, both on free 127.0.0.1 ports. Each round, for each way in turn (the order alternating from
round to round): KEYS keys (default 200,000) are put in place with redis-cli --pipe, then removed
1000 per call with one call in flight: REMOVEKEYS over one RESP connection, or POST
/v1/keys/remove over one HTTP/1.1 keep-alive connection (http.client). Every call's reply must
count 1000 removed keys and Redis must be empty afterwards. Prints keys removed per second per
round, the medians, and the ratio HTTP / RESP. Standard library only.
"""

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resp import Client, encode  # noqa: E402

BATCH = 1000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on %d" % port)


def key_name(i):
    return "kwhttp:key:%08d" % i


def populate(redis_port, count, path):
    with open(path, "rb") as f:
        out = subprocess.run(["redis-cli", "-p", str(redis_port), "--pipe"], stdin=f,
                             capture_output=True, text=True, timeout=300)
    if out.returncode != 0 or "errors: 0" not in out.stdout:
        raise RuntimeError("redis-cli --pipe failed: %s" % out.stdout[-300:])


def resp_round(port, batches):
    with Client(port) as c:
        c.call("PING")
        removed = 0
        t0 = time.perf_counter()
        for cmd in batches:
            c.send(cmd)
            removed += c.read()
        return removed, time.perf_counter() - t0


def http_round(port, bodies):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    conn.request("GET", "/v1/openapi.json")
    conn.getresponse().read()
    removed = 0
    t0 = time.perf_counter()
    for body in bodies:
        conn.request("POST", "/v1/keys/remove", body=body, headers=headers)
        response = conn.getresponse()
        answer = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError("HTTP %d: %s" % (response.status, answer))
        removed += answer["removed"]
    elapsed = time.perf_counter() - t0
    conn.close()
    return removed, elapsed


def main():
    binary = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 200_000
    work = tempfile.mkdtemp(prefix="keyward-http-bench.")
    redis_port, resp_port, http_port = free_port(), free_port(), free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "",
                              "--appendonly", "no", "--dir", work],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    keyward = None
    try:
        wait_port(redis_port)
        config = os.path.join(work, "proxy.toml")
        with open(config, "w") as f:
            f.write('[server]\nlisten = "127.0.0.1:%d"\n[upstream]\nnodes = ["127.0.0.1:%d"]\n'
                    '[http]\nlisten = "127.0.0.1:%d"\n' % (resp_port, redis_port, http_port))
        env = dict(os.environ, RUST_LOG="warn")
        keyward = subprocess.Popen([binary, "--config", config], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(resp_port)
        wait_port(http_port)

        names = [key_name(i) for i in range(count)]
        fill = os.path.join(work, "fill.resp")
        with open(fill, "wb") as f:
            for name in names:
                f.write(encode("SET", name, "v"))
        chunks = [names[i:i + BATCH] for i in range(0, count, BATCH)]
        resp_batches = [encode("REMOVEKEYS", *chunk) for chunk in chunks]
        http_bodies = [json.dumps({"keys": chunk}).encode() for chunk in chunks]

        rates = {"RESP REMOVEKEYS": [], "HTTP /v1/keys/remove": []}
        ways = list(rates)
        for r in range(rounds):
            for way in (ways if r % 2 == 0 else ways[::-1]):
                populate(redis_port, count, fill)
                if way.startswith("RESP"):
                    removed, elapsed = resp_round(resp_port, resp_batches)
                else:
                    removed, elapsed = http_round(http_port, http_bodies)
                with Client(redis_port) as c:
                    left = c.call("DBSIZE")
                if removed != count or left != 0:
                    raise RuntimeError("%s removed %d of %d keys, %d left"
                                       % (way, removed, count, left))
                rates[way].append(removed / elapsed)
                print("round %d %-22s %9.0f keys/s" % (r + 1, way, removed / elapsed),
                      file=sys.stderr)
        resp = statistics.median(rates["RESP REMOVEKEYS"])
        http = statistics.median(rates["HTTP /v1/keys/remove"])
        print("\n| way (1000 keys per call, one in flight) | keys/s (median of %d) |" % rounds)
        print("|---|---|")
        print("| RESP `REMOVEKEYS` | %.0f |" % resp)
        print("| HTTP `POST /v1/keys/remove` | %.0f |" % http)
        print("| ratio HTTP / RESP | %.2fx (target: at least 0.5x) |" % (http / resp))
    finally:
        for p in (keyward, redis):
            if p is not None:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
