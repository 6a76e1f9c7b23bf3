"""core/delivery/keepalive.py against real loopback peers: raw asyncio TCP servers that speak HTTP/1.1 bytes
(so a test controls every byte of the answer and counts connections) and HttpStandIn for the aiohttp path."""
from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from core.config import ConfigHolder
from core.delivery.keepalive import KeepAlivePool, Unsupported, target
from core.delivery.message import DeliveryResult
from core.delivery.transport import HttpReply, http_attempt
from core.delivery.webhook import WebhookSender
from tests.delivery.helpers import NORMAL_TIMEOUT, config, envelope, retry
from tests.stand_ins.http import HttpStandIn, free_port
from tests.stand_ins.smtp import self_signed_cert

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


@dataclass
class Out:
    """One scripted answer of a RawServer: bytes written in order (a short pause between chunks, so the
    client sees them in separate reads), after an optional delay; then the connection stays open, or is
    closed `close_after` seconds later."""

    chunks: tuple[bytes, ...] = (OK,)
    delay: float = 0.0
    close_after: float | None = None


def out(*chunks: bytes, delay: float = 0.0, close_after: float | None = None) -> Out:
    return Out(chunks, delay, close_after)


class RawServer:
    """A loopback TCP (or TLS) server reading HTTP/1.1 requests (head + Content-Length body) and writing
    scripted raw answers, one per request, `default` once the script is used up. Counts connections."""

    def __init__(self, *script: Out, default: Out | None = None, tls: ssl.SSLContext | None = None,
                 host: str = "127.0.0.1", sock: socket.socket | None = None) -> None:
        self.script: deque[Out] = deque(script)
        self.default = default or Out()
        self.tls = tls
        self.host = host
        self.sock = sock
        """A listening socket to serve on instead of a new one on `host`."""
        self.accepted = 0
        self.requests: list[bytes] = []
        self.eofs = 0
        """Connections the client closed (EOF or reset while we waited for a request)."""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def __aenter__(self) -> RawServer:
        if self.sock is not None:
            self._server = await asyncio.start_server(self._serve, sock=self.sock, ssl=self.tls)
        else:
            self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def until(self, check: Callable[[], bool], timeout: float = 2.0) -> None:
        """Wait (briefly) for a condition on what the server saw."""
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.005)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        self.accepted += 1
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    self.eofs += 1
                    return
                self.requests.append(request)
                answer = self.script.popleft() if self.script else self.default
                if answer.delay and await _closed_within(reader, answer.delay):
                    self.eofs += 1  # the client gave up waiting and hung up
                    return
                for i, chunk in enumerate(answer.chunks):
                    if i:
                        await asyncio.sleep(0.01)
                    writer.write(chunk)
                    await writer.drain()
                if answer.close_after is not None:
                    await asyncio.sleep(answer.close_after)
                    return
        except (ConnectionError, ssl.SSLError):
            self.eofs += 1
        except asyncio.CancelledError:
            pass  # our own teardown; ending quietly keeps asyncio from logging the cancelled handler
        finally:
            self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
            writer.close()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Wait `seconds` for the answer's delay; True if the client closes the connection meanwhile (it sends
    nothing more on a connection before its answer came)."""
    try:
        return await asyncio.wait_for(reader.read(1), seconds) == b""
    except TimeoutError:
        return False


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request's bytes (head and Content-Length body), or None at EOF."""
    try:
        request_head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in request_head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return request_head + await reader.readexactly(length)


def head_lines(request: bytes) -> list[bytes]:
    return request.partition(b"\r\n\r\n")[0].split(b"\r\n")


def header(request: bytes, name: str) -> bytes | None:
    for line in head_lines(request)[1:]:
        k, _, v = line.partition(b":")
        if k.decode().lower() == name.lower():
            return v.strip()
    return None


@pytest.fixture
async def pool() -> AsyncIterator[KeepAlivePool]:
    p = KeepAlivePool()
    yield p
    await p.aclose()


async def post(session: aiohttp.ClientSession, pool: KeepAlivePool, url: str, body: bytes = b'{"a":1}', *,
               headers: dict[str, str] | None = None, timeout: float = 2.0) -> HttpReply | DeliveryResult:
    if headers is None:
        headers = {"Content-Type": "application/json"}
    return await http_attempt(session, method="POST", url=url, body=body, headers=headers, timeout=timeout,
                              pool=pool)


