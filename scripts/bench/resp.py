"""A minimal, blocking RESP2 client over a raw TCP socket (standard library only).

The load benchmark uses it to time deletions one command at a time (send a command, wait for its
whole reply, then send the next; W6's direct cluster client sends a batch of DELs per node and
reads all their replies), to populate and check the keyspace, and to hold idle connections open.
Commands are encoded ahead of time with `encode` so that the timed loop does no encoding work.
"""

import socket


class RespError(Exception):
    """An error reply (`-ERR ...`) from the server."""


def encode(*args):
    """Encodes one command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if not isinstance(arg, (bytes, bytearray)):
            arg = str(arg).encode()
        out.append(b"$%d\r\n" % len(arg))
        out.append(bytes(arg))
        out.append(b"\r\n")
    return b"".join(out)


class Client:
    """One connection to 127.0.0.1:port. Not thread-safe; no pipelining unless the caller sends
    several commands before reading their replies."""

    def __init__(self, port, host="127.0.0.1", timeout=30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        if self.pos and self.pos == len(self.buf):
            self.buf = bytearray(chunk)
            self.pos = 0
        else:
            self.buf += chunk

    def _line(self):
        while True:
            end = self.buf.find(b"\r\n", self.pos)
            if end >= 0:
                line = bytes(self.buf[self.pos:end])
                self.pos = end + 2
                return line
            self._fill()

    def read(self):
        """Reads one reply. Error replies are returned as RespError instances, not raised."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self.buf) - self.pos < size + 2:
                self._fill()
            data = bytes(self.buf[self.pos:self.pos + size])
            self.pos += size + 2
            return data
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            return [self.read() for _ in range(count)]
        raise ConnectionError("unexpected reply line: %r" % line[:80])

    def read_integer_sum(self, count):
        """Reads `count` replies that must all be integers (as DEL's) and returns their sum.

        For many small replies at once (W6's direct cluster client reads about 330 per primary
        and call): one scan of the buffer instead of one read() per reply, so that the Python
        client costs little next to the servers. Raises RespError if any reply is not an
        integer, ConnectionError if more lines arrive than replies were expected."""
        if count <= 0:
            return 0
        while self.buf.count(b"\r\n", self.pos) < count:
            self._fill()
        block = bytes(self.buf[self.pos:])
        self.buf = bytearray()
        self.pos = 0
        if block.count(b"\r\n") != count or not block.endswith(b"\r\n"):
            raise ConnectionError("more reply lines than the %d expected: %r"
                                  % (count, block[:200]))
        # Every reply is one line; all of them start with ':' exactly when the first does and
        # every line break but the last is followed by ':'.
        if block[:1] != b":" or block.count(b"\r\n:") != count - 1:
            bad = next((line for line in block[:-2].split(b"\r\n")
                        if not line.startswith(b":")), block[:80])
            raise RespError("not an integer reply: %s" % bad.decode(errors="replace"))
        return sum(map(int, block[1:-2].split(b"\r\n:")))

    def call(self, *args):
        """Sends one command, returns its reply; raises RespError on an error reply."""
        self.send(encode(*args))
        reply = self.read()
        if isinstance(reply, RespError):
            raise reply
        return reply
