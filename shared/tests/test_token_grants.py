"""`DSI_TOKENS` sender scopes and the `+backdate` flag (issue 12 §1): one parser, safe defaults."""

from __future__ import annotations

from datetime import timedelta

import pytest
from dsi_shared.config import TokenGrant, hie_max_delay, parse_grants, parse_tokens
from dsi_shared.http import Auth


def test_a_token_carries_the_senders_it_may_submit_for_and_whether_it_may_backdate() -> None:
    grants = parse_grants("a:hie@SUNNY_SNF|1234567893, b:hie@*+backdate, c:hie, d:program-staff, e:auditor,"
                          "f:program-staff@SUNNY_SNF, g:hie+backdate")
    assert grants["a"] == TokenGrant("hie", frozenset({"SUNNY_SNF", "1234567893"}), backdate=False)
    assert grants["b"] == TokenGrant("hie", None, backdate=True)
    assert grants["c"] == TokenGrant("hie", frozenset())  # an hie token without scope may submit for nothing
    assert grants["d"].senders is None and not grants["d"].backdate  # staff: any sender, the server's clock
    assert grants["f"].senders == frozenset({"SUNNY_SNF"})
    assert grants["g"] == TokenGrant("hie", frozenset(), backdate=True)
    assert parse_tokens("a:hie@SUNNY_SNF+backdate,x:y:auditor") == {"a": "hie", "x:y": "auditor"}
    assert grants["a"].may_submit_for({"SUNNY_SNF", "OTHER"}) and not grants["a"].may_submit_for({"OTHER"})
    assert grants["b"].may_submit_for(set()) and not grants["c"].may_submit_for({"SUNNY_SNF"})


@pytest.mark.parametrize("raw", ["a:admin", "a:hie@", "a:hie+forever", "a:auditor@SUNNY_SNF", "a:ops+backdate",
                                 ":hie@*"])
def test_a_malformed_entry_is_a_configuration_error(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_grants(raw)


def test_auth_takes_grants_or_plain_roles() -> None:
    auth = Auth({"plain-hie": "hie", "staff": "program-staff", "scoped": TokenGrant("hie", frozenset({"X"}), True)})
    assert auth.role_of("scoped") == "hie" and auth.role_of("nobody") is None
    assert auth.grant_of("plain-hie") == TokenGrant("hie", frozenset())
    assert auth.grant_of("staff") == TokenGrant("program-staff", None)


def test_the_hie_delay_defaults_to_72_hours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSI_HIE_MAX_DELAY_HOURS", raising=False)
    assert hie_max_delay() == timedelta(hours=72)
    monkeypatch.setenv("DSI_HIE_MAX_DELAY_HOURS", "24")
    assert hie_max_delay() == timedelta(hours=24)
    monkeypatch.setenv("DSI_HIE_MAX_DELAY_HOURS", "-1")
    with pytest.raises(ValueError):
        hie_max_delay()
