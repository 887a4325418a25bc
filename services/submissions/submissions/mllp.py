"""MLLP listener (default port 2575): one HL7 message per frame, each answered with its ACK. Several connections
at once (python-hl7's asyncio MLLP streams); a frame holding a batch is answered with the batch of ACKs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import UTC, datetime

import hl7.mllp
from dsi_shared.telemetry import tracer
from opentelemetry import trace

from submissions.ack import build_ack
from submissions.application import Submissions

log = logging.getLogger(__name__)
MAX_FRAME_BYTES = int(os.environ.get("DSI_MLLP_MAX_BYTES", str(16 * 1024 * 1024)))


class MllpListener:
    def __init__(self, app: Submissions, port: int, host: str = "127.0.0.1") -> None:
        self.app, self.port, self.host = app, port, host
        self.stopping = asyncio.Event()
        self.tracer = tracer("submissions")
        self.server: asyncio.AbstractServer | None = None

    async def run(self) -> None:
        self.server = await hl7.mllp.start_hl7_server(self.handle, host=self.host, port=self.port, limit=MAX_FRAME_BYTES)
        log.info("MLLP listening on %s:%d", self.host, self.port)
        try:
            await self.stopping.wait()
        finally:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)

    async def handle(self, reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while not reader.at_eof() and not self.stopping.is_set():
                try:
                    block = await reader.readblock()
                except asyncio.IncompleteReadError:
                    break  # the peer closed the connection
                except hl7.mllp.InvalidBlockError:
                    writer.writeblock(build_ack("AR", "", problems=["frame does not start with <VT>"]).encode())
                    await writer.drain()
                    break
                except ValueError:
                    writer.writeblock(build_ack("AR", "", problems=[f"frame larger than {MAX_FRAME_BYTES} bytes"]).encode())
                    await writer.drain()
                    continue
                writer.writeblock(await self.answer(block))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def answer(self, block: bytes) -> bytes:
        with self.tracer.start_as_current_span("mllp message", kind=trace.SpanKind.SERVER) as span:
            try:
                evaluation = await asyncio.to_thread(self.app.receive_hl7, block, datetime.now(UTC), "mllp")
            except Exception as exc:  # noqa: BLE001 - every frame gets an answer: a silent close stalls the sender
                log.error("MLLP frame not recorded: %s", type(exc).__name__)  # the type only: messages may hold PHI
                span.set_attribute("hl7.ack_codes", "AE")
                return build_ack("AE", "", problems=["application error: the message was not recorded; send it again"]).encode()
            span.set_attribute("hl7.ack_codes", ",".join(a.ack_code for a in evaluation.answers))
            if len(evaluation.answers) == 1:
                return evaluation.answers[0].ack.encode()
            acks = "".join(a.ack for a in evaluation.answers)
            return f"BHS|^~\\&|DSI|PLAN\r{acks}BTS|{len(evaluation.answers)}\r".encode()
