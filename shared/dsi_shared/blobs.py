"""Bulk data (HL7 files, clinical documents, feeds) stored once, content-addressed by SHA-256, beside a
service's event store and in the same database. Events carry the hash, never the bytes.

Rows are only ever inserted (a second put of the same hash changes nothing) — except that a key rotation
re-encrypts a row's bytes under the new key (`reencrypt`): its clear content, and so its hash, never change.
The bytes are kept in their own table, written with a plain INSERT, because multi-megabyte events stall the
PostgreSQL event recorder's pipelined insert (psycopg pipeline mode; seen at 4 MB with eventsourcing 9.5.6 / psycopg 3.3).
"""

from __future__ import annotations

from dataclasses import dataclass

from eventsourcing.postgres import PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteProcessRecorder
from psycopg.sql import SQL, Identifier

from dsi_shared.cipher import PayloadCipher
from dsi_shared.store import DDL_LOCK, ServiceApplication


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
                cursor.execute(DDL_LOCK)
                cursor.execute(create)
        elif isinstance(self.recorder, SQLiteProcessRecorder):
            with self.recorder.datastore.transaction(commit=True) as cursor:
                cursor.execute(f'CREATE TABLE IF NOT EXISTS "{self.table}" ({columns}, data BLOB NOT NULL)')
        else:
            raise TypeError(f"no blob table for {type(self.recorder).__name__}")

    def put(self, blob: Blob) -> None:
        self.put_many([blob])

    def put_many(self, blobs: list[Blob], *, flushed_by_next_commit: bool = False) -> None:
        """Several blobs in one transaction (one commit for a group of files); a plain INSERT each, not psycopg's
        pipelined `executemany` (see above).

        `flushed_by_next_commit`: the caller commits again at once (the events naming these blobs) and answers only
        after that: on PostgreSQL this commit then does not wait for its own WAL flush (`synchronous_commit` off for
        this transaction only), since flushing the later commit flushes every earlier WAL record too. A crash in
        between loses at most blobs that no recorded event names yet (harmless: content-addressed, sent again)."""
        rows = [(b.sha256, b.size, b.content_type, b.key_id, b.data) for b in blobs]
        if not rows:
            return
        if isinstance(self.recorder, PostgresProcessRecorder):
            insert = SQL("INSERT INTO {0} (sha256, size, content_type, key_id, data) VALUES (%s, %s, %s, %s, %b) "
                         "ON CONFLICT (sha256) DO NOTHING").format(self._name)
            with self.recorder.datastore.transaction(commit=True) as cursor:
                if flushed_by_next_commit:
                    cursor.execute("SET LOCAL synchronous_commit TO OFF")
                for row in rows:
                    cursor.execute(insert, row)
        else:
            assert isinstance(self.recorder, SQLiteProcessRecorder)
            with self.recorder.datastore.transaction(commit=True) as cursor:
                cursor.executemany(f'INSERT OR IGNORE INTO "{self.table}" (sha256, size, content_type, key_id, data) '
                                   "VALUES (?, ?, ?, ?, ?)", rows)

    def reencrypt(self, cipher: PayloadCipher, batch: int = 100) -> int:
        """Re-encrypt every blob encrypted under an older key with the current one; how many were."""
        done = 0
        while True:
            rows = self._rows_to_rotate(cipher.key_id, batch)
            if not rows:
                return done
            for key, old_key_id, data in rows:
                aad = key.split(":", 1)[-1]  # `chunk:<hash>` and `<hash>` are both encrypted under the hash
                fresh = cipher.encrypt(cipher.decrypt(data, aad, old_key_id), aad)
                self._replace(key, old_key_id, cipher.key_id, fresh)
                done += 1

    def _rows_to_rotate(self, current: str, batch: int) -> list[tuple[str, str, bytes]]:
        if isinstance(self.recorder, PostgresProcessRecorder):
            query = SQL("SELECT sha256, key_id, data FROM {0} WHERE key_id <> '' AND key_id <> %s LIMIT %s").format(self._name)
            with self.recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(query, (current, batch), binary=True)
                rows = cursor.fetchall()
        else:
            assert isinstance(self.recorder, SQLiteProcessRecorder)
            with self.recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(f'SELECT sha256, key_id, data FROM "{self.table}" WHERE key_id <> \'\' AND key_id <> ? '
                               "LIMIT ?", (current, batch))
                rows = cursor.fetchall()
        found = [list(r.values()) if isinstance(r, dict) else list(r) for r in rows]
        return [(str(r[0]), str(r[1]), bytes(r[2])) for r in found]

    def _replace(self, key: str, old_key_id: str, new_key_id: str, data: bytes) -> None:
        if isinstance(self.recorder, PostgresProcessRecorder):
            update = SQL("UPDATE {0} SET data = %b, key_id = %s WHERE sha256 = %s AND key_id = %s").format(self._name)
            with self.recorder.datastore.transaction(commit=True) as cursor:
                cursor.execute(update, (data, new_key_id, key, old_key_id))
        else:
            assert isinstance(self.recorder, SQLiteProcessRecorder)
            with self.recorder.datastore.transaction(commit=True) as cursor:
                cursor.execute(f'UPDATE "{self.table}" SET data = ?, key_id = ? WHERE sha256 = ? AND key_id = ?',
                               (data, new_key_id, key, old_key_id))

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
