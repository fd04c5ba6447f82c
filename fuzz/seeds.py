#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the fuzz targets into fuzz/corpus/<target>/seed-*.

Run from anywhere: `python3 fuzz/seeds.py`. The input layouts are documented on the check
functions in fuzz-checks/src/lib.rs (the keyward-fuzz-checks crate):

  request_scanner   [limits][n][n x u16 cut offsets][client bytes]
  reply_framer      [mode][n][n x u16 cut offsets][reply bytes, or generator instructions]
  cluster_topology  [selector][RESP bytes of one reply]

fuzz/captured/ holds CLUSTER SHARDS / CLUSTER SLOTS / HELLO 3 replies captured with a raw socket
from a real Redis 7.0.15 cluster of 3 primaries and 3 replicas (ip, hostname and unknown-endpoint
preferred endpoint types, and after a primary failed and its replica took over).
"""

import os
import struct

ROOT = os.path.dirname(os.path.abspath(__file__))


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def cuts(*offsets):
    return bytes([len(offsets)]) + b"".join(struct.pack("<H", o) for o in offsets)


def write(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def captured(name):
    with open(os.path.join(ROOT, "captured", name), "rb") as f:
        return f.read()


# Scanner limit bytes (see scan_limits): two bits each for max_args, max_bulk_len,
# max_query_buffer; 3 = the default.
DEFAULTS = 0x3F
SMALL = 0x15  # max_args 3, max_bulk_len 5, max_query_buffer 100
TINY = 0x00  # max_args 1, max_bulk_len 0, max_query_buffer 16
MEDIUM = 0x2A  # max_args 16, max_bulk_len 64, max_query_buffer 2000


def scanner_seeds():
    t = "request_scanner"
    pipeline = b"".join(resp("SET", "k%d" % i, "v%d" % i) + resp("GET", "k%d" % i) for i in range(4))
    write(t, "pipeline", bytes([DEFAULTS]) + cuts(7, 30, 31) + pipeline)
    write(t, "pipeline-small-limits", bytes([SMALL]) + cuts(5) + pipeline)
    write(t, "inline", bytes([DEFAULTS]) + cuts(3) + b"SET a b\r\nGET a\nPING\r\r\n  \t\r\n")
    write(t, "inline-quotes", bytes([DEFAULTS]) + cuts(9, 20)
          + b"SET a \"hello world\" 'it\\'s'\r\n\"\\x41\\x4a\" \"\\n\\r\\t\\b\\a\\\\\\\"\\q\"\r\nab\"c d\" e'f g'\n")
    write(t, "inline-unbalanced", bytes([DEFAULTS]) + cuts() + b"SET a \"abc\r\n")
    write(t, "inline-vt-ff", bytes([DEFAULTS]) + cuts() + b"\x0bSET\x0ba \x0cb\r\n\"a\"\x0b\"b\"\r\n")
    write(t, "inline-many-args", bytes([SMALL]) + cuts(4) + b"DEL a b c d e f\r\n")
    write(t, "inline-long-arg", bytes([SMALL]) + cuts() + b"SET key " + b"x" * 40 + b"\r\n")
    write(t, "removekeys", bytes([DEFAULTS]) + cuts(12) + resp("REMOVEKEYS", "user:1", "user:*", "{t}x"))
    write(t, "removekeys-inline", bytes([MEDIUM]) + cuts(2, 8) + b"removekeys a b* c?\r\nDEL x[1]\r\n")
    write(t, "unlink-many", bytes([MEDIUM]) + cuts(100) + resp("UNLINK", *["key%d" % i for i in range(20)]))
    write(t, "multi-exec", bytes([DEFAULTS]) + cuts(14)
          + resp("MULTI") + resp("DEL", "a", "b") + resp("EXEC") + b"*0\r\n*-1\r\n")
    write(t, "huge-count", bytes([DEFAULTS]) + cuts() + b"*2147483647\r\n$4\r\nPING\r\n")
    write(t, "huge-count-small", bytes([TINY]) + cuts() + b"*2147483647\r\n")
    write(t, "million-args-declared", bytes([DEFAULTS]) + cuts(3) + b"*1048576\r\n$4\r\nPING\r\n$4\r\nPING\r\n")
    write(t, "over-int-max", bytes([DEFAULTS]) + cuts() + b"*2147483648\r\n")
    write(t, "big-bulk", bytes([DEFAULTS]) + cuts(10) + b"*1\r\n$536870912\r\nabc")
    write(t, "too-big-bulk", bytes([DEFAULTS]) + cuts() + b"*1\r\n$536870913\r\n")
    write(t, "bulk-i64-max", bytes([DEFAULTS]) + cuts() + b"*1\r\n$9223372036854775807\r\n")
    write(t, "bulk-over-limit-small", bytes([SMALL]) + cuts() + resp("SET", "k", "toolong"))
    write(t, "query-buffer", bytes([SMALL]) + cuts(20, 60) + b"*2\r\n$3\r\nSET\r\n$5\r\n" + b"x" * 120)
    write(t, "nested", bytes([DEFAULTS]) + cuts(4) + b"*1\r\n" * 16 + b"$4\r\nPING\r\n")
    write(t, "unchecked-crlf", bytes([DEFAULTS]) + cuts(3) + b"*2\rX$3\rYGETab$1\rxkZZ*1\r\r$4\r\rPING\n\n")
    write(t, "nul-bytes", bytes([DEFAULTS]) + cuts(2) + b"*1\r\n$4\0\r\nPING\r\nGET a\0b\r\n")
    write(t, "binary-payload", bytes([DEFAULTS]) + cuts(15) + resp("SET", b"\r\n", b"a\r\nb\0c\r\n*1\r\n$", b""))
    write(t, "expected-dollar", bytes([DEFAULTS]) + cuts() + b"*2\r\n$3\r\nGET\r\n:1\r\n")
    write(t, "bad-counts", bytes([DEFAULTS]) + cuts() + b"*01\r\n")
    write(t, "bad-bulk", bytes([DEFAULTS]) + cuts() + b"*1\r\n$-1\r\n")
    write(t, "blank-lines", bytes([DEFAULTS]) + cuts(1, 2, 3) + b"\r\n\n  \t \r\n\x0b\x0c\nPING\r\n")
    write(t, "resp-then-inline", bytes([MEDIUM]) + cuts(10) + resp("ECHO", "hi") + b"ECHO there\r\n")
    write(t, "hello-auth", bytes([DEFAULTS]) + cuts() + resp("HELLO", "3", "AUTH", "default", "secret"))


def framer_seeds():
    t = "reply_framer"
    raw = bytes([0])
    gen = bytes([1])
    write(t, "scalars", raw + cuts(4, 9)
          + b"+OK\r\n-ERR unknown command\r\n:0\r\n:-42\r\n$5\r\nhello\r\n$0\r\n\r\n$-1\r\n*-1\r\n")
    write(t, "resp3-scalars", raw + cuts(3)
          + b"_\r\n,3.14\r\n,-inf\r\n,nan\r\n#t\r\n#f\r\n(3492890328409238509324850943850943825024385\r\n"
          + b"!21\r\nSYNTAX invalid syntax\r\n=15\r\ntxt:Some string\r\n")
    write(t, "arrays", raw + cuts(10) + b"*2\r\n$3\r\nfoo\r\n$-1\r\n*3\r\n:1\r\n*2\r\n+a\r\n*0\r\n_\r\n")
    write(t, "nested", raw + cuts(20) + b"*2\r\n*2\r\n*2\r\n:1\r\n:2\r\n*0\r\n*1\r\n*1\r\n*1\r\n$1\r\nx\r\n")
    write(t, "map-set", raw + cuts(6) + b"%2\r\n+first\r\n:1\r\n+second\r\n*2\r\n#t\r\n,1.5\r\n~2\r\n+a\r\n+b\r\n")
    write(t, "push-message", raw + cuts(5) + b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n")
    write(t, "subscribe", raw + cuts() + b"*3\r\n$9\r\nsubscribe\r\n$3\r\nfoo\r\n:1\r\n")
    write(t, "attribute", raw + cuts(11)
          + b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n")
    write(t, "attribute-nested", raw + cuts() + b"*2\r\n:1\r\n|1\r\n+ttl\r\n:3600\r\n:2\r\n|1\r\n+a\r\n+b\r\n|1\r\n+c\r\n+d\r\n:7\r\n")
    write(t, "exec", raw + cuts(3) + b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n$-1\r\n")
    write(t, "hello3", raw + cuts(30) + captured("hello3"))
    write(t, "cluster-shards-resp3", raw + cuts(100, 700) + captured("shards_resp3"))
    write(t, "cluster-slots", raw + cuts(50) + captured("slots_resp2"))
    write(t, "deep", raw + cuts(1000) + b"*1\r\n" * 900 + b":1\r\n")
    write(t, "huge-count", raw + cuts() + b"*9223372036854775807\r\n:1\r\n|9223372036854775807\r\n")
    write(t, "bulk-no-crlf", raw + cuts() + b"$3\r\nabcde\r\n")
    write(t, "streamed", raw + cuts() + b"*?\r\n")
    write(t, "bad-int", raw + cuts() + b":01\r\n")
    write(t, "long-header", raw + cuts(30) + b"$" + b"1" * 70 + b"\r\n")
    write(t, "cr-in-line", raw + cuts() + b"+a\rb\r\n")
    write(t, "incomplete", raw + cuts(2) + b"+OK\r\n*2\r\n:1\r\n")
    write(t, "moved", raw + cuts() + b"-MOVED 3999 127.0.0.1:6381\r\n-ASK 3999 127.0.0.1:6381\r\n")
    # Generator instructions (odd mode byte).
    write(t, "gen-mixed", gen + cuts(5, 17) + bytes(range(7, 250, 3)))
    write(t, "gen-aggregates", gen + cuts(9) + bytes([3, 10, 4, 0, 0, 12, 3, 2, 14, 2, 3, 1, 9, 15, 2, 6, 9, 7]) * 4)
    write(t, "gen-deep", gen + cuts(100) + bytes([2]) + struct.pack("<H", 16383) + bytes([0, 2, 1, 5]))
    write(t, "gen-deep-maps", gen + cuts() + bytes([2]) + struct.pack("<H", 3000) + bytes([2, 7, 1]))
    write(t, "gen-nulls", gen + cuts(1) + bytes([0, 1, 0, 1]))


def topology_seeds():
    t = "cluster_topology"
    # selector: bit 0 = RESP3 decoder, bits 1-2 = seed address.
    for name in ["shards", "slots", "host_shards", "host_slots", "unknown_shards", "unknown_slots",
                 "failed_shards", "failed_slots"]:
        write(t, name.replace("_", "-") + "-resp2", bytes([0]) + captured(name + "_resp2"))
        write(t, name.replace("_", "-") + "-resp3", bytes([3]) + captured(name + "_resp3"))
    write(t, "unknown-shards-hostname-seed", bytes([4]) + captured("unknown_shards_resp2"))
    write(t, "unknown-slots-no-port-seed", bytes([6]) + captured("unknown_slots_resp2"))
    # Handwritten: Redis 3 CLUSTER SLOTS without ids, IPv6, numbers as strings, partial coverage.
    write(t, "slots-redis3", bytes([0])
          + b"*2\r\n*3\r\n:0\r\n:8191\r\n*2\r\n$9\r\n127.0.0.1\r\n:7001\r\n"
          + b"*4\r\n:8192\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:7002\r\n*2\r\n$9\r\n127.0.0.1\r\n:7003\r\n")
    write(t, "slots-ipv6", bytes([2]) + b"*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$3\r\n::1\r\n:7001\r\n$2\r\nid\r\n")
    write(t, "slots-string-numbers", bytes([0]) + b"*1\r\n*3\r\n$1\r\n0\r\n$5\r\n16383\r\n*2\r\n$1\r\nh\r\n$4\r\n7001\r\n")
    write(t, "slots-out-of-range", bytes([0]) + b"*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:7001\r\n")
    write(t, "slots-port-zero", bytes([0]) + b"*1\r\n*3\r\n:5\r\n:9\r\n*2\r\n$1\r\nh\r\n:0\r\n")
    write(t, "shards-minimal", bytes([0])
          + b"*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n*8\r\n"
          + b"$4\r\nport\r\n:7009\r\n$8\r\nendpoint\r\n$9\r\nlocalhost\r\n"
          + b"$4\r\nrole\r\n$6\r\nmaster\r\n$6\r\nhealth\r\n$6\r\nonline\r\n")
    write(t, "shards-tls-port", bytes([1])
          + b"*1\r\n%2\r\n$5\r\nslots\r\n*4\r\n:0\r\n:100\r\n:200\r\n:300\r\n$5\r\nnodes\r\n*1\r\n%4\r\n"
          + b"$8\r\ntls-port\r\n:7010\r\n$2\r\nip\r\n$8\r\n10.0.0.1\r\n"
          + b"$4\r\nrole\r\n$6\r\nmaster\r\n$6\r\nhealth\r\n$7\r\nloading\r\n")
    write(t, "not-an-array", bytes([0]) + b"+OK\r\n")
    write(t, "empty", bytes([0]) + b"*0\r\n")
    write(t, "moved-tail", bytes([0]) + b"*1\r\n*3\r\n:0\r\n:100\r\n*2\r\n$1\r\nh\r\n:1\r\n" + b"\x00\x40\xff\x3f")


if __name__ == "__main__":
    scanner_seeds()
    framer_seeds()
    topology_seeds()
