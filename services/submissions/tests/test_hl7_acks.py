"""ACKs an interface engine can act on (issue 13): HL7 table 0357 conditions with ERR-2 locations and ERR-4 severity,
the sender's version and character set, MSA-2 always the message's control id, enhanced-mode acknowledgement."""

from __future__ import annotations

import hl7
import pytest
from submissions.ack import Reply, build_ack, condition, mllp_acknowledgement
from submissions.hl7files import control_id_of, parse_message

from tests.hl7_corpus import adt

CIN = "12345678A"


@pytest.mark.parametrize(("problem", "location", "code"), [
    ("PV1-3 facility missing", "PV1^1^3", "101"),
    ("MSH-9 missing", "MSH^1^9", "101"),
    ("PID-3 has no Medi-Cal CIN (identifier type MA)", "PID^1^3", "101"),
    ("EVN-6 malformed", "EVN^1^6", "102"),
    ("PID-3 Medi-Cal CIN malformed", "PID^1^3", "102"),
    ("invalid MSH delimiters", "MSH^1^2", "102"),
    ("MSH-15 not in HL7 table 0155: ignored", "MSH^1^15", "103"),
    ("PID missing", "PID", "100"),
    ("unsupported message type", "MSH^1^9^1^1", "200"),
    ("unsupported event code", "MSH^1^9^1^2", "201"),
    ("unsupported HL7 version 2.2", "MSH^1^12", "203"),
    ("unknown sending facility (MSH-4)", "MSH^1^4", "204"),
    ("MSH-4 sending facility not bound to this sender", "MSH^1^4", "204"),
    ("the payload does not start with an MSH segment", "", "100"),
    ("application error: the message was not recorded; send it again", "", "207"),
])
def test_each_problem_has_its_table_0357_condition_and_location(problem: str, location: str, code: str) -> None:
    found_location, found = condition(problem)
    assert (found_location, found.split("^")[0], found.split("^")[2]) == (location, code, "HL70357")


def test_only_our_own_failures_are_207() -> None:
    produced = ["PV1-3 facility missing", "EVN-2 missing", "OBR-4 missing", "RXE-5 missing", "PID-3 missing",
                "EVN missing", "PV1 missing", "no MSH segment", "unparseable HL7 structure", "no HL7 message found",
                "frame does not start with <VT>", "MSH-4 missing: the ADT's sending facility stands",
                "no visit id (PV1-19, PID-18, PV1-50): the event is keyed on the patient and its time",
                "PV1-19 empty: visit id from PID-18"]
    assert [p for p in produced if condition(p)[1].startswith("207")] == []


def test_an_ack_answers_in_the_senders_version_and_character_set() -> None:
    modern = build_ack("AE", "C27", "A01", "SUNNY_SNF", ["EVN-6 malformed"], "2.7", charset="8859/1").split("\r")
    msh = modern[0].split("|")
    assert (msh[8], msh[11], msh[17]) == ("ACK^A01^ACK", "2.7", "8859/1")
    assert "ERR||EVN^1^6|102^Data type error^HL70357|E||||EVN-6 malformed" in modern
    old = build_ack("AE", "C23", "A01", "SUNNY_SNF", ["EVN-6 malformed"], "2.3").split("\r")
    assert (old[0].split("|")[8], old[0].split("|")[11]) == ("ACK^A01", "2.3")  # no MSH-9.3 before 2.3.1
    assert old[1] == "MSA|AE|C23|EVN-6 malformed"  # MSA-3: the text before ERR-2..8 existed (2.5)
    assert old[2] == "ERR|EVN^1^6^102&Data type error&HL70357"  # ERR-1, ELD
    assert build_ack("AA", "X", version="3.0").split("\r")[0].split("|")[11] == "2.5.1"  # not a 2.x version


def test_warnings_are_err_severity_w_on_an_aa() -> None:
    ack = build_ack("AA", "W1", "A01", "SUNNY_SNF", warnings=["PV1-19 empty: visit id from PID-18"]).split("\r")
    assert ack[1] == "MSA|AA|W1"
    assert ack[2] == "ERR||PV1^1^19|101^Required field missing^HL70357|W||||PV1-19 empty: visit id from PID-18"
    assert len(hl7.parse("\r".join(ack))) == 3


