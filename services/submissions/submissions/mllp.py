"""MLLP listener (default port 2575): one HL7 message per frame, each answered with its ACK (or as its MSH-15/16
ask: `submissions.ack`), in the sender's version and character set. Several connections at once; a frame holding a
batch is answered with the batch of ACKs. Files from concurrent connections are committed in groups
(`submissions.groupcommit`; a lone file at once); `DSI_MLLP_GROUP_COMMIT=off` commits each file alone, concurrently.

Hostile peers (issue 12 §3): a frame over `DSI_MLLP_MAX_BYTES` is discarded as it streams (never buffered) and
answered with one AR, the connection staying open; a frame that is not HL7 at all is recorded compactly (one
unpublished `UnreadableFrameReceived`: hash, size, reason) and answered AR; a connection silent for
`DSI_MLLP_IDLE_TIMEOUT_SECONDS`, or whose frame has not ended `DSI_MLLP_READ_TIMEOUT_SECONDS` after it began, is
closed; a peer address may hold `DSI_MLLP_MAX_CONNECTIONS_PER_PEER` connections, more are closed at once.

Who may send (issue 12 §1): with `DSI_MLLP_TLS_CERT`/`_KEY`/`_CLIENT_CA` the listener speaks TLS and requires a client
certificate signed by that CA (mutual TLS); `DSI_MLLP_PEERS` lists the known HIE peers — a client certificate's
common name (with TLS) or an IP address (without) — each bound to the senders (facility ids, NPIs, participant ids,
`*` any) it may send for: `hie-a@SUNNY_SNF|1234567893,10.0.0.5@*`. An unknown peer is closed at once; a file for a
sender its peer is not bound to is AR (`204`), recorded and never credited. Unset: any peer, any sender (development
on loopback only)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from dsi_shared.telemetry import tracer
from opentelemetry import context as otel_context
from opentelemetry import trace

from submissions import hl7files
from submissions.ack import Reply, ack_for, mllp_acknowledgement
from submissions.application import HL7Receipt, MessageAnswer, Submissions
from submissions.domain import UnreadableFrame
from submissions.groupcommit import GroupCommitter
from submissions.hl7files import control_id_of

log = logging.getLogger(__name__)
MAX_FRAME_BYTES = int(os.environ.get("DSI_MLLP_MAX_BYTES", str(16 * 1024 * 1024)))


def _setting(name: str, default: str) -> float:
    """Read when a listener is made (not at import), so each listener takes the environment of its start."""
    return float(os.environ.get(name, default))


VT, FS, CR = b"\x0b", b"\x1c", b"\r"
HEAD_BYTES = 4096  # what is kept of an oversize frame: enough to find its MSH-10
READ_CHUNK = 65536
ORIGINAL = Reply()  # frames we could not read as a message are answered in original mode, 2.5.1


@dataclass(frozen=True)
class Peers:
    """Known MLLP peers (certificate common name or IP address) → the senders each may send for (None: any)."""

    bindings: dict[str, frozenset[str] | None]

    @classmethod
    def parse(cls, raw: str) -> Peers | None:
        """`peer@SENDER|SENDER,…`; None when `raw` is empty (no peer list: any peer)."""
        if not raw.strip():
            return None
        bindings: dict[str, frozenset[str] | None] = {}
        for entry in filter(None, (e.strip() for e in raw.split(","))):
            peer, at, senders = entry.partition("@")
            names = frozenset(s.strip() for s in senders.split("|") if s.strip())
            if not peer or not at or not names:
                raise ValueError("DSI_MLLP_PEERS entries are peer@SENDER|SENDER (a sender, or * for any)")
            bindings[peer] = None if "*" in names else names
        return cls(bindings)


def tls_context() -> ssl.SSLContext | None:
    """Mutual TLS when `DSI_MLLP_TLS_CERT` is set: our certificate, and a client certificate required, signed by
    `DSI_MLLP_TLS_CLIENT_CA`."""
    cert = os.environ.get("DSI_MLLP_TLS_CERT")
    if not cert:
        return None
    key, client_ca = os.environ.get("DSI_MLLP_TLS_KEY"), os.environ.get("DSI_MLLP_TLS_CLIENT_CA")
    if not key or not client_ca:
        raise ValueError("DSI_MLLP_TLS_CERT needs DSI_MLLP_TLS_KEY and DSI_MLLP_TLS_CLIENT_CA (client certificates "
                         "are required)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(client_ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def common_name(peercert: dict[str, object] | None) -> str | None:
    for rdn in (peercert or {}).get("subject", ()):  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


@dataclass(frozen=True)
class Frame:
    """A complete frame's content (without <VT> … <FS><CR>)."""

    data: bytes


