"""Issue 12 §3, resource exhaustion: each limit proven on a real server (a spawned `dsi serve`, or the MLLP listener
on a real socket). No timing is measured: only generous bounds the unlimited behaviour clearly violates."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from dsi_shared.natsserver import free_port
from dsi_shared.relay import outgoing
from submissions.application import Submissions
from submissions.contract import CONTRACT
from submissions.mllp import MllpFramer, MllpListener, Oversize, control_id_of

from tests.harness import STAFF, Stack
from tests.hl7_corpus import adt

VT, END = b"\x0b", b"\x1c\r"


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.settimeout(10)  # every wait below is bounded
    return sock


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP response (status, headers, body) within the socket's timeout."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    length = int(headers.get("content-length", headers.get("Content-Length", "0")))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _closed_by_server(sock: socket.socket) -> bool:
    """True when the server closes the connection (within the socket's timeout); False if it stays open."""
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


# -- 1. tokens before bodies; every body limited --------------------------------------------------------------------
async def test_no_body_is_read_before_the_token_is_checked(stack: Stack) -> None:
    url = await asyncio.to_thread(stack.spawn, "enrollment")
    # 300 MB announced, one byte sent: the answer comes without waiting for (or reading) the body
    with _connect(url) as sock:
        sock.sendall(b"POST /participants HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 300000000\r\n\r\n{")
        status, headers, body = await asyncio.to_thread(_response, sock)
    assert status == 401 and headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 401
    with _connect(url) as sock:  # an upload route too
        sock.sendall(b"POST /members/import HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n\r\nmember_id")
        assert (await asyncio.to_thread(_response, sock))[0] == 401
    await stack.start("enrollment")
    client = stack.clients["enrollment"]
    malformed = await client.post("/participants", content=b"{not json", headers={"Content-Type": "application/json"})
    assert malformed.status_code == 401 and malformed.headers["content-type"] == "application/problem+json"
    unknown = await client.post("/participants", content=b"{not json",
                                headers={"Content-Type": "application/json", "Authorization": "Bearer nobody"})
    assert unknown.status_code == 401
    assert (await client.get("/healthz")).status_code == 200  # open paths stay open
    assert (await client.get("/openapi.json")).status_code == 200
    assert (await client.get("/participants", headers={"Authorization": "Bearer auditor-token"})).status_code == 200
    forbidden = await client.post("/participants", json={}, headers={"Authorization": "Bearer auditor-token"})
    assert forbidden.status_code == 403  # roles are still the routes' own


async def test_a_json_body_over_the_limit_gets_413_while_it_streams(stack: Stack) -> None:
    url = await asyncio.to_thread(stack.spawn, "enrollment", DSI_MAX_JSON_BYTES="1000")
    auth = b"Authorization: " + STAFF["Authorization"].encode() + b"\r\n"
    with _connect(url) as sock:  # declared too large: refused at once, nothing read
        sock.sendall(b"POST /participants HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth +
                     b"Content-Length: 300000000\r\n\r\n{")
        status, headers, body = await asyncio.to_thread(_response, sock)
    assert status == 413 and headers["content-type"] == "application/problem+json"
    assert "1000 byte limit" in json.loads(body)["detail"]
    with _connect(url) as sock:  # chunked, no length: refused as soon as it passes the limit, the rest never sent
        sock.sendall(b"POST /participants HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth +
                     b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):  # 1,800 bytes: past the 1,000 byte limit, and the body never ends
            sock.sendall(b"258\r\n" + b" " * 600 + b"\r\n")
        status, _, body = await asyncio.to_thread(_response, sock)
    assert status == 413 and json.loads(body)["status"] == 413
    with _connect(url) as sock:  # under the limit: read and judged as before
        payload = b'{"legal_name": 1}'
        sock.sendall(b"POST /participants HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth +
                     b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        assert (await asyncio.to_thread(_response, sock))[0] == 422
    with _connect(url) as sock:  # an upload has its own limit (DSI_MAX_UPLOAD_BYTES), not the JSON one
        csv = b"member_id,last_name\r\n" + b"".join(b"91%07dA,DOE\r\n" % n for n in range(150))
        assert len(csv) > 1000
        sock.sendall(b"POST /members/import HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n" + auth +
                     b"Content-Length: " + str(len(csv)).encode() + b"\r\n\r\n" + csv)
        assert (await asyncio.to_thread(_response, sock))[0] != 413


# -- 2. timeouts and per-peer connection limits ---------------------------------------------------------------------
async def test_a_slow_http_request_is_closed_after_the_read_timeout(stack: Stack) -> None:
    url = await asyncio.to_thread(stack.spawn, "enrollment", DSI_HTTP_READ_TIMEOUT_SECONDS="1")
    with _connect(url) as silent, _connect(url) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        # with the read timeout at 1 s, both are closed well within the 10 s the socket waits
        assert await asyncio.to_thread(_closed_by_server, silent)
        assert await asyncio.to_thread(_closed_by_server, slow)


async def test_one_peer_may_hold_only_so_many_http_connections(stack: Stack) -> None:
    url = await asyncio.to_thread(stack.spawn, "enrollment", DSI_HTTP_MAX_CONNECTIONS_PER_PEER="3")
    held = [_connect(url) for _ in range(3)]
    try:
        for sock in held:  # each answered once: the server has accepted and counts all three (no sleep needed)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await asyncio.to_thread(_response, sock))[0] == 200
        with _connect(url) as extra:
            assert await asyncio.to_thread(_closed_by_server, extra)
        held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # the ones held still work
        assert (await asyncio.to_thread(_response, held[0]))[0] == 200
    finally:
        for sock in held:
            sock.close()


@pytest.fixture
async def listener(tmp_path: Path) -> tuple[Submissions, MllpListener]:  # type: ignore[misc]
    app = Submissions(f"sqlite:///{tmp_path / 'submissions.db'}")
    server = MllpListener(app, free_port(), max_bytes=10_000, idle_timeout=1, read_timeout=1, per_peer=3)
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.listening.wait(), 10)
    yield app, server
    server.stopping.set()
    await asyncio.wait_for(task, 10)
    app.close()


async def _mllp(server: MllpListener) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def _ack(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(END), 10)


async def test_mllp_closes_idle_connections_and_limits_each_peer(listener: tuple[Submissions, MllpListener]) -> None:
    _, server = listener
    idle = [await _mllp(server) for _ in range(3)]
    extra_reader, _ = await _mllp(server)
    assert await asyncio.wait_for(extra_reader.read(), 10) == b""  # the fourth from this peer: closed at once
    # the idle timeout is 1 s: the three held are closed well within 10 s (without it they stay open for ever)
    for reader, _ in idle:
        assert await asyncio.wait_for(reader.read(), 10) == b""
    reader, writer = await _mllp(server)  # a slow frame: begun, never ended
    writer.write(VT + b"MSH|^~\\&|")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 10) == b""


