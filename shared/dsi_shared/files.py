"""Large files (feeds of millions of rows, delivery outputs) stored once, content-addressed by the SHA-256 of the
whole file, written and read as a stream: never held in memory whole.

A file is a list of chunks, each encrypted (`dsi_shared.cipher`) and kept in the service's blob table under
`chunk:<sha256 of its clear bytes>`; the list itself is kept under `file:<sha256 of the file>`. Storing the same
bytes again stores nothing new.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

from dsi_shared.blobs import Blob, BlobStore
from dsi_shared.cipher import PayloadCipher

CHUNK_BYTES = 4 * 1024 * 1024
FILE_LIST_TYPE = "application/vnd.dsi.chunked-file+json"


class MissingFile(LookupError):
    pass


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int
    content_type: str
    chunks: tuple[str, ...]


class FileStore:
    def __init__(self, blobs: BlobStore, cipher: PayloadCipher) -> None:
        self.blobs, self.cipher = blobs, cipher

    def writer(self, content_type: str) -> FileWriter:
        return FileWriter(self, content_type)

    def put(self, data: bytes, content_type: str) -> StoredFile:
        writer = self.writer(content_type)
        writer.write(data)
        return writer.close()

    def stat(self, sha256: str) -> StoredFile | None:
        blob = self.blobs.get(f"file:{sha256}")
        if blob is None:
            return None
        listing = json.loads(blob.data)
        return StoredFile(sha256, blob.size, blob.content_type, tuple(listing["chunks"]))

    def chunks(self, sha256: str) -> Iterator[bytes]:
        """The file's clear bytes, chunk by chunk (each checked against its hash)."""
        stored = self.stat(sha256)
        if stored is None:
            raise MissingFile(f"file {sha256[:12]} is not in the file store")
        for chunk_hash in stored.chunks:
            blob = self.blobs.get(f"chunk:{chunk_hash}")
            if blob is None:
                raise MissingFile(f"chunk {chunk_hash[:12]} of file {sha256[:12]} is missing")
            data = self.cipher.decrypt(blob.data, chunk_hash, blob.key_id) if blob.key_id else blob.data
            if hashlib.sha256(data).hexdigest() != chunk_hash:
                raise MissingFile(f"chunk {chunk_hash[:12]} of file {sha256[:12]} does not match its hash")
            yield data

    def open(self, sha256: str) -> io.BufferedReader:
        """A binary stream over the file (decrypting one chunk at a time)."""
        return io.BufferedReader(_ChunkStream(self.chunks(sha256)), buffer_size=1024 * 1024)

    def read(self, sha256: str) -> bytes:
        return b"".join(self.chunks(sha256))


class FileWriter:
    """Feed it bytes in any pieces; full chunks are encrypted and stored as they fill; `close` stores the list."""

    def __init__(self, store: FileStore, content_type: str) -> None:
        self.store, self.content_type = store, content_type
        self.digest = hashlib.sha256()
        self.size = 0
        self.buffer = bytearray()
        self.chunk_hashes: list[str] = []

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.size += len(data)
        self.buffer += data
        while len(self.buffer) >= CHUNK_BYTES:
            self._store_chunk(bytes(self.buffer[:CHUNK_BYTES]))
            del self.buffer[:CHUNK_BYTES]

    def close(self) -> StoredFile:
        if self.buffer or not self.chunk_hashes:
            self._store_chunk(bytes(self.buffer))
            self.buffer.clear()
        sha256 = self.digest.hexdigest()
        listing = json.dumps({"chunks": self.chunk_hashes}, separators=(",", ":")).encode()
        self.store.blobs.put(Blob(f"file:{sha256}", self.size, self.content_type, "", listing))
        return StoredFile(sha256, self.size, self.content_type, tuple(self.chunk_hashes))

    def _store_chunk(self, data: bytes) -> None:
        chunk_hash = hashlib.sha256(data).hexdigest()
        self.chunk_hashes.append(chunk_hash)
        if not self.store.blobs.has(f"chunk:{chunk_hash}"):
            self.store.blobs.put(Blob(f"chunk:{chunk_hash}", len(data), "application/octet-stream",
                                      self.store.cipher.key_id, self.store.cipher.encrypt(data, chunk_hash)))


class _ChunkStream(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._pending = chunks, memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        size = min(len(target), len(self._pending))
        target[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size
