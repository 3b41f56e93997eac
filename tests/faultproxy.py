"""A fault-injecting HTTP proxy on 127.0.0.1, between boto3 and the test S3 server.

One request per client connection (the proxy answers `Connection: close`), forwarded byte for
byte, so SigV4 signatures still verify upstream. A rule matching a request's method and path
replaces the forwarding with a fault: an error status, a connection reset after some bytes of
the body, or a stall that never answers. Every wait is bounded; stop() ends them all.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass


@dataclass
class Rule:
    method: str  # "PUT", "GET", ... or "*"
    path: str  # a substring of the request path ("" matches all)
    fault: str  # "status", "reset" or "stall"
    status: int = 503
    code: str = "ServiceUnavailable"
    after_bytes: int = 0  # reset: body bytes read before the reset
    times: int | None = None  # how many matching requests it hits; None: all
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return self.method in ("*", method) and self.path in path


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.endpoint = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def add(self, **rule) -> Rule:
        with self._lock:
            self.rules.append(Rule(**rule))
            return self.rules[-1]

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        client.settimeout(30)
        try:
            head, rest = _read_head(client)
            if head is None:
                return
            method, path = head.split(b" ", 2)[:2]
            method, path = method.decode(), path.decode()
            with self._lock:
                self.requests.append((method, path))
                rule = next((r for r in self.rules if r.matches(method, path)), None)
                if rule is not None:
                    rule.hits += 1
            if rule is not None and rule.fault == "reset":
                _read_body(client, head, rest, limit=rule.after_bytes)
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            body = _read_body(client, head, rest)
            if rule is not None and rule.fault == "stall":
                self._stop.wait(60)
                return
            if rule is not None:
                xml = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{rule.code}</Code>'
                       f"<Message>injected by the test proxy</Message></Error>").encode()
                client.sendall(f"HTTP/1.1 {rule.status} Injected\r\nContent-Type: application/xml\r\n"
                               f"Content-Length: {len(xml)}\r\nConnection: close\r\n\r\n".encode() + xml)
                return
            self._forward(client, head, body)
        except OSError:
            pass
        finally:
            client.close()

    def _forward(self, client: socket.socket, head: bytes, body: bytes) -> None:
        lines = [line for line in head.split(b"\r\n") if not line.lower().startswith((b"connection:", b"expect:"))]
        request = b"\r\n".join(lines + [b"Connection: close", b"", b""]) + body
        with socket.create_connection(self.upstream, timeout=30) as upstream:
            upstream.sendall(request)
            while chunk := upstream.recv(1 << 16):
                client.sendall(chunk)


def _read_head(sock: socket.socket) -> tuple[bytes | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return None, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _headers(head: bytes) -> dict[str, str]:
    out = {}
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.decode("latin-1").partition(":")
        out[key.strip().lower()] = value.strip()
    return out


def _read_body(sock: socket.socket, head: bytes, rest: bytes, limit: int | None = None) -> bytes:
    """The request body as sent (chunked framing kept); with `limit`, stop once that many bytes are in."""
    headers = _headers(head)
    if headers.get("expect", "").lower() == "100-continue":
        sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    data = rest

    def more() -> bool:
        nonlocal data
        if limit is not None and len(data) >= limit:
            return False
        chunk = sock.recv(1 << 16)
        data += chunk
        return bool(chunk)

    if "content-length" in headers:
        while len(data) < int(headers["content-length"]) and more():
            pass
        return data
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while not _chunked_complete(data) and more():
            pass
    return data


def _chunked_complete(data: bytes) -> bool:
    """Whether `data` holds a whole chunked body: chunks, the 0-size one, trailers, a blank line."""
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return False
        size = int(data[pos:end].split(b";")[0] or b"0", 16)
        if size == 0:
            return data.find(b"\r\n\r\n", end) >= 0
        pos = end + 2 + size + 2
        if pos > len(data):
            return False
