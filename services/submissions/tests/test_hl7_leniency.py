"""Real senders, read leniently and recorded (issue 13): the visit id's fallbacks, an event without a visit, encodings,
associated messages without MSH-4, segment terminators, a cancelled event sent again — against a Submissions store
(SQLite) that knows one SNF, one member and the packaged rules."""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from dsi_shared.rulebook import RuleBook
from submissions.application import Evaluation, Submissions
from submissions.domain import MemberFacts
from submissions.hl7files import decode, parse_message
from submissions.mllp import reply_frame

from tests.hl7_corpus import adt, combined, oru, rde
from tests.rulesdoc import amended, book
from tests.stores import snf_store

CIN = "12345678A"
RECEIVED = datetime(2025, 11, 1, 19, tzinfo=UTC)  # noon in Los Angeles, four hours after the events below


def with_field(message: str, segment: str, number: int, value: str) -> str:
    """`message` with SEG-number set (the segment's first occurrence)."""
    lines = message.split("\r")
    at = next(i for i, line in enumerate(lines) if line.startswith(segment + "|"))
    fields = lines[at].split("|")
    fields += [""] * (number + 1 - len(fields))
    fields[number] = value
    lines[at] = "|".join(fields)
    return "\r".join(lines)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Submissions]:
    member = MemberFacts(CIN)
    member.note_span(start=date(2025, 1, 1), end=None, version=1)
    yield from snf_store(tmp_path, monkeypatch, member)


def send(app: Submissions, payload: str | bytes, **kwargs: Any) -> Evaluation:
    data = payload.encode() if isinstance(payload, str) else payload
    return app.receive_hl7(data, RECEIVED, "http", **kwargs)


def outcome(evaluation: Evaluation) -> tuple[str | None, list[str]]:
    [submission] = evaluation.submissions
    return submission.verdict, submission.reasons


# -- the visit identifier ------------------------------------------------------------------------------------------
def test_the_visit_falls_back_to_pid18_then_pv1_50_and_says_which() -> None:
    no_pv1_19 = adt("A01", CIN, visit=None)
    by_account = parse_message(0, with_field(with_field(no_pv1_19, "PID", 18, "ACC9"), "PV1", 50, "ALT9"))
    assert (by_account.visit, by_account.visit_source, by_account.problems) == ("ACC9", "PID-18", [])
    assert by_account.warnings == ["PV1-19 empty: visit id from PID-18"]
    by_alternate = parse_message(0, with_field(no_pv1_19, "PV1", 50, "ALT9"))
    assert (by_alternate.visit, by_alternate.visit_source) == ("ALT9", "PV1-50")
    first = parse_message(0, with_field(adt("A01", CIN), "PID", 18, "ACC9"))
    assert (first.visit, first.visit_source, first.warnings) == ("V0001", "PV1-19", [])


def test_an_event_without_any_visit_id_earns_as_the_patients_event_at_that_time(app: Submissions) -> None:
    first = send(app, combined("A01", CIN, visit=None))  # type: ignore[arg-type]
    assert outcome(first) == ("credited", [])
    facts = first.submissions[0].facts
    assert (facts["visit"], facts["visit_source"]) == (None, None)
    assert any("no visit id (PV1-19, PID-18, PV1-50)" in line for line in facts["leniencies"])
    assert first.answers[0].ack_code == "AA" and "|PV1^1^19|101^Required field missing^HL70357|W|" in first.answers[0].ack
    again = send(app, combined("A01", CIN, visit=None))  # type: ignore[arg-type]
    assert outcome(again) == ("rejected", [f"duplicate_of:{first.submissions[0].id}"])  # patient + type + time
    later = send(app, combined("A01", CIN, visit=None, occurred="20251101090000"))  # type: ignore[arg-type]
    assert outcome(later) == ("credited", [])
    by_account = send(app, with_field(combined("A02", CIN, visit=None), "PID", 18, "ACC9"))  # type: ignore[arg-type]
    assert outcome(by_account) == ("credited", []) and by_account.submissions[0].facts["visit_source"] == "PID-18"


# -- cancel, then send again ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("event", "cancel"), [("A03", "A13"), ("A01", "A11"), ("A02", "A12")])
def test_an_event_sent_again_after_its_cancel_earns_again(app: Submissions, event: str, cancel: str) -> None:
    credited = send(app, combined(event, CIN))
    assert outcome(credited) == ("credited", [])
    cancelled = send(app, adt(cancel, CIN))
    assert outcome(cancelled) == ("recorded", [f"cancels:{credited.submissions[0].id}"])
    corrected = send(app, combined(event, CIN))
    assert outcome(corrected) == ("credited", [])  # the cancelled credit is no duplicate
    assert outcome(send(app, combined(event, CIN)))[1] == [f"duplicate_of:{corrected.submissions[0].id}"]
    assert outcome(send(app, adt(cancel, CIN)))[1] == [f"cancels:{corrected.submissions[0].id}"]


def test_an_event_without_a_visit_is_cancelled_and_sent_again_on_the_patient(app: Submissions) -> None:
    credited = send(app, combined("A03", CIN, visit=None))  # type: ignore[arg-type]
    assert outcome(send(app, adt("A13", CIN, visit=None))) == ("recorded", [f"cancels:{credited.submissions[0].id}"])
    assert outcome(send(app, combined("A03", CIN, visit=None))) == ("credited", [])  # type: ignore[arg-type]


