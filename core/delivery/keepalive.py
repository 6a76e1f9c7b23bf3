"""A lean keep-alive HTTP/1.1 client for the POSTs of a webhook fan-out (generic, Slack and Teams webhooks).

Why not aiohttp here: a fan-out of 2,000 pages spent about a third of the worker's CPU inside aiohttp's
request machinery (request and response objects, the connector, traces, cookie and redirect handling we
never use), as much as all of Tocsin's own work per page (docs/benchmarks.md). These requests need none of
it: a POST of bytes we already hold, to a URL from config, whose answer we read as status, headers and a
short snippet. So the request head is built once per destination and URL and written with the body in one
call; the answer is parsed by httptools (llhttp, the parser of Node.js and uvicorn) on a pooled connection.
Plain TCP connections are opened and driven straight on the event loop's selector (`_SocketTransport`),
which costs half of what loop.create_connection does; TLS ones go through asyncio's SSL transport.

What it does not do, it hands to aiohttp (`target` raises Unsupported): URLs with user:password@ and
schemes other than http and https. International host names go out in their IDNA form (xn--...), as aiohttp
sends them. Like our aiohttp session it follows no redirects, uses no proxy and verifies TLS with the
system's trust store (SSL_CERT_FILE / SSL_CERT_DIR apply).
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import ssl
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

MAX_BODY_KEPT = 64 * 1024
"""The snippet of the answer we keep (the caller's MAX_RESPONSE_BYTES)."""
MAX_BODY_READ = 1024 * 1024
"""Past this much answer we stop reading and close the connection instead of draining a huge error page."""
IDLE_SECONDS = 4.0
"""How long an idle connection is reused. Below the 5 s keep-alive timeout of Node.js servers, so we do
not write into a connection the server is about to close."""
MAX_IDLE_PER_HOST = 128


class Unsupported(Exception):
    """The URL needs what only aiohttp does (credentials in the URL, another scheme)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where one URL goes and the start of its request head (request line and Host)."""

    key: tuple[str, str, int]
    """(scheme, host, port): the pool of connections it shares."""
    host: str
    port: int
    tls: bool
    start: bytes
    address: tuple[int, Any] | None
    """(family, sockaddr) when the host is an IP address: no lookup before a connect."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    charset: str | None


def target(method: str, url: str) -> Target:
    """Parse and normalise `url` as aiohttp would (yarl requotes the path), or raise Unsupported."""
    u = URL(url)
    if u.scheme not in ("http", "https") or not u.raw_host or u.user is not None or u.password is not None:
        raise Unsupported(url)
    host = u.raw_host
    if not host.isascii():  # yarl gives IDNA hosts encoded; should one not be, it is aiohttp's to judge
        raise Unsupported(url)
    port = u.port
    if port is None:
        raise Unsupported(url)
    default = 443 if u.scheme == "https" else 80
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default else f"{shown}:{port}"
    path = u.raw_path_qs or "/"
    if any(c in method for c in " \r\n") or any(c in path for c in " \r\n"):
        raise ValueError("a request line may not hold spaces or line breaks")
    start = f"{method} {path} HTTP/1.1\r\nHost: {host_header}\r\n".encode("ascii")
    return Target((u.scheme, host, port), host, port, u.scheme == "https", start, _literal(host, port))


def _literal(host: str, port: int) -> tuple[int, Any] | None:
    """The socket address of an IP-address host, None for a name to look up."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 4:
        return socket.AF_INET, (host, port)
    if "%" not in host:
        return socket.AF_INET6, (host, port, 0, 0)
    # A scope (fe80::1%eth0) needs the interface's index: the C library's numeric parse gives it.
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)[0]
    return info[0], info[4]


