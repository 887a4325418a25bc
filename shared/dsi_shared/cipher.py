"""Encryption at rest for stored PHI bytes (HL7 payloads, feed files, delivery files): AES-256-GCM with the
content's SHA-256 as associated data, so a ciphertext cannot be swapped under another hash.

Keys come from `DSI_PAYLOAD_KEY` (base64 of 32 bytes: encrypts from now on) and `DSI_PAYLOAD_OLD_KEYS` (comma-
separated: still decrypts what they encrypted). Each stored blob keeps its key's fingerprint (`key_id`), so a
rotation is: new key in, old key moved to the old list, `dsi ops reencrypt`, old key retired."""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class PayloadKeyMissing(RuntimeError):
    pass


def _key(raw: str) -> bytes:
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise PayloadKeyMissing("DSI_PAYLOAD_KEY (and each of DSI_PAYLOAD_OLD_KEYS) must be the base64 of 32 random "
                                "bytes (make run generates one)")
    return key


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


class PayloadCipher:
    def __init__(self, key_b64: str | None = None, old_keys_b64: str | None = None) -> None:
        current = _key(key_b64 if key_b64 is not None else os.environ.get("DSI_PAYLOAD_KEY", ""))
        old = old_keys_b64 if old_keys_b64 is not None else os.environ.get("DSI_PAYLOAD_OLD_KEYS", "")
        self.key_id = key_id(current)
        self._aeads = {key_id(k): AESGCM(k) for k in [*(_key(r) for r in old.split(",") if r.strip()), current]}

    def encrypt(self, data: bytes, sha256: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aeads[self.key_id].encrypt(nonce, data, sha256.encode())

    def decrypt(self, ciphertext: bytes, sha256: str, key_id: str | None = None) -> bytes:
        """Decrypt with the key that encrypted it (`key_id` as stored; the current key when not given)."""
        aead = self._aeads.get(key_id or self.key_id)
        if aead is None:
            raise PayloadKeyMissing(f"no key {key_id} in DSI_PAYLOAD_KEY or DSI_PAYLOAD_OLD_KEYS: it encrypted this blob")
        return aead.decrypt(ciphertext[:12], ciphertext[12:], sha256.encode())


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
