"""Bulk data (HL7 files, clinical documents, feeds) stored once, content-addressed by SHA-256, beside a
service's event store and in the same database. Events carry the hash, never the bytes.

Rows are only ever inserted (a second put of the same hash changes nothing). The bytes are kept in their own
table, written with a plain INSERT, because multi-megabyte events stall the PostgreSQL event recorder's
pipelined insert (psycopg pipeline mode; seen at 4 MB with eventsourcing 9.5.6 / psycopg 3.3).
"""

from __future__ import annotations

from dataclasses import dataclass

from eventsourcing.postgres import PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteProcessRecorder
from psycopg.sql import SQL, Identifier

from dsi_shared.store import ServiceApplication


@dataclass(frozen=True)
class Blob:
    sha256: str
    size: int
    content_type: str
    key_id: str  # which key encrypted `data` ("" when stored in clear)
    data: bytes


class BlobStore:
    def __init__(self, app: ServiceApplication) -> None:
        self.recorder = app.process_recorder
        self.table = f"{app.name.lower()}_blobs"
        columns = "sha256 TEXT PRIMARY KEY, size BIGINT NOT NULL, content_type TEXT NOT NULL, key_id TEXT NOT NULL"
        if isinstance(self.recorder, PostgresProcessRecorder):
            schema = self.recorder.datastore.schema
            self._name = SQL("{0}.{1}").format(Identifier(schema), Identifier(self.table))
            create = SQL("CREATE TABLE IF NOT EXISTS {0} (" + columns + ", data BYTEA NOT NULL)").format(self._name)
            with self.recorder.datastore.transaction(commit=True) as cursor:
                cursor.execute(create)
        elif isinstance(self.recorder, SQLiteProcessRecorder):
            with self.recorder.datastore.transaction(commit=True) as cursor:
                cursor.execute(f'CREATE TABLE IF NOT EXISTS "{self.table}" ({columns}, data BLOB NOT NULL)')
        else:
            raise TypeError(f"no blob table for {type(self.recorder).__name__}")

    def put(self, blob: Blob) -> None:
        row = (blob.sha256, blob.size, blob.content_type, blob.key_id, blob.data)
        if isinstance(self.recorder, PostgresProcessRecorder):
            insert = SQL("INSERT INTO {0} (sha256, size, content_type, key_id, data) VALUES (%s, %s, %s, %s, %b) "
                         "ON CONFLICT (sha256) DO NOTHING").format(self._name)
            with self.recorder.datastore.transaction(commit=True) as cursor:
                cursor.execute(insert, row)
        else:
            assert isinstance(self.recorder, SQLiteProcessRecorder)
            with self.recorder.datastore.transaction(commit=True) as cursor:
                cursor.execute(f'INSERT OR IGNORE INTO "{self.table}" (sha256, size, content_type, key_id, data) '
                               "VALUES (?, ?, ?, ?, ?)", row)

    def has(self, sha256: str) -> bool:
        if isinstance(self.recorder, PostgresProcessRecorder):
            with self.recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(SQL("SELECT 1 FROM {0} WHERE sha256 = %s").format(self._name), (sha256,))
                return cursor.fetchone() is not None
        assert isinstance(self.recorder, SQLiteProcessRecorder)
        with self.recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(f'SELECT 1 FROM "{self.table}" WHERE sha256 = ?', (sha256,))
            return cursor.fetchone() is not None

    def get(self, sha256: str) -> Blob | None:
        if isinstance(self.recorder, PostgresProcessRecorder):
            select = SQL("SELECT sha256, size, content_type, key_id, data FROM {0} WHERE sha256 = %s").format(self._name)
            with self.recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(select, (sha256,), binary=True)  # bytea as bytes, not hex text: half the memory
                row = cursor.fetchone()
        else:
            assert isinstance(self.recorder, SQLiteProcessRecorder)
            with self.recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(f'SELECT sha256, size, content_type, key_id, data FROM "{self.table}" WHERE sha256 = ?',
                               (sha256,))
                row = cursor.fetchone()
        if row is None:
            return None
        values = list(row.values()) if isinstance(row, dict) else list(row)
        return Blob(str(values[0]), int(values[1]), str(values[2]), str(values[3]), bytes(values[4]))