@dataclass(frozen=True)
class Oversize:
    """A frame over the limit, discarded: its first bytes (to find its control id), size and SHA-256."""

    head: bytes
    size: int
    sha256: str


@dataclass(frozen=True)
class Unframed:
    """Bytes ending in <FS><CR> that no <VT> began: discarded."""


class MllpFramer:
    """Splits a byte stream into MLLP frames, holding at most `max_bytes` of a frame: beyond it the frame is only
    hashed until its end (pure; fed whatever the socket gives)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.in_frame = False
        self.buf = bytearray()
        self.size = 0
        self.head = b""
        self.hasher: hashlib._Hash | None = None  # set once the frame is over the limit
        self.held_fs = False  # the last byte seen was <FS>: the frame ends if <CR> comes next

    @property
    def mid_frame(self) -> bool:
        return self.in_frame

    def feed(self, data: bytes) -> list[Frame | Oversize | Unframed]:
        out: list[Frame | Oversize | Unframed] = []
        i = 0
        while i < len(data):
            if not self.in_frame:
                start = data.find(VT, i)
                outside = data[i:] if start < 0 else data[i:start]
                if self.held_fs and outside[:1] == CR:
                    out.append(Unframed())
                    outside = outside[1:]
                self.held_fs = False
                end = outside.rfind(FS + CR)
                if end >= 0:
                    out.append(Unframed())
                    outside = outside[end + 2:]
                self.held_fs = outside.endswith(FS)
                if start < 0:
                    return out
                self.in_frame, self.held_fs = True, False
                i = start + 1
                continue
            if self.held_fs:
                self.held_fs = False
                if data[i:i + 1] == CR:
                    out.append(self._end())
                    i += 1
                    continue
                self._take(FS)
            end = data.find(FS + CR, i)
            if end >= 0:
                self._take(data[i:end])
                out.append(self._end())
                i = end + 2
                continue
            chunk = data[i:]
            if chunk.endswith(FS):
                self.held_fs, chunk = True, chunk[:-1]
            self._take(chunk)
            break
        return out

    def _take(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.hasher is not None:
            self.hasher.update(chunk)
        elif self.size <= self.max_bytes:
            self.buf.extend(chunk)
        else:  # over the limit now: keep the head, hash everything, hold nothing more
            self.head = (bytes(self.buf[:HEAD_BYTES]) + chunk[:HEAD_BYTES])[:HEAD_BYTES]
            self.hasher = hashlib.sha256(self.buf)
            self.hasher.update(chunk)
            self.buf = bytearray()

    def _end(self) -> Frame | Oversize:
        if self.hasher is not None:
            result: Frame | Oversize = Oversize(self.head, self.size, self.hasher.hexdigest())
        else:
            result = Frame(bytes(self.buf))
        self.in_frame, self.buf, self.size, self.head, self.hasher = False, bytearray(), 0, b"", None
        return result


def unreadable_reason(block: bytes) -> str | None:
    """Why a frame cannot be read as HL7 at all (no readable MSH first), or None. Any bytes are text: what is not
    valid in the declared (or UTF-8) character set is read as Windows-1252."""
    return hl7files.read_payload(block).unreadable


def reply_frame(answers: list[MessageAnswer]) -> bytes | None:
    """The frame sent back for a frame's messages, each acknowledged as its MSH-15/16 ask (`ack` module), in the
    character set it came in; several in a batch; None when none asked for an answer."""
    acks = [ack for a in answers
            if (ack := mllp_acknowledgement(a.reply, a.ack_code, a.control_id, a.ack, a.problems)) is not None]
    if not acks:
        return None
    codec = answers[0].reply.codec
    text = acks[0] if len(acks) == 1 else f"BHS|^~\\&|DSI|PLAN\r{''.join(acks)}BTS|{len(acks)}\r"
    return text.encode(codec, "replace")


class MllpListener:
    def __init__(self, app: Submissions, port: int, host: str = "127.0.0.1", *, max_bytes: int | None = None,
                 idle_timeout: float | None = None, read_timeout: float | None = None,
                 per_peer: int | None = None, tls: ssl.SSLContext | None = None, peers: Peers | None = None,
                 from_environment: bool = True) -> None:
        """`tls`, `peers`: mutual TLS and the known peers; by default (`from_environment`) from the DSI_MLLP_TLS_* and
        DSI_MLLP_PEERS settings."""
        self.app, self.port, self.host = app, port, host
        self.tls = tls if tls is not None or not from_environment else tls_context()
        self.peers = peers if peers is not None or not from_environment else Peers.parse(os.environ.get("DSI_MLLP_PEERS", ""))
        self.max_bytes = int(_setting("DSI_MLLP_MAX_BYTES", str(16 * 1024 * 1024))) if max_bytes is None else max_bytes
        self.idle_timeout = _setting("DSI_MLLP_IDLE_TIMEOUT_SECONDS", "300") if idle_timeout is None else idle_timeout
        self.read_timeout = _setting("DSI_MLLP_READ_TIMEOUT_SECONDS", "60") if read_timeout is None else read_timeout
        self.per_peer = int(_setting("DSI_MLLP_MAX_CONNECTIONS_PER_PEER", "10")) if per_peer is None else per_peer
        self.stopping = asyncio.Event()
        self.listening = asyncio.Event()  # set once the port accepts connections
        self.tracer = tracer("submissions")
        self.server: asyncio.AbstractServer | None = None
        self.open_by_peer: Counter[str] = Counter()
        # Concurrent connections' files committed in groups (DSI_MLLP_GROUP_COMMIT=off: each alone): a group reads
        # what its files need in two queries and records them with one fsync, about half the CPU a file of committing
        # each alone (measured by the submissions benchmark, issue 14).
        grouped = os.environ.get("DSI_MLLP_GROUP_COMMIT", "on").lower() not in {"off", "0", "false", "no"}
        self.committer = GroupCommitter(app) if grouped else None

    async def run(self) -> None:
        self.server = await asyncio.start_server(self.accept, host=self.host, port=self.port, ssl=self.tls)
        self.listening.set()
        log.info("MLLP listening on %s:%d", self.host, self.port)
        try:
            await self.stopping.wait()
        finally:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else "unknown"
        if self.open_by_peer[peer] >= self.per_peer:
            # the peer's address only: never anything it sent
            log.warning("MLLP connection from %s refused: %d open from this peer (limit %d)",
                        peer, self.open_by_peer[peer], self.per_peer)
            writer.close()
            return
        identity = common_name(writer.get_extra_info("peercert")) if self.tls is not None else peer
        senders: frozenset[str] | None = None
        if self.peers is not None:
            if identity is None or identity not in self.peers.bindings:
                log.warning("MLLP connection from %s refused: not a known HIE peer", peer)  # address only
                writer.close()
                return
            senders = self.peers.bindings[identity]
        self.open_by_peer[peer] += 1
        try:
            await self.handle(reader, writer, senders, identity)
        finally:
            self.open_by_peer[peer] -= 1
            if self.open_by_peer[peer] <= 0:
                del self.open_by_peer[peer]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     senders: frozenset[str] | None = None, identity: str | None = None) -> None:
        framer = MllpFramer(self.max_bytes)
        frame_began: float | None = None
        try:
            while not self.stopping.is_set():
                if framer.mid_frame:
                    frame_began = frame_began or time.monotonic()
                    wait = min(self.idle_timeout, max(0.0, frame_began + self.read_timeout - time.monotonic()))
                else:
                    frame_began, wait = None, self.idle_timeout
                try:
                    data = await asyncio.wait_for(reader.read(READ_CHUNK), wait)
                except TimeoutError:
                    log.warning("MLLP connection closed: %s", "frame not completed in time" if framer.mid_frame
                                else "idle too long")
                    break
                if not data:
                    break  # the peer closed the connection
                for item in framer.feed(data):
                    answer = await self.answer_item(item, senders, identity)
                    if answer is not None:  # None: MSH-15/16 asked for no acknowledgement
                        writer.write(VT + answer + FS + CR)
                        await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def answer_item(self, item: Frame | Oversize | Unframed, senders: frozenset[str] | None = None,
                          identity: str | None = None) -> bytes | None:
        if isinstance(item, Frame):
            return await self.answer(item.data, senders, identity)
        if isinstance(item, Unframed):
            return ack_for(ORIGINAL, "AR", "", ["frame does not start with <VT>"]).encode()
        problem = f"frame larger than {self.max_bytes} bytes"
        await self._record_unreadable(item.sha256, item.size, "frame_too_large")
        return ack_for(ORIGINAL, "AR", control_id_of(item.head), [problem]).encode()

    async def _record_unreadable(self, sha256: str, size: int, reason: str) -> None:
        frame = UnreadableFrame("mllp", datetime.now(UTC), sha256, size, reason)
        try:
            await asyncio.to_thread(self.app.save, frame)
        except Exception as exc:  # noqa: BLE001 - the answer still goes out
            log.error("MLLP unreadable frame not recorded: %s", type(exc).__name__)

    async def answer(self, block: bytes, senders: frozenset[str] | None = None,
                     identity: str | None = None) -> bytes | None:
        with self.tracer.start_as_current_span("mllp message", kind=trace.SpanKind.SERVER) as span:
            payload = hl7files.read_payload(block)  # read once: judging takes it as it is
            reason = payload.unreadable
            if reason is not None:  # garbage: one compact, unpublished event; no payload kept
                await self._record_unreadable(hashlib.sha256(block).hexdigest(), len(block), "not_hl7")
                span.set_attribute("hl7.ack_codes", "AR")
                return ack_for(ORIGINAL, "AR", control_id_of(block[:4096]), [reason]).encode()
            try:
                origin = {"mllp_peer": identity} if self.peers is not None else None
                receipt = HL7Receipt(block, datetime.now(UTC), "mllp", senders, origin, otel_context.get_current(),
                                     payload)
                if self.committer is not None:
                    evaluation = await self.committer.receive(receipt)
                else:
                    evaluation = await asyncio.to_thread(self.app.receive_hl7, block, receipt.received_at, "mllp",
                                                         senders=senders, origin=origin, payload=payload)
            except Exception as exc:  # noqa: BLE001 - every frame gets an answer: a silent close stalls the sender
                log.error("MLLP frame not recorded: %s", type(exc).__name__)  # the type only: messages may hold PHI
                span.set_attribute("hl7.ack_codes", "AE")
                return ack_for(ORIGINAL, "AE", control_id_of(block[:4096]),
                               ["application error: the message was not recorded; send it again"]).encode()
            span.set_attribute("hl7.ack_codes", ",".join(a.ack_code for a in evaluation.answers))
            return reply_frame(evaluation.answers)