def head(target: Target, headers: Mapping[str, str], length: int) -> bytes:
    """The whole request head: request line, Host, the caller's headers, Content-Length."""
    parts = [target.start]
    for k, v in headers.items():
        if "\r" in k or "\n" in k or ":" in k or "\r" in v or "\n" in v:
            raise ValueError(f"header {k!r} holds a line break")
        lk = k.lower()
        if lk in ("host", "content-length", "transfer-encoding", "connection"):
            continue  # ours to say
        parts.append(f"{k}: {v}\r\n".encode())  # UTF-8, as aiohttp sends them (and these did before)
    parts.append(f"Content-Length: {length}\r\n\r\n".encode("ascii"))
    return b"".join(parts)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection carrying one request at a time; the parser calls back into it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.closed = False
        self.idle_since = 0.0
        self._headers: list[tuple[str, str]] = []
        self._body = bytearray()
        self._read = 0
        self._headed = False
        """The answer's head came in full: from here a closed connection ends its body, not the answer."""

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # nothing asked: a server talking out of turn
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ConnectionError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"invalid HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self._headed:
                self._complete(keep=False)  # an answer without a length ends where the connection does
            else:
                self.waiter.set_exception(ConnectionError("the server closed the connection"
                                                          + (f": {exc}" if exc else "")))

    # --- httptools callbacks ---

    def on_message_begin(self) -> None:
        self._headers = []
        self._body = bytearray()
        self._read = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        self._headed = True

    def on_body(self, body: bytes) -> None:
        self._read += len(body)
        room = MAX_BODY_KEPT - len(self._body)
        if room > 0:
            self._body += body[:room]
        if self._read > MAX_BODY_READ:
            self._complete(keep=False)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:  # 1xx: the real answer follows
            self._headed = False
            return
        self._complete(keep=self.parser.should_keep_alive())

    # --- ours ---

    def _complete(self, *, keep: bool) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        headers = CIMultiDict(self._headers)
        waiter.set_result(Answer(self.parser.get_status_code(), CIMultiDictProxy(headers), bytes(self._body),
                                 _charset(headers.get("Content-Type"))))
        if not keep:
            self.close()

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _SocketTransport(asyncio.Transport):
    """A connected plain TCP socket, read and written straight from the event loop's selector.

    Why not asyncio's socket transport: through loop.create_connection a connection cost 65-85 us of CPU
    to open (address checks, three futures, the transport's setup; this one 30-37), and a cold fan-out at
    concurrency 64 opens 64 of them: a fifth of the worker's CPU for a 200-page incident
    (docs/benchmarks.md). These connections need only this: one reader callback, writes straight to the
    socket, a writer callback while the kernel's send buffer is full, and close. TLS connections keep
    asyncio's transport."""

    __slots__ = ("_loop", "_sock", "_fd", "_protocol", "_pending", "_closing")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: _Connection) -> None:
        super().__init__({"socket": sock})
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._pending = bytearray()
        """What the kernel did not take yet; written by _write_ready."""
        self._closing = False
        loop.add_reader(self._fd, self._read_ready)
        protocol.connection_made(self)

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        if not self._pending:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._shut(exc)
                return
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
            self._loop.add_writer(self._fd, self._write_ready)
        self._pending += data

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        self._shut(None)

    def abort(self) -> None:
        self._shut(None)

    def _read_ready(self) -> None:
        try:
            data = self._sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._shut(exc)
            return
        if not data:  # the server closed its side: with nothing left to say, so do we
            self._shut(None)
            return
        try:
            self._protocol.data_received(data)
        except Exception as exc:  # a bug of ours: no half-read connection back in the pool; the loop logs it
            self._shut(exc)
            raise

    def _write_ready(self) -> None:
        try:
            sent = self._sock.send(self._pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._shut(exc)
            return
        del self._pending[:sent]
        if not self._pending:
            self._loop.remove_writer(self._fd)

    def _shut(self, exc: Exception | None) -> None:
        if self._closing:
            return
        self._closing = True
        # Out of the selector before the descriptor is closed: the kernel may hand its number out again.
        self._loop.remove_reader(self._fd)
        if self._pending:
            self._pending.clear()
            self._loop.remove_writer(self._fd)
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, exc)


async def _open(loop: asyncio.AbstractEventLoop, t: Target, deadline: float) -> socket.socket:
    """A connected non-blocking TCP socket to `t`, trying each address of its host in turn (as asyncio
    does); OSError when none answers, TimeoutError past `deadline`. On loopback and on a LAN the handshake
    is usually done when connect() returns: then no wait on the event loop."""
    if t.address is not None:
        addresses = [t.address]
    else:
        async with asyncio.timeout_at(deadline):
            infos = await loop.getaddrinfo(t.host, t.port, type=socket.SOCK_STREAM)
        addresses = [(info[0], info[4]) for info in infos]
    errors: list[OSError] = []
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = sock.connect_ex(address)
            if err in (errno.EINPROGRESS, errno.EINTR):
                if not _connected(sock):
                    await _writable(loop, sock, deadline)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, f"Connect call failed {address}")  # OSError picks the subclass by errno
        except TimeoutError:  # the request's deadline (an OSError too): no time left for another address
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    if not errors:
        raise OSError(f"no address for {t.host}")
    if len(errors) == 1 or len({str(e) for e in errors}) == 1:
        raise errors[0]
    raise OSError(f"Multiple exceptions: {', '.join(str(e) for e in errors)}")


