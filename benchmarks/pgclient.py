"""A minimal PostgreSQL wire-protocol client (simple queries, text results)
for the benchmarks' timed statements.

`psql` costs 30-50 ms per invocation on the benchmark machines (starting
the process and loading libpq), which is a tenth of a half-second Weir run;
Flink's runs are timed inside its own process. An open connection makes
Weir's timing the server's work too. Only trust authentication (Weir's
default) is spoken.
"""

import socket
import struct

PROTOCOL_3 = 196608


class PgError(RuntimeError):
    """An ErrorResponse: its SQLSTATE and message."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code


class Connection:
    def __init__(self, host, port, user="weir", database="weir", timeout=None):
        self.sock = socket.create_connection((host, port))
        self.sock.settimeout(timeout)
        self.buf = bytearray()
        params = f"user\0{user}\0database\0{database}\0\0".encode()
        self.sock.sendall(struct.pack("!ii", 8 + len(params), PROTOCOL_3) + params)
        while True:
            kind, body = self._message()
            if kind == b"R" and struct.unpack("!i", body[:4])[0] != 0:
                raise PgError("28000", "the server asked for a password")
            if kind == b"E":
                raise self._error(body)
            if kind == b"Z":
                return

    def query(self, sql):
        """Runs `sql` (one or more statements); returns the rows of the last
        statement that returned any, each a list of str (None for NULL)."""
        data = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", 4 + len(data)) + data)
        rows, current, error = [], [], None
        while True:
            kind, body = self._message()
            if kind == b"T":
                current = []
            elif kind == b"D":
                current.append(_data_row(body))
            elif kind == b"C":
                if current:
                    rows = current
            elif kind == b"E":
                error = self._error(body)
            elif kind == b"Z":
                if error:
                    raise error
                return rows

    def close(self):
        try:
            self.sock.sendall(b"X" + struct.pack("!i", 4))
        finally:
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    def _message(self):
        while True:
            if len(self.buf) >= 5:
                n = struct.unpack("!i", self.buf[1:5])[0]
                if len(self.buf) >= 1 + n:
                    kind, body = bytes(self.buf[:1]), bytes(self.buf[5 : 1 + n])
                    del self.buf[: 1 + n]
                    return kind, body
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buf += chunk

    @staticmethod
    def _error(body):
        fields = {}
        for part in body.split(b"\0"):
            if part:
                fields[part[:1]] = part[1:].decode(errors="replace")
        return PgError(fields.get(b"C", "?????"), fields.get(b"M", ""))


def _data_row(body):
    (n,) = struct.unpack("!h", body[:2])
    at, row = 2, []
    for _ in range(n):
        (size,) = struct.unpack("!i", body[at : at + 4])
        at += 4
        if size < 0:
            row.append(None)
        else:
            row.append(body[at : at + size].decode())
            at += size
    return row