async def ok(session: aiohttp.ClientSession, pool: KeepAlivePool, url: str) -> HttpReply:
    reply = await post(session, pool, url)
    assert isinstance(reply, HttpReply), reply
    return reply


# --- 1. connection reuse ------------------------------------------------------------------------------------


async def test_sequential_requests_share_one_connection(http: aiohttp.ClientSession,
                                                        pool: KeepAlivePool) -> None:
    async with RawServer() as raw:
        for _ in range(5):
            reply = await ok(http, pool, f"{raw.url}/hook")
            assert (reply.status, reply.text) == (200, "ok")
        assert raw.accepted == 1 and len(raw.requests) == 5


async def test_concurrent_requests_open_several_then_reuse_them(http: aiohttp.ClientSession,
                                                                pool: KeepAlivePool) -> None:
    async with RawServer(default=out(OK, delay=0.05)) as raw:
        first = await asyncio.gather(*(ok(http, pool, f"{raw.url}/hook") for _ in range(3)))
        assert raw.accepted == 3
        second = await asyncio.gather(*(ok(http, pool, f"{raw.url}/hook") for _ in range(3)))
        assert raw.accepted == 3 and len(raw.requests) == 6
        assert all(r.status == 200 for r in first + second)


# --- 2. the request's bytes ---------------------------------------------------------------------------------


