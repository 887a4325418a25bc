"""Real senders' HL7 v2 through the real services (issue 13), on real NATS + PostgreSQL: a 2.3 sender's Windows-1252
file with LF terminators, no visit id and an ORU without MSH-4 earns and is answered in its own version and encoding;
a 2.2 sender is refused 203; MLLP honours MSH-15/16; a cancelled discharge sent again earns again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.harness import STAFF, Stack
from tests.hl7_corpus import adt, combined, oru, rde
from tests.test_submissions import MEMBER, ready_snf

pytestmark = pytest.mark.integration
HIE = {"Authorization": "Bearer hie-token", "content-type": "x-application/hl7-v2+er7"}
RECEIVED = "2025-11-01T12:00:00-07:00"


async def post_bytes(stack: Stack, data: bytes, received_at: str = RECEIVED) -> dict[str, Any]:
    response = await stack.clients["submissions"].post("/hl7", content=data, params={"received_at": received_at},
                                                       headers=HIE)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture
async def snf(stack: Stack) -> Stack:
    await ready_snf(stack)
    return stack


async def test_a_windows_1252_v23_file_without_visit_id_or_oru_msh4_earns_and_is_answered_in_kind(snf: Stack) -> None:
    header = "MSH|^~\\&|PCC|SUNNY_SNF^1234567890^NPI|"
    text = "\r".join([adt("A01", MEMBER, visit=None, version="2.3", control_id="LAT1"),
                      oru(MEMBER).replace(header, "MSH|^~\\&|PCC||").replace("|2.5.1", "|2.3"),
                      rde(MEMBER).replace("|2.5.1", "|2.3")]).replace("DOE^JANE", "PEÑA^JOSÉ")
    answer = await post_bytes(snf, text.replace("\r", "\n").encode("windows-1252"))
    [submission] = answer["submissions"]
    assert (submission["verdict"], submission["amount"]) == ("credited", "400.00")
    facts = submission["facts"]
    assert (facts["encoding"], facts["visit"], facts["visit_source"]) == ("windows-1252", None, None)
    assert {"not valid utf-8 and no MSH-18: read as windows-1252", "segments ended by LF or CR LF: read as CR"} <= set(
        facts["leniencies"])
    assert any("MSH-4 missing: the ADT's sending facility stands" in line for line in facts["leniencies"])
    first = answer["messages"][0]
    assert first["ack_code"] == "AA" and first["ack"].split("\r")[1] == "MSA|AA|LAT1"
    assert first["ack"].split("\r")[0].split("|")[11] == "2.3"  # answered in the sender's version
    shown = (await snf.clients["submissions"].get(f"/submissions/{submission['id']}", headers=STAFF)).json()
    assert shown["facts"]["leniencies"] == facts["leniencies"]  # kept for the auditor


async def test_a_v22_sender_is_refused_203_naming_the_version(snf: Stack) -> None:
    answer = await post_bytes(snf, adt("A01", MEMBER, version="2.2", control_id="OLD22").encode())
    [message] = answer["messages"]
    assert (message["ack_code"], message["problems"]) == ("AR", ["unsupported HL7 version 2.2"])
    assert "MSA|AR|OLD22|unsupported HL7 version 2.2" in message["ack"]
    assert "ERR|MSH^1^12^203&Unsupported version id&HL70357" in message["ack"]
    assert answer["submissions"][0]["reasons"] == ["unprocessable:unsupported HL7 version 2.2"]
    unknown = await post_bytes(snf, adt("A01", MEMBER, facility="NOBODY_SNF", control_id="WHO1").encode())
    assert "ERR||MSH^1^4|204^Unknown key identifier^HL70357|E|" in unknown["messages"][0]["ack"]


async def test_a_discharge_sent_again_after_its_cancel_earns_again(snf: Stack) -> None:
    first = await post_bytes(snf, combined("A03", MEMBER).encode())
    assert first["submissions"][0]["verdict"] == "credited"
    cancel = await post_bytes(snf, adt("A13", MEMBER).encode(), "2025-11-01T13:00:00-07:00")
    assert cancel["submissions"][0]["reasons"] == [f"cancels:{first['submissions'][0]['id']}"]
    again = await post_bytes(snf, combined("A03", MEMBER).encode(), "2025-11-01T14:00:00-07:00")
    assert (again["submissions"][0]["verdict"], again["submissions"][0]["amount"]) == ("credited", "400.00")


async def test_mllp_answers_as_msh15_and_msh16_ask_in_the_senders_encoding(snf: Stack) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", snf.mllp_port)

    async def exchange(*frames: bytes) -> bytes:
        for frame in frames:
            writer.write(b"\x0b" + frame + b"\x1c\r")
        await writer.drain()
        return await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 30)

    def message(control_id: str, acks: str = "", occurred: str = "20251101080000") -> bytes:
        text = adt("A08", MEMBER, control_id=control_id, occurred=occurred)
        return text.replace("|P|2.5.1", f"|P|2.5.1|||{acks}" if acks else "|P|2.5.1", 1).encode()

    try:
        assert b"MSA|CA|COMMIT1" in await exchange(message("COMMIT1", "AL|NE"))  # commit ACK only
        assert b"MSA|AA|APP1" in await exchange(message("APP1", "NE|AL"))  # application ACK only
        # NE|NE: nothing is sent for it; the next answer on the connection is the next message's
        assert b"MSA|AA|NEXT1" in await exchange(message("QUIET1", "NE|NE"), message("NEXT1"))
        latin = adt("A08", MEMBER, control_id="LATIN1").replace("DOE^JANE", "MÜLLER^JANE").encode("windows-1252")
        answer = await exchange(latin)
        assert b"MSA|AA|LATIN1" in answer and answer.decode("windows-1252")
        refused = await exchange(b"\x00\x01 not hl7\rMSH|^~\\&|PCC|SUNNY_SNF|HIO|SCHIO|2025||ADT^A01|LOST9|P|2.5.1")
        assert b"MSA|AR|LOST9" in refused  # AR, and MSA-2 recovered
    finally:
        writer.close()
