"""Who may send over MLLP (issue 12 §1): "The listener must only accept known HIE peers: TLS with client certificates
(mTLS ...) and/or an allowlist of peer addresses per HIE; a peer is bound to the sending facilities it may speak for,
and a file for another facility gets AR (204-style unknown key) and is recorded." """

from __future__ import annotations

import asyncio
import base64
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dsi_shared.devpki import issue, write
from dsi_shared.natsserver import free_port
from submissions.application import Submissions
from submissions.domain import Submission
from submissions.mllp import MllpListener, Peers, tls_context

from tests.harness import mllp_exchange
from tests.hl7_corpus import adt


@pytest.fixture(autouse=True)
def payload_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSI_PAYLOAD_KEY", base64.b64encode(os.urandom(32)).decode())  # payloads are stored encrypted


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca_cert, ca_key = issue("DSI test CA", ca=True)
    ca = (ca_cert.subject, ca_key)
    files = {"ca": write(tmp_path / "ca", ca_cert, ca_key)[0]}
    files["server.crt"], files["server.key"] = write(tmp_path / "server", *issue("mllp.test", ca, loopback=True))
    files["hie-a.crt"], files["hie-a.key"] = write(tmp_path / "hie-a", *issue("hie-a", ca))
    files["stranger.crt"], files["stranger.key"] = write(tmp_path / "stranger", *issue("stranger", ca))
    other_ca = issue("Another CA", ca=True)
    rogue = issue("hie-a", (other_ca[0].subject, other_ca[1]))  # the right name, from a CA we do not trust
    files["rogue.crt"], files["rogue.key"] = write(tmp_path / "rogue", *rogue)
    return files


async def _listening(app: Submissions, **kwargs: object) -> AsyncIterator[MllpListener]:
    server = MllpListener(app, free_port(), from_environment=False, **kwargs)  # type: ignore[arg-type]
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.listening.wait(), 10)
    yield server
    server.stopping.set()
    await asyncio.wait_for(task, 10)


def _client(pki: dict[str, Path], who: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki["ca"]))
    if who is not None:
        context.load_cert_chain(str(pki[f"{who}.crt"]), str(pki[f"{who}.key"]))
    return context


async def _send(port: int, frame: str, context: ssl.SSLContext | None) -> bytes:
    return await mllp_exchange(port, frame.encode(), context)


def _reasons(app: Submissions) -> list[list[str]]:
    return [app.submission(i).reasons for i in app.ids_created_with(Submission.SubmissionReceived)]  # type: ignore[attr-defined]


async def test_over_mutual_tls_only_a_known_peer_is_heard_and_only_for_its_own_facilities(
        tmp_path: Path, pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    app = Submissions(f"sqlite:///{tmp_path / 'submissions.db'}")
    monkeypatch.setenv("DSI_MLLP_TLS_CERT", str(pki["server.crt"]))
    monkeypatch.setenv("DSI_MLLP_TLS_KEY", str(pki["server.key"]))
    monkeypatch.setenv("DSI_MLLP_TLS_CLIENT_CA", str(pki["ca"]))
    try:
        async for server in _listening(app, tls=tls_context(), peers=Peers.parse("hie-a@SUNNY_SNF")):
            own = await _send(server.port, adt("A01", "91000000A", control_id="OWN1"), _client(pki, "hie-a"))
            other = await _send(server.port, adt("A01", "91000000A", facility="OTHER_SNF", control_id="OTHER1"),
                                _client(pki, "hie-a"))
            assert b"MSA|AR|OTHER1" in other and b"204^" in other  # AR, unknown key: not its facility
            # its own facility is heard: unknown to this store (AR 204 since issue 13), not "not bound"
            assert b"MSA|AR|OWN1" in own and b"unknown sending facility" in own and b"not bound" not in own
            assert await _send(server.port, adt("A01", "91000000A"), _client(pki, None)) == b""  # no certificate
            assert await _send(server.port, adt("A01", "91000000A"), _client(pki, "rogue")) == b""  # untrusted CA
            assert await _send(server.port, adt("A01", "91000000A"), _client(pki, "stranger")) == b""  # not a peer
            assert await _send(server.port, adt("A01", "91000000A"), None) == b""  # plain text
        reasons = _reasons(app)
        assert ["sender_not_bound_to_token"] in reasons and len(reasons) == 2  # refused peers recorded nothing
        facts = [app.submission(i).facts for i in app.ids_created_with(Submission.SubmissionReceived)]  # type: ignore[attr-defined]
        assert {f.get("mllp_peer") for f in facts} == {"hie-a"}
    finally:
        app.close()


async def test_without_tls_an_address_allowlist_refuses_other_peers(tmp_path: Path) -> None:
    app = Submissions(f"sqlite:///{tmp_path / 'submissions.db'}")
    try:
        async for server in _listening(app, peers=Peers.parse("10.9.9.9@*")):
            assert await _send(server.port, adt("A01", "91000000A"), None) == b""  # 127.0.0.1 is not listed
        async for server in _listening(app, peers=Peers.parse("127.0.0.1@SUNNY_SNF")):
            heard = await _send(server.port, adt("A01", "91000000A", facility="OTHER_SNF", control_id="X1"), None)
            assert b"MSA|AR|X1" in heard and b"204^" in heard
        assert _reasons(app) == [["sender_not_bound_to_token"]]
    finally:
        app.close()


def test_the_peer_list_is_checked_when_it_is_read() -> None:
    assert Peers.parse("") is None
    assert Peers.parse("hie-a@SUNNY_SNF|1234567893, 10.0.0.5@*") == Peers(
        {"hie-a": frozenset({"SUNNY_SNF", "1234567893"}), "10.0.0.5": None})
    for bad in ("hie-a", "@SUNNY_SNF", "hie-a@"):
        with pytest.raises(ValueError):
            Peers.parse(bad)