async def test_request_line_and_host_match_aiohttp(http: aiohttp.ClientSession, pool: KeepAlivePool) -> None:
    async with RawServer() as raw:
        url = f"{raw.url}/hook/a b/ä/%7Euser?q=1 2&x=%41&y=ü#frag"
        await ok(http, pool, url)
        async with http.post(url, data=b'{"a":1}', headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 200
        ours, theirs = head_lines(raw.requests[0]), head_lines(raw.requests[1])
        assert ours[0] == theirs[0]
        assert b" " not in ours[0].split(b" ", 1)[1].rsplit(b" ", 1)[0]
        host = f"127.0.0.1:{raw.port}".encode()
        assert header(raw.requests[0], "Host") == header(raw.requests[1], "Host") == host


@pytest.mark.parametrize(("url", "host"), [
    ("http://example.com/x", "example.com"),
    ("http://example.com:80/x", "example.com"),
    ("https://example.com:443/x", "example.com"),
    ("https://example.com:8443/x", "example.com:8443"),
    ("http://[::1]:8080/x", "[::1]:8080"),
])
def test_host_header_omits_only_the_default_port(url: str, host: str) -> None:
    assert target("POST", url).start == f"POST /x HTTP/1.1\r\nHost: {host}\r\n".encode()


def test_urls_only_aiohttp_handles_are_unsupported() -> None:
    for url in ("http://user:pw@example.com/x", "ftp://example.com/x", "http:///x"):
        with pytest.raises(Unsupported):
            target("POST", url)


async def test_body_length_and_caller_headers_are_sent(http: aiohttp.ClientSession,
                                                       pool: KeepAlivePool) -> None:
    body = b'{"text":"caf\xc3\xa9"}' * 1000  # > 16 KiB: head and body written apart
    async with RawServer() as raw:
        await post(http, pool, f"{raw.url}/hook", body,
                   headers={"Content-Type": "application/json", "X-Team": "sre", "Content-Length": "1",
                            "Host": "evil.example", "Connection": "close"})
        request = raw.requests[0]
        assert request.partition(b"\r\n\r\n")[2] == body
        assert header(request, "Content-Length") == str(len(body)).encode()
        assert header(request, "X-Team") == b"sre"
        assert header(request, "Content-Type") == b"application/json"
        assert header(request, "Host") == f"127.0.0.1:{raw.port}".encode()
        assert header(request, "Connection") is None
        assert [ln.split(b":")[0].lower() for ln in head_lines(request)].count(b"content-length") == 1


async def test_non_ascii_header_value_is_sent_as_aiohttp_sends_it(http: aiohttp.ClientSession,
                                                                  pool: KeepAlivePool) -> None:
    """Destination headers are config strings; before the pool they went through aiohttp (UTF-8)."""
    async with RawServer() as raw:
        for value in ("Zürich", "東京"):
            reply = await post(http, pool, f"{raw.url}/hook", headers={"X-Team": value})
            assert isinstance(reply, HttpReply), reply
            async with http.post(f"{raw.url}/hook", data=b"{}", headers={"X-Team": value}):
                pass
        assert [header(r, "X-Team") for r in raw.requests] == [
            "Zürich".encode(), "Zürich".encode(), "東京".encode(), "東京".encode()]


@pytest.mark.parametrize("headers", [{"X-Evil": "a\r\nInjected: 1"}, {"X-Evil": "a\nb"},
                                     {"X-Evil\r\nInjected": "1"}])
async def test_header_with_line_break_is_permanent_and_nothing_is_sent(
        http: aiohttp.ClientSession, pool: KeepAlivePool, headers: dict[str, str]) -> None:
    async with RawServer() as raw:
        result = await post(http, pool, f"{raw.url}/hook", headers=headers)
        assert isinstance(result, DeliveryResult) and result.outcome == "permanent", result
        assert "invalid request" in result.summary
        await asyncio.sleep(0.02)
        assert raw.accepted == 0 and raw.requests == []


# --- 3. answers ---------------------------------------------------------------------------------------------


async def test_chunked_answer(http: aiohttp.ClientSession, pool: KeepAlivePool) -> None:
    chunked = (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-Id: 7\r\n\r\n",
               b"5\r\nhello\r\n", b"6\r\n world\r\n0\r\n\r\n")
    async with RawServer(out(*chunked)) as raw:
        reply = await ok(http, pool, f"{raw.url}/hook")
        assert (reply.status, reply.text, reply.headers["x-id"]) == (201, "hello world", "7")
        assert (await ok(http, pool, f"{raw.url}/hook")).text == "ok"
        assert raw.accepted == 1


@pytest.mark.parametrize(("chunks", "text"), [
    # No length: the body is what comes until the server closes.
    ((b"HTTP/1.1 200 OK\r\n\r\nhello ", b"until close"), "hello until close"),
    # Once the head is in, the status stands even if the body ends early (as aiohttp's read(n) had it).
    ((b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",), "abc"),
], ids=["without-length", "cut-short"])
async def test_answer_ended_by_close_keeps_status_and_body_and_is_not_reused(
        http: aiohttp.ClientSession, pool: KeepAlivePool, chunks: tuple[bytes, ...], text: str) -> None:
    async with RawServer(out(*chunks, close_after=0)) as raw:
        reply = await ok(http, pool, f"{raw.url}/hook")
        assert (reply.status, reply.text) == (200, text)
        assert (await ok(http, pool, f"{raw.url}/hook")).text == "ok"
        assert raw.accepted == 2


async def test_connection_close_answer_is_not_reused(http: aiohttp.ClientSession,
                                                     pool: KeepAlivePool) -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye"
    async with RawServer(out(closing, close_after=0.5)) as raw:  # the server would keep it open a while
        assert (await ok(http, pool, f"{raw.url}/hook")).text == "bye"
        assert (await ok(http, pool, f"{raw.url}/hook")).text == "ok"
        assert raw.accepted == 2


async def test_100_continue_before_the_answer(http: aiohttp.ClientSession, pool: KeepAlivePool) -> None:
    continued = b"HTTP/1.1 100 Continue\r\n\r\n"
    accepted = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
    async with RawServer(out(continued, OK), out(continued + accepted)) as raw:  # apart, then in one read
        reply = await ok(http, pool, f"{raw.url}/hook")
        assert (reply.status, reply.text) == (200, "ok")
        assert (await ok(http, pool, f"{raw.url}/hook")).status == 202
        assert (await ok(http, pool, f"{raw.url}/hook")).status == 200
        assert raw.accepted == 1


async def test_big_body_is_cut_to_64_kib(http: aiohttp.ClientSession, pool: KeepAlivePool) -> None:
    body = b"x" * 200_000
    big = b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    async with RawServer(out(big)) as raw:
        reply = await ok(http, pool, f"{raw.url}/hook")
        assert reply.status == 500 and reply.text == "x" * 65536
        assert (await ok(http, pool, f"{raw.url}/hook")).text == "ok"
        assert raw.accepted == 1  # read in full, so the connection stays


async def test_huge_body_stops_the_read_and_drops_the_connection(http: aiohttp.ClientSession,
                                                                 pool: KeepAlivePool) -> None:
    size = 3 * 1024 * 1024
    huge = b"HTTP/1.1 503 Busy\r\nContent-Length: %d\r\n\r\n" % size
    async with RawServer(out(huge, b"y" * size)) as raw:
        reply = await ok(http, pool, f"{raw.url}/hook")
        assert reply.status == 503 and reply.text == "y" * 65536
        assert (await ok(http, pool, f"{raw.url}/hook")).text == "ok"
        assert raw.accepted == 2
        await raw.until(lambda: raw.eofs >= 1)


@pytest.mark.parametrize(("content_type", "raw_body", "text"), [
    (b"text/plain; charset=latin-1", "café".encode("latin-1"), "café"),
    (b'text/plain; charset="ISO-8859-1"', "naïve".encode("latin-1"), "naïve"),
    (b"text/plain", "café".encode(), "café"),
    (b"text/plain; charset=x-no-such-charset", "café".encode(), "café"),
])
async def test_charset_of_the_answer(http: aiohttp.ClientSession, pool: KeepAlivePool, content_type: bytes,
                                     raw_body: bytes, text: str) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        content_type, len(raw_body), raw_body)
    async with RawServer(out(answer)) as raw:
        assert (await ok(http, pool, f"{raw.url}/hook")).text == text


# --- 4. failures --------------------------------------------------------------------------------------------


async def test_connection_refused_is_retry(http: aiohttp.ClientSession, pool: KeepAlivePool) -> None:
    port = free_port()
    result = await post(http, pool, f"http://127.0.0.1:{port}/hook/SECRET")
    assert isinstance(result, DeliveryResult) and result.outcome == "retry", result
    assert f"cannot talk to 127.0.0.1:{port}" in result.summary and "Refused" in result.summary


@pytest.mark.parametrize(("answer", "words"), [
    (out(b"", close_after=0), "the server closed the connection"),
    # a head cut short is no answer: not a 429 without its Retry-After (aiohttp: ServerDisconnectedError)
    (out(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\n", close_after=0),
     "the server closed the connection"),
    (out(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), "invalid HTTP answer"),
])
async def test_broken_answers_are_retry(http: aiohttp.ClientSession, pool: KeepAlivePool, answer: Out,
                                        words: str) -> None:
    async with RawServer(answer) as raw:
        result = await post(http, pool, f"{raw.url}/hook")
        assert isinstance(result, DeliveryResult) and result.outcome == "retry", result
        assert words in result.summary
        assert (await ok(http, pool, f"{raw.url}/hook")).text == "ok"
        assert raw.accepted == 2


async def test_hang_past_timeout_is_retry_and_the_connection_is_dropped(http: aiohttp.ClientSession,
                                                                        pool: KeepAlivePool) -> None:
    async with RawServer(Out(), out(OK, delay=5)) as raw:
        assert (await ok(http, pool, f"{raw.url}/hook")).status == 200
        started = asyncio.get_running_loop().time()
        result = await post(http, pool, f"{raw.url}/hook", timeout=0.2)
        assert asyncio.get_running_loop().time() - started < 1.0
        assert isinstance(result, DeliveryResult) and result.outcome == "retry", result
        assert result.summary == "no answer within 0.2s"
        await raw.until(lambda: raw.eofs == 1)  # closed by the client, not left open
        assert (await ok(http, pool, f"{raw.url}/hook")).text == "ok"
        assert raw.accepted == 2


# --- 5. stale idle connections ------------------------------------------------------------------------------


async def test_connection_the_server_closed_while_idle_is_not_used(http: aiohttp.ClientSession,
                                                                   pool: KeepAlivePool) -> None:
    async with RawServer(out(OK, close_after=0)) as raw:  # keep-alive answer, then the server hangs up
        assert (await ok(http, pool, f"{raw.url}/hook")).status == 200
        await asyncio.sleep(0.05)
        assert (await ok(http, pool, f"{raw.url}/hook")).status == 200
        assert raw.accepted == 2


async def test_idle_connection_expires(http: aiohttp.ClientSession) -> None:
    pool = KeepAlivePool(idle_seconds=0.05)
    async with RawServer() as raw:
        await ok(http, pool, f"{raw.url}/hook")
        await ok(http, pool, f"{raw.url}/hook")
        assert raw.accepted == 1
        await asyncio.sleep(0.1)
        await ok(http, pool, f"{raw.url}/hook")
        assert raw.accepted == 2
        await raw.until(lambda: raw.eofs == 1)  # the expired one was closed, not leaked
        await pool.aclose()


async def test_idle_connections_are_closed_when_the_pool_falls_quiet(http: aiohttp.ClientSession) -> None:
    """No further request needed: an idle connection past idle_seconds is closed by the pool's timer."""
    pool = KeepAlivePool(idle_seconds=0.05)
    async with RawServer() as raw:
        await asyncio.gather(*(ok(http, pool, f"{raw.url}/hook") for _ in range(3)))
        assert raw.accepted == 3 and raw.eofs == 0
        await raw.until(lambda: raw.eofs == 3)  # closed by the pool, with no request after them
        assert pool._pruning is None  # nothing idle is left, so no timer runs
        await pool.aclose()


# --- 6. TLS -------------------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting it) for a self-signed 127.0.0.1 certificate."""
    cert, key = self_signed_cert(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


async def test_tls_with_trusted_certificate(http: aiohttp.ClientSession,
                                            certificate: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server, client = certificate
    pool = KeepAlivePool(ssl_context=client)
    async with RawServer(tls=server) as raw:
        assert raw.url.startswith("https://127.0.0.1:")
        for _ in range(2):
            assert (await ok(http, pool, f"{raw.url}/hook")).text == "ok"
        assert raw.accepted == 1
        await pool.aclose()


async def test_tls_with_untrusted_certificate_is_retry(
        http: aiohttp.ClientSession, pool: KeepAlivePool,
        certificate: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    async with RawServer(tls=certificate[0]) as raw:
        result = await post(http, pool, f"{raw.url}/hook")
        assert isinstance(result, DeliveryResult) and result.outcome == "retry", result
        assert "SSLCertVerificationError" in result.summary, result
        assert "certificate verify failed" in result.summary
        assert raw.requests == []


# --- 7. what goes to aiohttp --------------------------------------------------------------------------------


async def test_credentials_in_url_go_through_aiohttp(peer: HttpStandIn, http: aiohttp.ClientSession,
                                                     pool: KeepAlivePool) -> None:
    reply = await post(http, pool, f"http://user:pw@127.0.0.1:{peer.port}/x")
    assert isinstance(reply, HttpReply) and reply.status == 200, reply
    assert peer.requests[0].headers["Authorization"] == "Basic " + base64.b64encode(b"user:pw").decode()


async def test_invalid_url_is_permanent(http: aiohttp.ClientSession, pool: KeepAlivePool) -> None:
    result = await post(http, pool, "http://[::1")
    assert isinstance(result, DeliveryResult) and result.outcome == "permanent"
    assert result.summary == "invalid URL"


# --- 8. opening plain connections (our socket transport) ------------------------------------------------


async def test_ipv6_address(http: aiohttp.ClientSession, pool: KeepAlivePool) -> None:
    async with RawServer(host="::1") as raw:
        assert raw.url.startswith("http://[::1]:")
        for _ in range(2):
            assert (await ok(http, pool, f"{raw.url}/hook")).text == "ok"
        assert raw.accepted == 1
        assert header(raw.requests[0], "Host") == f"[::1]:{raw.port}".encode()


async def test_host_name_is_looked_up(http: aiohttp.ClientSession, pool: KeepAlivePool) -> None:
    async with RawServer() as raw:
        assert (await ok(http, pool, f"http://localhost:{raw.port}/hook")).text == "ok"
        assert header(raw.requests[0], "Host") == f"localhost:{raw.port}".encode()


async def test_each_address_of_a_name_is_tried_in_turn(http: aiohttp.ClientSession, pool: KeepAlivePool,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A name with an IPv6 address that refuses, then an IPv4 one that answers; then neither answers."""
    real = socket.getaddrinfo

    def two_addresses(host: str, port: int, *args: object, **kwargs: object) -> object:
        if host == "two.test":  # the only stand-in here is the name service: both addresses are real
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    async with RawServer() as raw:
        assert (await ok(http, pool, f"http://two.test:{raw.port}/hook")).text == "ok"
        assert raw.accepted == 1
    port = free_port()
    result = await post(http, pool, f"http://two.test:{port}/hook")
    assert isinstance(result, DeliveryResult) and result.outcome == "retry", result
    assert f"('::1', {port}, 0, 0)" in result.summary and f"('127.0.0.1', {port})" in result.summary


async def test_body_bigger_than_the_socket_buffer_goes_out_whole(http: aiohttp.ClientSession,
                                                                  pool: KeepAlivePool) -> None:
    body = os.urandom(4 * 1024 * 1024) * 4  # 16 MiB: the kernel takes it in several writes
    async with RawServer() as raw:
        reply = await post(http, pool, f"{raw.url}/hook", body, timeout=20)
        assert isinstance(reply, HttpReply) and reply.status == 200, reply
        assert raw.requests[0].partition(b"\r\n\r\n")[2] == body
        assert (await ok(http, pool, f"{raw.url}/hook")).text == "ok"
        assert raw.accepted == 1


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_handshake_that_hangs_times_out_then_completes_once_the_server_accepts(
        http: aiohttp.ClientSession, pool: KeepAlivePool) -> None:
    """A server whose accept queue is full drops our SYN: the connect waits on the event loop, is bounded
    by the request's timeout and leaves no socket behind; once the server accepts again, the kernel's
    retried SYN gets through and the waiting request is answered."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))  # the one place in the queue
    try:
        before = _open_descriptors()
        started = asyncio.get_running_loop().time()
        result = await post(http, pool, f"http://127.0.0.1:{port}/hook", timeout=0.3)
        assert asyncio.get_running_loop().time() - started < 1.0
        assert isinstance(result, DeliveryResult) and result.outcome == "retry", result
        assert result.summary == "no answer within 0.3s"
        assert _open_descriptors() == before

        waiting = asyncio.create_task(post(http, pool, f"http://127.0.0.1:{port}/hook", timeout=10))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        async with RawServer(sock=listener) as raw:
            reply = await waiting
            assert isinstance(reply, HttpReply) and reply.text == "ok", reply
            assert raw.accepted == 2  # the filler, then ours
    finally:
        filler.close()


async def test_a_hanging_first_address_uses_up_the_timeout(http: aiohttp.ClientSession, pool: KeepAlivePool,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """As asyncio does, addresses are tried one after the other: one whose handshake hangs takes the
    request's whole timeout, and the attempt says so (not a connection error naming both addresses)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    hanging = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", hanging))
    real = socket.getaddrinfo

    def hang_then_answer(host: str, port: int, *args: object, **kwargs: object) -> object:
        if host == "hang.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", hanging)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", hang_then_answer)
    try:
        async with RawServer() as raw:
            result = await post(http, pool, f"http://hang.test:{raw.port}/hook", timeout=0.3)
            assert isinstance(result, DeliveryResult) and result.outcome == "retry", result
            assert result.summary == "no answer within 0.3s"
            await asyncio.sleep(0.1)
            assert raw.accepted == 0  # no connection to the second address once the time was up
    finally:
        filler.close()
        listener.close()


async def test_refusal_that_comes_after_a_wait_is_reported_as_refused(http: aiohttp.ClientSession,
                                                                      pool: KeepAlivePool) -> None:
    """Our SYN dropped by a full accept queue, then the server goes away: the kernel's retried SYN is
    refused, and that is what the attempt says (the connect waited for its outcome, it did not write into
    a socket that never connected)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    waiting = asyncio.create_task(post(http, pool, f"http://127.0.0.1:{port}/hook", timeout=10))
    await asyncio.sleep(0.2)
    listener.close()
    filler.close()
    result = await waiting
    assert isinstance(result, DeliveryResult) and result.outcome == "retry", result
    assert f"cannot talk to 127.0.0.1:{port}: ConnectionRefusedError" in result.summary, result


# --- 9. a sender end to end ---------------------------------------------------------------------------------


async def test_webhook_sender_reuses_one_connection_and_closes_it(http: aiohttp.ClientSession) -> None:
    async with RawServer(default=out(b"HTTP/1.1 204 No Content\r\n\r\n")) as raw:
        cfg = config(destinations=[{"name": "ops-hook", "channel": "webhook", "url": f"{raw.url}/hook?k=1",
                                    "method": "PUT", "headers": {"Authorization": "Bearer hook-token"}}],
                     channels={"webhook": retry(NORMAL_TIMEOUT)})
        sender = WebhookSender(ConfigHolder(cfg), http=http)
        for _ in range(2):
            result = await sender.send(envelope("webhook", "ops-hook"))
            assert result.outcome == "delivered" and result.status_code == 204, result
        assert raw.accepted == 1 and len(raw.requests) == 2
        assert all(r.startswith(b"PUT /hook?k=1 HTTP/1.1\r\n") for r in raw.requests)
        assert header(raw.requests[0], "Authorization") == b"Bearer hook-token"
        assert header(raw.requests[0], "Idempotency-Key") != header(raw.requests[1], "Idempotency-Key")
        assert raw.eofs == 0
        await sender.aclose()
        await raw.until(lambda: raw.eofs == 1)

