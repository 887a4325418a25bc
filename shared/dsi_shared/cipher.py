"""Encryption at rest for stored PHI bytes (HL7 payloads, feed files, delivery files): AES-256-GCM with the
content's SHA-256 as associated data, so a ciphertext cannot be swapped under another hash. The key comes from
`DSI_PAYLOAD_KEY` (base64 of 32 bytes); its fingerprint is stored with each blob so a rotated key can still be
matched to what it encrypted."""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class PayloadKeyMissing(RuntimeError):
    pass


class PayloadCipher:
    def __init__(self, key_b64: str | None = None) -> None:
        raw = key_b64 if key_b64 is not None else os.environ.get("DSI_PAYLOAD_KEY", "")
        try:
            key = base64.b64decode(raw, validate=True)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise PayloadKeyMissing("DSI_PAYLOAD_KEY must be the base64 of 32 random bytes (make run generates one)")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:16]

    def encrypt(self, data: bytes, sha256: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data, sha256.encode())

    def decrypt(self, ciphertext: bytes, sha256: str) -> bytes:
        return self._aead.decrypt(ciphertext[:12], ciphertext[12:], sha256.encode())


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