@pytest.mark.parametrize(("accept", "application", "code", "sent"), [
    ("", "", "AE", "AE"),  # original mode: the application ACK
    ("NE", "AL", "AA", "AA"),  # only the application ACK asked for
    ("AL", "AL", "AR", "AR"),  # both: the application ACK (it says the message was committed too)
    ("AL", "NE", "AA", "CA"),  # only a commit ACK asked for
    ("AL", "NE", "AE", "CA"),  # recorded, with problems: committed
    ("AL", "NE", "AR", "CR"),  # refused
    ("ER", "NE", "AA", None),  # commit ACK only on error
    ("ER", "NE", "AR", "CR"),
    ("SU", "ER", "AA", "CA"),
    ("SU", "ER", "AE", "AE"),
    ("NE", "SU", "AE", None),
    ("NE", "NE", "AA", None),  # never: nothing is sent
])
def test_enhanced_mode_sends_what_msh15_and_msh16_ask_for(accept: str, application: str, code: str,
                                                          sent: str | None) -> None:
    reply = Reply("A01", "SUNNY_SNF", "2.5.1", accept_ack=accept, application_ack=application)
    answer = mllp_acknowledgement(reply, code, "E1", build_ack(code, "E1", problems=["MSH-12 missing"]),
                                  ["unsupported HL7 version 2.2"])
    assert (str(hl7.parse(answer).segment("MSA")[1]) if answer else None) == sent
    if answer:
        assert "MSA|" + str(sent) + "|E1" in answer
    if sent == "CR":
        assert "|203^Unsupported version id^HL70357|E|" in answer  # type: ignore[operator]


def test_msh15_and_msh16_are_read_from_the_message() -> None:
    message = parse_message(0, adt("A01", CIN).split("\r")[0] + "|||ER|al\r" + "\r".join(adt("A01", CIN).split("\r")[1:]))
    assert (message.accept_ack, message.application_ack) == ("ER", "AL")
    odd = parse_message(0, adt("A01", CIN).replace("|P|2.5.1", "|P|2.5.1|||XX|NE", 1))
    assert (odd.accept_ack, odd.application_ack, odd.warnings) == ("", "NE", ["MSH-15 not in HL7 table 0155: ignored"])


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.2"])
def test_versions_2_3_to_2_8_are_accepted(version: str) -> None:
    assert parse_message(0, adt("A01", CIN, version=version)).fatal is None


@pytest.mark.parametrize("version", ["2.2", "2.1", "2.0"])
def test_versions_before_2_3_are_ar_203_naming_the_version(version: str) -> None:
    message = parse_message(0, adt("A01", CIN, version=version, control_id="OLD1"))
    assert message.fatal == f"unsupported HL7 version {version}"
    ack = build_ack("AR", message.control_id, message.trigger, "", [message.fatal], message.version)
    assert f"MSA|AR|OLD1|unsupported HL7 version {version}" in ack  # answered in its own version: MSA-3, ERR-1
    assert "ERR|MSH^1^12^203&Unsupported version id&HL70357" in ack


def test_a_missing_or_unknown_message_type_or_event_is_refused() -> None:
    base = adt("A01", CIN, control_id="T1")
    assert parse_message(0, base.replace("ADT^A01^ADT_A01", "", 1)).fatal == "MSH-9 missing"
    assert parse_message(0, base.replace("ADT^A01^ADT_A01", "adt^A01", 1)).fatal == "unsupported message type"
    assert parse_message(0, base.replace("ADT^A01^ADT_A01", "ADT^X1", 1)).fatal == "unsupported event code"
    assert parse_message(0, base.replace("ADT^A01^ADT_A01", "SIU^S12", 1)).fatal is None  # recorded and ignored


def test_msa2_is_recovered_when_the_msh_cannot_be_parsed() -> None:
    broken = parse_message(0, "MSH^~|&^PCC^SUNNY_SNF^HIO^SCHIO^2025^^ADT|A01^CTRL7^P^2.5.1")
    assert (broken.fatal, broken.control_id) == ("invalid MSH delimiters", "CTRL7")
    assert control_id_of("junk\rMSH|^~\\&|A|B|C|D|2025||ADT^A01|CTRL8|P|2.5.1") == "CTRL8"
    assert control_id_of("MSH|^~\\&|A|B|C|D|2025||ADT^A01|<b>PHI?</b>|P") == ""  # plain characters only
