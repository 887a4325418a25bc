"""Rotating the payload key (README runbook): blobs written under the old key stay readable once it moves to
DSI_PAYLOAD_OLD_KEYS, `dsi ops reencrypt` moves every blob to the new key, and then the old key can go — on
SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dsi_shared.blobs import BlobStore
from dsi_shared.cipher import PayloadCipher, PayloadKeyMissing
from dsi_shared.files import FileStore
from qip_share.application import QipShare

pytestmark = pytest.mark.integration


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_a_key_rotation_keeps_every_blob_readable_and_retires_the_old_key(
        store_kind: str, store_url_for: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = key(), key()
    store = store_url_for("qip-share")
    app = QipShare(store)
    written = FileStore(BlobStore(app), PayloadCipher(old, "")).put(b"cin,birth_date\n" * 1000, "text/csv")
    app.close()

    monkeypatch.setenv("DSI_PAYLOAD_KEY", new)
    monkeypatch.setenv("DSI_PAYLOAD_OLD_KEYS", old)
    app = QipShare(store)
    assert app.files.read(written.sha256) == b"cin,birth_date\n" * 1000  # the old key still decrypts
    app.close()
    rotated = subprocess.run([sys.executable, "-m", "dsi_shared.cli", "ops", "reencrypt", "--service", "qip-share"],
                             env={**os.environ, "QIP_SHARE_STORE": store, "DSI_VAR_DIR": str(tmp_path)},
                             capture_output=True, text=True, timeout=60)
    assert rotated.returncode == 0 and "qip-share: 1 blob(s) re-encrypted" in rotated.stdout, rotated.stderr

    app = QipShare(store)
    only_new = FileStore(BlobStore(app), PayloadCipher(new, ""))
    assert only_new.read(written.sha256) == b"cin,birth_date\n" * 1000  # readable without the old key now
    assert BlobStore(app).reencrypt(PayloadCipher(new, "")) == 0
    with pytest.raises(PayloadKeyMissing):
        FileStore(BlobStore(app), PayloadCipher(old, "")).read(written.sha256)  # and the old key no longer opens it
    app.close()