# -- 3. an oversize frame: one AR, the connection stays open --------------------------------------------------------
def test_the_framer_discards_an_oversize_frame_keeping_only_its_head_and_hash() -> None:
    framer = MllpFramer(100)
    head = adt("A01", "91000000A", control_id="BIG42").encode()
    out = framer.feed(VT + head + b"x" * 1000)
    assert out == [] and len(framer.buf) == 0  # nothing of it held beyond the limit
    out = framer.feed(b"y" * 5000 + b"\x1c")  # the end marker split across reads
    out += framer.feed(b"\r" + VT + b"next" + END)
    assert isinstance(out[0], Oversize) and out[0].size == len(head) + 6000
    assert control_id_of(out[0].head) == "BIG42"
    assert [type(o).__name__ for o in out] == ["Oversize", "Frame"]
    assert control_id_of(b"\x00\xff garbage") == "" and control_id_of(b"MSH|^~\\&|A|B|C|D|T||ADT^A01|\xff|P") == ""


async def test_an_oversize_mllp_frame_gets_one_ar_and_the_next_frame_its_ack(
        listener: tuple[Submissions, MllpListener]) -> None:
    _, server = listener
    reader, writer = await _mllp(server)
    big = adt("A01", "91000000A", control_id="BIG42") + "\r" + "NTE|1|" + "x" * 50_000
    writer.write(VT + big.encode() + END + VT + adt("A08", "91000000A", control_id="NEXT1").encode() + END)
    await writer.drain()
    first = await _ack(reader)
    assert b"MSA|AR|BIG42" in first and b"larger than 10000 bytes" in first
    second = await _ack(reader)
    assert b"|NEXT1" in second and b"MSA|" in second  # acknowledged: the connection stayed open
    writer.close()


# -- 4. garbage frames: one compact, unpublished event each ---------------------------------------------------------
async def test_garbage_frames_are_recorded_compactly_and_never_published(
        listener: tuple[Submissions, MllpListener]) -> None:
    app, server = listener
    reader, writer = await _mllp(server)
    frames = [b"\x00\xff garbage %d" % i for i in range(20)] + [b"not hl7 at all"] * 5
    for frame in frames:
        writer.write(VT + frame + END)
    await writer.drain()
    for _ in frames:
        assert b"MSA|AR|" in await _ack(reader)
    writer.close()
    notifications = list(app.all_notifications())
    assert len(notifications) == len(frames)  # one event per frame, no more
    for notification in notifications:
        event = app.mapper.to_domain_event(notification)
        assert type(event).__name__ == "UnreadableFrameReceived"
        assert event.reason == "not_hl7" and len(event.payload_sha256) == 64  # type: ignore[attr-defined]
        assert outgoing(CONTRACT, notification.id, event) is None  # never relayed to the bus