def _connected(sock: socket.socket) -> bool:
    """Whether the handshake already finished (getpeername answers only then)."""
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


async def _writable(loop: asyncio.AbstractEventLoop, sock: socket.socket, deadline: float) -> None:
    """Wait until the connecting socket is writable: connected, or failed (SO_ERROR says which)."""
    done: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()
    loop.add_writer(fd, _resolve, done)
    try:
        async with asyncio.timeout_at(deadline):
            await done
    finally:
        loop.remove_writer(fd)


def _resolve(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


def _expire(waiter: asyncio.Future[Answer]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _charset(content_type: str | None) -> str | None:
    if not content_type:
        return None
    for part in content_type.split(";")[1:]:
        k, _, v = part.partition("=")
        if k.strip().lower() == "charset":
            return v.strip().strip('"') or None
    return None


class KeepAlivePool:
    """Idle connections per (scheme, host, port), reused while fresh. One per sender; `aclose` on shutdown."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None, idle_seconds: float = IDLE_SECONDS) -> None:
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._ssl = ssl_context
        self.idle_seconds = idle_seconds
        self._targets: dict[tuple[str, str], Target] = {}
        self._pruning: asyncio.TimerHandle | None = None
        """The timer that closes idle connections once they expire (none while nothing is idle)."""

    def target(self, method: str, url: str) -> Target:
        """target(), cached: a fan-out sends to the same few URLs thousands of times."""
        hit = self._targets.get((method, url))
        if hit is None:
            if len(self._targets) >= 10_000:
                self._targets.clear()
            hit = self._targets[(method, url)] = target(method, url)
        return hit

    async def request(self, t: Target, request_head: bytes, body: bytes, *, timeout: float) -> Answer:
        """Send one request and read its answer within `timeout` seconds (TimeoutError). Transport
        failures raise OSError (ConnectionError, ssl.SSLError). A connection whose answer did not come in
        full is closed, never reused."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = self._fresh_idle(t)
        if conn is None:
            conn = await self._connect(t, deadline)
        conn.waiter = waiter = loop.create_future()
        # One timer on the answer, not asyncio.timeout's task bookkeeping: a fan-out sends thousands.
        timer = loop.call_at(deadline, _expire, waiter)
        try:
            assert conn.transport is not None
            if len(body) < 16384:
                conn.transport.write(request_head + body)
            else:
                conn.transport.writelines((request_head, body))
            answer = await waiter
        except BaseException:
            conn.close()
            raise
        finally:
            timer.cancel()
            conn.waiter = None
        if not conn.closed:
            self._release(t, conn)
        return answer

    def _fresh_idle(self, t: Target) -> _Connection | None:
        idle = self._idle.get(t.key)
        if idle:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < self.idle_seconds:
                    return conn
                conn.close()
        return None

    async def _connect(self, t: Target, deadline: float) -> _Connection:
        """A new connection, within the request's deadline (TimeoutError). Plain TCP goes through our own
        socket transport; TLS through asyncio's."""
        loop = asyncio.get_running_loop()
        if not t.tls:
            conn = _Connection()
            _SocketTransport(loop, await _open(loop, t, deadline), conn)
            return conn
        ctx = self._ssl = self._ssl or ssl.create_default_context()
        async with asyncio.timeout_at(deadline):
            _, conn = await loop.create_connection(_Connection, t.host, t.port, ssl=ctx,
                                                   server_hostname=t.host)
        return conn

    def _release(self, t: Target, conn: _Connection) -> None:
        idle = self._idle.get(t.key)
        if idle is None:
            idle = self._idle[t.key] = deque()
        if len(idle) >= MAX_IDLE_PER_HOST:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        conn._headed = False
        idle.append(conn)
        if self._pruning is None:
            self._pruning = asyncio.get_running_loop().call_later(self.idle_seconds, self._prune)

    def _prune(self) -> None:
        """Close the connections idle for longer than idle_seconds (oldest first in each deque), so a
        pool that falls quiet does not hold sockets open until its next request."""
        self._pruning = None
        now = time.monotonic()
        left = False
        for idle in self._idle.values():
            while idle and (idle[0].closed or now - idle[0].idle_since >= self.idle_seconds):
                idle.popleft().close()
            left = left or bool(idle)
        if left:
            self._pruning = asyncio.get_running_loop().call_later(self.idle_seconds / 2, self._prune)

    async def aclose(self) -> None:
        if self._pruning is not None:
            self._pruning.cancel()
            self._pruning = None
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing
