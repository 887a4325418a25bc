"""HL7 v2 facts, completeness, timeliness (72 h real time, DST, leap day) and ACKs, as pure rules (DOMAIN.md A3)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from uuid import uuid4

import hl7
import pytest
from dsi_shared.rulebook import PerQualifyingFile, RuleBook
from submissions.ack import build_ack
from submissions.domain import CREDITED, RECORDED, MemberFacts, ParticipantFacts, completeness, judge_snf_file
from submissions.domain import is_timely as timely_under
from submissions.hl7files import NotHL7, combined_files, parse_message, split_messages
from submissions.hl7time import BadTimestamp, parse_ts

from tests.hl7_corpus import adt, batch, combined, oru, rde
from tests.rulesdoc import amended, book

BOOK = book()
SNF_RULE = BOOK.latest.provider_types["skilled_nursing"].earning_rule  # type: ignore[union-attr]
assert isinstance(SNF_RULE, PerQualifyingFile)


def is_timely(event_time: datetime, received_at: datetime) -> bool:
    return timely_under(event_time, received_at, SNF_RULE)  # type: ignore[arg-type]


def problems_of(file: object) -> list[str]:
    return completeness(file.message_facts(), SNF_RULE)[0]  # type: ignore[attr-defined, arg-type]

CIN = "12345678A"
PDT, PST = timezone(timedelta(hours=-7)), timezone(timedelta(hours=-8))


def parse_all(text: str) -> list:  # type: ignore[type-arg]
    return [parse_message(i, m) for i, m in enumerate(split_messages(text))]


def test_timestamps_with_and_without_offset() -> None:
    assert parse_ts("20251101080000-0700") == datetime(2025, 11, 1, 8, tzinfo=PDT)
    assert parse_ts("20251101080000").utcoffset() == timedelta(hours=-7)  # local time, PDT
    assert parse_ts("20251201080000").utcoffset() == timedelta(hours=-8)  # local time, PST
    assert parse_ts("202511010800") == datetime(2025, 11, 1, 8, tzinfo=PDT)
    assert parse_ts("20240229120000") == datetime(2024, 2, 29, 12, tzinfo=PST)  # leap day
    for bad in ("20250229120000", "2025-11-01", "20251301", "20251101080000+2500", "x"):
        with pytest.raises(BadTimestamp):
            parse_ts(bad)


def test_dst_fall_back_and_spring_forward_wall_times() -> None:
    assert parse_ts("20251102013000").utcoffset() == timedelta(hours=-7)  # the first 01:30 of fall-back night
    assert parse_ts("20250309023000") == datetime(2025, 3, 9, 3, 30, tzinfo=PDT)  # 02:30 never happened


def test_72_hours_is_real_elapsed_time() -> None:
    event = datetime(2025, 11, 1, 8, tzinfo=UTC)
    assert is_timely(event, event + timedelta(hours=71, minutes=59))
    assert is_timely(event, event + timedelta(hours=72))
    assert not is_timely(event, event + timedelta(hours=72, minutes=1))
    # across spring-forward: 72 wall-clock hours are 71 real ones
    assert is_timely(parse_ts("20250308120000"), parse_ts("20250311120000"))
    # across fall-back: 71.5 wall-clock hours are 72.5 real ones
    assert not is_timely(parse_ts("20251101120000"), parse_ts("20251104113000"))
    # across a leap day
    assert is_timely(parse_ts("20240227090000"), parse_ts("20240301085900"))
    assert not is_timely(parse_ts("20240227090000"), parse_ts("20240301090100"))


def test_event_time_comes_from_evn6_then_pv1_then_evn2_never_msh7() -> None:
    [first] = parse_all(adt("A01", CIN, occurred="20251101080000", recorded="20251101090000"))
    assert (first.event_time, first.event_time_source) == (parse_ts("20251101080000"), "EVN-6")
    [second] = parse_all(adt("A01", CIN, occurred="20251101070000", recorded="20251101090000", evn_occurred=False))
    assert second.event_time_source == "PV1-44"
    [third] = parse_all(adt("A02", CIN, occurred="20251101070000", recorded="20251101090000", evn_occurred=False))
    assert (third.event_time, third.event_time_source) == (parse_ts("20251101090000"), "EVN-2")


def test_a_complete_combined_file() -> None:
    messages = parse_all(combined("A01", CIN))
    [file] = combined_files(messages)
    assert [m.kind for m in file.messages] == ["ADT^A01", "ORU^R01", "RDE^O11"]
    assert problems_of(file) == []
    assert (file.adt.cin, file.adt.visit, file.adt.sending_facility) == (CIN, "V0001", "SUNNY_SNF")  # type: ignore[union-attr]


def test_incomplete_files_name_the_segment_and_field() -> None:
    [file] = combined_files(parse_all("\r".join([adt("A01", CIN, visit=None), oru("87654321B")])))
    # no visit id is no longer a problem (issue 13: the event is keyed on the patient and its time)
    assert problems_of(file) == ["ORU^R01 MSH-10 " + file.messages[1].control_id + " is for another patient or visit"]
    no_cin = adt("A01", CIN).replace(f"{CIN}^^^CAMEDICAL^MA~", "")
    [file] = combined_files(parse_all(no_cin))
    assert problems_of(file) == ["PID-3 has no Medi-Cal CIN (identifier type MA)"]
    broken_rde = rde(CIN).replace("|00093505601^Metformin 500mg^NDC|500||mg", "||||")
    [file] = combined_files(parse_all("\r".join([adt("A01", CIN), broken_rde])))
    assert problems_of(file) == ["RDE^O11 RXE-2 missing", "RDE^O11 RXE-3 missing", "RDE^O11 RXE-5 missing"]


def test_batches_split_into_combined_files() -> None:
    text = batch(combined("A01", CIN), combined("A03", CIN, occurred="20251105080000"))
    files = combined_files(parse_all(text))
    assert [[m.kind for m in f.messages] for f in files] == [["ADT^A01", "ORU^R01", "RDE^O11"],
                                                             ["ADT^A03", "ORU^R01", "RDE^O11"]]


@pytest.mark.parametrize("text", ["", "hello world", "PID|1||x", "\x00\x01\x02binary"])
def test_what_is_not_hl7_is_refused_before_parsing(text: str) -> None:
    with pytest.raises(NotHL7):
        split_messages(text)


@pytest.mark.parametrize(("text", "fatal"), [
    ("MSH^~|&|PCC|X", "invalid MSH delimiters"),
    (adt("A01", CIN, version="3.0"), "unsupported HL7 version 3.0"),  # issue 13: the version is named
    ("MSH|", "no MSH segment"),
])
def test_unprocessable_messages_are_fatal(text: str, fatal: str) -> None:
    assert parse_message(0, text).fatal == fatal


def test_truncated_messages_report_problems_not_crashes() -> None:
    full = combined("A01", CIN)
    for cut in range(10, len(full), 37):
        try:
            messages = parse_all(full[:cut])
        except NotHL7:
            continue
        for file in combined_files(messages):
            assert isinstance(problems_of(file), list)


def facts(eligible_from: date = date(2025, 1, 1), eligible_to: date | None = None) -> tuple[MemberFacts, ParticipantFacts]:
    member = MemberFacts(CIN)
    member.note_span(start=eligible_from, end=eligible_to, version=2)
    participant = ParticipantFacts(uuid4())
    participant.note_registration(provider_type="skilled_nursing", npi="1234567890", sending_facilities=["SUNNY_SNF"])
    participant.note_eligibility(eligible=True, rule_version="2024.1")
    participant.note_milestone1(achieved_at=datetime(2024, 6, 1, tzinfo=UTC))
    return member, participant


def judged(event: str, received: str, rules: RuleBook = BOOK, messages: list[dict[str, object]] | None = None,
           event_type: str = "A01", **kwargs: object) -> list[str]:
    member, participant = facts(**kwargs)  # type: ignore[arg-type]
    return judge_snf_file(event_type=event_type, event_time=parse_ts(event), received_at=parse_ts(received),
                          messages=messages or [{"type": "ADT^A01", "problems": []}], member=member,
                          participant=participant, book=rules).reasons


def test_file_reasons_at_the_edges() -> None:
    assert judged("20251105080000", "20251108075900") == []  # 71:59
    assert judged("20251105080000", "20251108080100") == ["late"]  # 72:01
    assert judged("20251101080000", "20251104075900") == ["late"]  # 71:59 on the wall is 72:59 across fall-back
    assert judged("20251101080000", "20251101090000", eligible_to=date(2025, 10, 31)) == ["not_a_member"]
    assert judged("20250930230000", "20251001010000") == ["before_data_sharing_start"]
    member, participant = facts()
    participant.note_departure(effective_on=date(2025, 11, 1))
    assert judge_snf_file(event_type="A01", event_time=parse_ts("20251101080000"), received_at=parse_ts("20251101090000"),
                          messages=[{"type": "ADT^A01", "problems": ["PV1-19 missing"]}], member=member,
                          participant=participant, book=BOOK).reasons == ["incomplete:PV1-19 missing", "withdrawn"]


def test_each_file_is_judged_under_the_version_in_force_on_its_event_date() -> None:
    """"A rule is applied as of the date it concerns: an event's date for a file's timeliness and credit." A
    48-hour window effective 2025-11-10 makes a 60-hour file late from that day on, not before."""
    shorter = amended("2025.2", "2025-11-10", {"provider_types.skilled_nursing.earning_rule.timeliness_hours": 48})
    rules = book(shorter)
    assert judged("20251105080000", "20251107200000", rules) == []  # 60 h, before the change: the 72 h window
    assert judged("20251110080000", "20251112200000", rules) == ["late"]  # 60 h under the 48 h window
    member, participant = facts()
    credited = judge_snf_file(event_type="A01", event_time=parse_ts("20251110080000"),
                              received_at=parse_ts("20251110090000"), messages=[{"type": "ADT^A01", "problems": []}],
                              member=member, participant=participant, book=rules)
    assert (credited.verdict, credited.rule_version, str(credited.amount)) == (CREDITED, "2025.2", "400.00")


def test_the_amount_qualifying_events_and_a_forthcoming_rule_are_the_versions_data() -> None:
    """"a type whose rule is 'forthcoming' earns nothing until a published version gives it one of these kinds
    with its parameters: no code change, no redeploy" — and the $400 is the rule's `amount`."""
    rule = "provider_types.skilled_nursing.earning_rule"
    richer = amended("2026.1", "2025-12-01", {f"{rule}.amount": "500.00",
                                              f"{rule}.qualifying_events": ["A01", "A02", "A03", "A04"]})
    member, participant = facts()
    december = judge_snf_file(event_type="A04", event_time=parse_ts("20251202080000"), received_at=parse_ts("20251202090000"),
                              messages=[{"type": "ADT^A04", "problems": []}], member=member, participant=participant,
                              book=book(richer))
    assert (december.verdict, str(december.amount)) == (CREDITED, "500.00")
    assert judged("20251202080000", "20251202090000", event_type="A04") == ["not_a_qualifying_event:A04"]
    participant.note_registration(provider_type="specialist", npi="1234567890", sending_facilities=["SUNNY_SNF"])
    forthcoming = judge_snf_file(event_type="A01", event_time=parse_ts("20251202080000"),
                                 received_at=parse_ts("20251202090000"), messages=[{"type": "ADT^A01", "problems": []}],
                                 member=member, participant=participant, book=BOOK)
    assert (forthcoming.verdict, forthcoming.reasons) == (RECORDED, ["earning_rule_forthcoming"])
    specialists = amended("2026.2", "2025-12-01", {"provider_types.specialist.earning_rule": packaged_rule()})
    assert judge_snf_file(event_type="A01", event_time=parse_ts("20251202080000"), received_at=parse_ts("20251202090000"),
                          messages=[{"type": "ADT^A01", "problems": []}], member=member, participant=participant,
                          book=book(specialists)).verdict == CREDITED


def packaged_rule() -> dict[str, object]:
    return SNF_RULE.model_dump(mode="json")  # type: ignore[union-attr]


def test_rde_o01_counts_like_rde_o11_and_another_kind_is_recorded_and_ignored() -> None:
    """"pharmacy orders (RDE^O11; RDE^O01 from HL7 2.3 senders is the same order)" and "A message of another kind
    in the file is recorded and ignored; it does not make the file incomplete." """
    text = combined("A01", CIN).replace("RDE^O11", "RDE^O01")
    [file] = combined_files(parse_all(text + "\r" + adt("A08", CIN).replace("ADT^A08", "SIU^S12")))
    problems, ignored = completeness(file.message_facts(), SNF_RULE)  # type: ignore[arg-type]
    assert "RDE^O01" in [m["type"] for m in file.message_facts()]
    assert problems == [] and ignored == ["SIU^S12"]
    broken = text.replace("RXE|", "RXE||")
    [file] = combined_files(parse_all(broken))
    assert any(p.startswith("RDE^O01 RXE-") for p in completeness(file.message_facts(), SNF_RULE)[0])  # type: ignore[arg-type]


def test_acks() -> None:
    accepted = hl7.parse(build_ack("AA", "MSG1", "A01", "SUNNY_SNF"))
    assert str(accepted.segment("MSA")) == "MSA|AA|MSG1"
    error = build_ack("AE", "MSG2", "A01", problems=["PV1-19 missing", "a|b^c"])
    parsed = hl7.parse(error)
    assert [str(s[0]) for s in parsed] == ["MSH", "MSA", "ERR", "ERR"]
    assert "a\\F\\b\\S\\c" in error and str(parsed.segment("MSA")[1]) == "AE"


def test_a_far_off_or_unicode_timestamp_is_a_data_type_error_naming_the_field() -> None:
    """Issue 12 §4: EVN-6 `99991231235959-1400` overflowed on conversion to UTC (a 500, a closed MLLP connection,
    a dead letter). Out of the plan's years, or not ASCII digits: BadTimestamp, AE with ERR 102 on EVN-6."""
    for bad in ("99991231235959-1400", "00010101000000+1400", "19991231235959", "２０２５1101080000"):
        with pytest.raises(BadTimestamp):
            parse_ts(bad)
    assert parse_ts("21001231235959-1400").year == 2100
    message = parse_message(0, adt("A01", "12345678A", occurred="99991231235959-1400", control_id="FAR1"))
    assert (message.event_time, message.problems) == (None, ["EVN-6 malformed"])
    ack = build_ack("AE", "FAR1", "A01", "SUNNY_SNF", message.problems).split("\r")
    assert "MSA|AE|FAR1" in ack and "ERR||EVN^1^6|102^Data type error^HL70357|E||||EVN-6 malformed" in ack