def test_cancel_then_resend_follows_the_rules_cancel_pairs_not_constants(app: Submissions,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    only_a11 = amended("2025.9", "2025-10-01", {"provider_types.skilled_nursing.earning_rule.cancel_events": {"A11": "A01"}})
    monkeypatch.setattr(app, "rulebook", lambda: book(only_a11))
    discharge = send(app, combined("A03", CIN))
    assert outcome(send(app, adt("A13", CIN))) == ("recorded", ["not_a_qualifying_event:A13"])  # cancels nothing now
    assert outcome(send(app, combined("A03", CIN)))[1] == [f"duplicate_of:{discharge.submissions[0].id}"]
    admit = send(app, combined("A01", CIN))
    assert outcome(send(app, adt("A11", CIN)))[1] == [f"cancels:{admit.submissions[0].id}"]
    assert outcome(send(app, combined("A01", CIN))) == ("credited", [])


# -- encodings, terminators ----------------------------------------------------------------------------------------------
def test_bytes_that_are_not_utf8_without_msh18_are_read_as_windows_1252_and_answered(app: Submissions) -> None:
    text = combined("A01", CIN).replace("DOE^JANE^Q", "PEÑA^JOSÉ^Q")
    evaluation = send(app, text.encode("windows-1252"))
    assert outcome(evaluation) == ("credited", [])
    facts = evaluation.submissions[0].facts
    assert facts["encoding"] == "windows-1252"
    assert "not valid utf-8 and no MSH-18: read as windows-1252" in facts["leniencies"]
    first = evaluation.answers[0]
    assert first.ack_code == "AA" and f"MSA|AA|{first.control_id}" in first.ack and first.control_id
    assert first.reply.codec == "windows-1252"
    framed = reply_frame(evaluation.answers[:1])
    assert framed is not None and framed.decode("windows-1252") == first.ack  # answered in its own encoding


def test_a_declared_msh18_is_honoured_and_answered_in_kind() -> None:
    declared = combined("A01", CIN).replace("|P|2.5.1", "|P|2.5.1||||||8859/1").replace("DOE^JANE", "MÜLLER^JANE")
    read = decode(declared.encode("latin-1"))
    assert (read.codec, read.charset, read.leniencies) == ("latin-1", "8859/1", ())
    message = parse_message(0, read.text.split("\rORU")[0])
    assert message.charset == "8859/1"


def test_bytes_without_a_readable_msh_are_ar_with_the_control_id_when_one_can_be_found(app: Submissions) -> None:
    evaluation = send(app, b"\x00garbage\rMSH|^~\\&|PCC|SUNNY_SNF|HIO|SCHIO|2025||ADT^A01|LOST1|P|2.5.1\r")
    [answer] = evaluation.answers
    assert (answer.ack_code, answer.control_id, outcome(evaluation)) == ("AR", "LOST1", ("rejected", ["not_hl7"]))
    assert "MSA|AR|LOST1" in answer.ack and "|100^Segment sequence error^HL70357|E|" in answer.ack
    assert send(app, b"\x00\xff binary").answers[0].ack.split("\r")[1] == "MSA|AR|"


@pytest.mark.parametrize(("name", "transform", "recorded"), [
    ("LF", lambda t: t.replace("\r", "\n"), "segments ended by LF or CR LF: read as CR"),
    ("CR LF", lambda t: t.replace("\r", "\r\n"), "segments ended by LF or CR LF: read as CR"),
    ("BOM", lambda t: "\ufeff" + t, "UTF-8 byte order mark ignored"),
    ("trailing whitespace", lambda t: t.replace("\r", "  \r") + " \t\r\r", "whitespace around segments ignored"),
])
def test_terminators_a_bom_and_trailing_whitespace_are_accepted_and_recorded(
        app: Submissions, name: str, transform: Any, recorded: str) -> None:
    evaluation = send(app, transform(combined("A01", CIN)))
    assert outcome(evaluation) == ("credited", []), name
    assert [a.ack_code for a in evaluation.answers] == ["AA", "AA", "AA"]
    assert recorded in evaluation.submissions[0].facts["leniencies"]


# -- associated messages ------------------------------------------------------------------------------------------------
def test_an_associated_message_without_msh4_does_not_make_the_file_incomplete(app: Submissions) -> None:
    blank = "MSH|^~\\&|PCC|SUNNY_SNF^1234567890^NPI|"
    text = "\r".join([adt("A01", CIN), oru(CIN).replace(blank, "MSH|^~\\&|PCC||"), rde(CIN)])
    evaluation = send(app, text, senders=frozenset({"SUNNY_SNF"}))  # bound as the ADT's sender is
    assert outcome(evaluation) == ("credited", [])
    oru_answer = evaluation.answers[1]
    assert oru_answer.ack_code == "AA" and "|MSH^1^4|101^Required field missing^HL70357|W|" in oru_answer.ack
    assert f"ORU^R01 MSH-10 {oru_answer.control_id}: MSH-4 missing: the ADT's sending facility stands" in \
        evaluation.submissions[0].facts["leniencies"]
    assert evaluation.submissions[0].facts["messages"][1]["problems"] == []
    adt_without = send(app, adt("A01", CIN, occurred="20251101070000").replace(blank, "MSH|^~\\&|PCC||"))
    assert adt_without.answers[0].ack_code != "AA"  # the ADT itself must name its sender


def test_a_credit_names_the_quarter_of_receipt_on_the_published_calendar(app: Submissions,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """DOMAIN.md A4: "Data-capture quarters: Jan–Mar, Apr–Jun, Jul–Sep, Oct–Dec (America/Los_Angeles). A submission
    belongs to the quarter in which the HIE received it." The months are the published calendar's: with quarters
    starting on the 2nd of Feb, May, Aug and Nov, a file received on November 1 belongs to the third quarter."""
    assert send(app, combined("A01", CIN)).submissions[0].credit["quarter"] == "2025Q4"  # the shipped calendar
    second_of = amended("2024.1", "2024-01-01", {"program.quarter_calendar.quarter_starts": ["02-02", "05-02", "08-02",
                                                                                           "11-02"]})
    monkeypatch.setattr(app, "rulebook", lambda: RuleBook.of([second_of]))
    [credited] = send(app, combined("A01", CIN, visit="V0002")).submissions
    assert (credited.verdict, credited.credit["quarter"]) == ("credited", "2025Q3")


def test_a_malformed_escape_sequence_never_puts_the_field_in_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    """python-hl7 logs the raw field (here a member id) when it meets an escape it cannot decode; loading our HL7
    reader silences those loggers, so no PHI reaches the logs."""
    import hl7
    import submissions.hl7files  # noqa: F401 - its import silences python-hl7's loggers

    message = hl7.parse("MSH|^~\\&|SNF|SNF|HIE|HIE|20251101||ADT^A01|1|P|2.5.1\rPID|1||9876\\Zq\\5432A^^^MEDI-CAL\r")
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})  # as uvicorn configures logging
    with caplog.at_level(logging.DEBUG):
        assert message.segment("PID").extract_field(1, 3, 1, 1, 1) == "98765432A"
    assert "9876" not in caplog.text and not caplog.records
