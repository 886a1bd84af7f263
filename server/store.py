"""Durable server state in one SQLite database (no gRPC here).

What is stored, and why a ``kill -9`` at any moment loses nothing that was acknowledged:

* ``models`` — every global version (digest of the exact model, digest of what the downlink
  delivers), with the exact weights of the newest ``keep_model_blobs`` versions;
* ``downlink`` — the downlink stream (``DownlinkEncoder.state()``: its grid, the model
  clients reconstruct, the coded deltas of the last versions), so a restarted server goes
  on sending deltas, bit for bit the same;
* ``rounds`` — the open round (base version, coding parameters, deadline) and the history;
* ``selections`` — who was selected for the open round;
* ``updates`` — every accepted update: the bytes (while its round is open), their SHA-256,
  the client's idempotency key; committed (fsync) *before* the client is told; updates that
  arrive together share one transaction (group commit);
* ``clients`` — the client registry (first/last seen, updates accepted).

The aggregate itself is not stored: :meth:`Store.iter_updates` gives the open round's
updates one at a time in client-id order, and the round logic decodes and accumulates
them at the round's end, so the new model is the same however often the server restarted
(and memory stays O(model)).  A round ends in one transaction (:meth:`Store.finish_round`):
new model, new downlink state, the round's history, the next round, payloads dropped.

The database runs in WAL mode with ``synchronous=FULL``: a committed transaction survives
a crash of the process or the machine.  A :class:`Store` is not thread-safe; the server
uses it from one thread.
"""

from __future__ import annotations

import io
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedcodec.pipeline import ClientRoundStats, ModelSpec, ModelVersion, RoundParams, RoundStats

__all__ = [
    "SCHEMA_VERSION",
    "DownlinkState",
    "RoundRecord",
    "Store",
    "StoreError",
    "UpdateRecord",
]

SCHEMA_VERSION = 2
# numpy's stubs read **kwargs as its keyword options; the arrays are plain names here.
_savez: Callable[..., None] = np.savez

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    version INTEGER PRIMARY KEY,
    digest TEXT NOT NULL,           -- model_digest of the exact global model
    stream_digest TEXT NOT NULL,    -- model_digest of what the downlink delivers
    round_id INTEGER,               -- the round that made it (NULL for version 0)
    created_at REAL NOT NULL,
    weights BLOB                    -- float32 LE in spec order; NULL once pruned
);
CREATE TABLE IF NOT EXISTS rounds (
    round_id INTEGER PRIMARY KEY,
    base_version INTEGER NOT NULL,
    params TEXT NOT NULL,           -- RoundParams JSON
    state TEXT NOT NULL CHECK (state IN ('open', 'finalized')),
    opened_at REAL NOT NULL,
    deadline REAL NOT NULL,
    window INTEGER NOT NULL,        -- selection window, +1 per deadline extension
    closed_at REAL,
    new_version INTEGER,
    stats TEXT                      -- RoundStats JSON
);
CREATE TABLE IF NOT EXISTS selections (
    round_id INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    window INTEGER NOT NULL,
    selected_at REAL NOT NULL,
    PRIMARY KEY (round_id, client_id)
);
CREATE TABLE IF NOT EXISTS updates (
    round_id INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    base_version INTEGER NOT NULL,
    base_digest TEXT NOT NULL,
    num_examples INTEGER NOT NULL,
    size INTEGER NOT NULL,
    crc32 INTEGER NOT NULL,
    sha256 BLOB NOT NULL,
    received_at REAL NOT NULL,
    payload BLOB,                   -- NULL once the round is finalized
    PRIMARY KEY (round_id, client_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS updates_by_key ON updates (client_id, idempotency_key);
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    updates_accepted INTEGER NOT NULL DEFAULT 0,
    last_round INTEGER
);
CREATE TABLE IF NOT EXISTS client_references (
    client_id TEXT PRIMARY KEY,
    stored_at REAL NOT NULL,        -- the round that stored it closed then (LRU order)
    reference BLOB NOT NULL         -- ClientReferences.to_bytes(): deflated float32
);
CREATE TABLE IF NOT EXISTS downlink (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    meta TEXT NOT NULL,             -- DownlinkEncoder.state() metadata (JSON)
    arrays BLOB NOT NULL            -- DownlinkEncoder.state() arrays (.npz, no pickle)
);
"""


class StoreError(RuntimeError):
    """The database is of another schema or model, or its contents are inconsistent."""


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


def _check_location(path: str, replace_unusable: bool) -> str | None:
    """Refuse a missing or read-only directory and an empty or foreign file, in one line.

    With ``replace_unusable`` an empty, truncated or non-SQLite file (and its WAL) is moved
    aside to ``<path>.unusable-<unix time>`` so that a new federation can start.
    """
    file = Path(path)
    parent = file.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the directory of the state database {path!r}: "
            f"{exc.strerror or exc} ({str(parent)!r})"
        ) from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(
            f"the directory of the state database {path!r} is not writable "
            "(the database and its write-ahead log live there)"
        )
    if not file.exists():
        return None
    if not file.is_file():
        raise StoreError(f"the state database {path!r} is not a regular file")
    if not os.access(file, os.R_OK | os.W_OK):
        raise StoreError(f"the state database {path!r} is not readable and writable")
    try:
        with file.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise StoreError(f"cannot read the state database {path!r}: {exc}") from exc
    problem = ""
    if not head:
        problem = "it is empty (0 bytes)"
    elif head != _SQLITE_MAGIC:
        problem = "it is not an SQLite database (truncated or overwritten?)"
    if not problem:
        return None
    if not replace_unusable:
        raise StoreError(
            f"refusing to start: the state database {path!r} is unusable: {problem}; "
            "restore it from a backup, or start a new federation with --new-federation "
            "(the file is then moved aside)"
        )
    return move_aside(path)


def move_aside(path: str) -> str:
    """Rename an unusable state database (and its WAL/SHM files) out of the way.

    Returns
    -------
    str
        The new name of the database file.
    """
    stamp = int(time.time())
    target = f"{path}.unusable-{stamp}"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, target + suffix)
    return target


@dataclass(frozen=True)
class RoundRecord:
    """One round as stored.

    Attributes
    ----------
    round_id : int
        Counting from 1.
    base_version : int
        The version its updates are computed against.
    params : RoundParams
        Uplink coding parameters of the round.
    state : {"open", "finalized"}
        Whether it still takes updates.
    opened_at, deadline : float
        Unix times.
    window : int
        Selection window (+1 per deadline extension).
    """

    round_id: int
    base_version: int
    params: RoundParams
    state: str
    opened_at: float
    deadline: float
    window: int = 0


@dataclass(frozen=True)
class UpdateRecord:
    """An accepted update's metadata (the payload travels separately)."""

    round_id: int
    client_id: str
    idempotency_key: str
    base_version: int
    base_digest: str
    num_examples: int
    size: int
    crc32: int
    sha256: bytes
    received_at: float


#: ``DownlinkEncoder.state()``: (arrays, JSON-able metadata).
DownlinkState = tuple[dict[str, np.ndarray], dict[str, Any]]


def _state_blob(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    _savez(buffer, **{f"a{i}": a for i, a in enumerate(arrays.values())})
    return buffer.getvalue()


def _state_arrays(blob: bytes, names: list[str]) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        return {name: data[f"a{i}"] for i, name in enumerate(names)}


#: SQLite's default limit on one blob (SQLITE_MAX_LENGTH).
_MAX_BLOB = 1_000_000_000


def _weights_blob(spec: ModelSpec, tensors: dict[str, np.ndarray]) -> bytes:
    if spec.float32_bytes >= _MAX_BLOB:
        raise StoreError(
            f"the model has {spec.float32_bytes:,} bytes of float32 weights; the SQLite state "
            f"holds models below {_MAX_BLOB:,} bytes"
        )
    return b"".join(np.ascontiguousarray(tensors[n], dtype="<f4").tobytes() for n in spec.names)


def _weights(spec: ModelSpec, blob: bytes) -> dict[str, np.ndarray]:
    if len(blob) != spec.float32_bytes:
        raise StoreError(f"stored weights have {len(blob)} bytes, the model {spec.float32_bytes}")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for name, shape in spec:
        count = math.prod(shape)
        out[name] = (
            np.frombuffer(blob, dtype="<f4", count=count, offset=offset)
            .astype(np.float32)
            .reshape(shape)
        )
        offset += 4 * count
    return out


def round_stats_from_json(data: dict[str, Any]) -> RoundStats:
    """Inverse of :meth:`fedcodec.pipeline.RoundStats.to_json`."""
    updates = tuple(
        ClientRoundStats(
            client_id=str(u["client_id"]),
            bytes=int(u["bytes"]),
            num_examples=int(u["num_examples"]),
            steps=tuple(float(s) for s in u["steps"]),
            decode_seconds=float(u["decode_seconds"]),
        )
        for u in data.get("updates", [])
    )
    return RoundStats(
        round_number=int(data["round_number"]),
        base_version=int(data["base_version"]),
        new_version=int(data["new_version"]),
        updates=updates,
        rejected=int(data["rejected"]),
        bytes_up=int(data["bytes_up"]),
        bytes_down=int(data["bytes_down"]),
        update_rms=float(data["update_rms"]),
    )


class Store:
    """The server's SQLite database.

    Parameters
    ----------
    path : path-like
        Database file (created, with its folder and schema, if missing).  ``":memory:"`` gives a
        throwaway database (tests).
    """

    def __init__(self, path: str | os.PathLike[str], *, replace_unusable: bool = False) -> None:
        self.path = os.fspath(path)
        if self.path != ":memory:":
            self.moved_aside = _check_location(self.path, replace_unusable)
        try:
            self._open()
        except StoreError:
            if not (replace_unusable and os.path.exists(self.path)):
                raise
            self.moved_aside = move_aside(self.path)
            self._open()

    #: Where an unusable database was moved (``replace_unusable``), else None.
    moved_aside: str | None = None

    def _open(self) -> None:
        existing = self.path != ":memory:" and os.path.exists(self.path)
        existing = existing and os.path.getsize(self.path) > 0
        try:
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
            self._conn = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the state database {self.path!r}: {exc}") from exc
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            # FULL: fsync the WAL at every commit, so an acknowledged update survives a crash.
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=10000")
            if existing:
                self._check_integrity()
            self._create_schema()
            self._spec: ModelSpec | None = None
            raw = self._meta("spec")
            if raw is not None:
                self._spec = ModelSpec.from_json(json.loads(raw))
        except (sqlite3.Error, ValueError, KeyError, TypeError) as exc:
            self._conn.close()
            raise StoreError(
                f"the state database {self.path!r} is unusable ({_reason(exc)}); "
                "restore it from a backup, or start a new federation with --new-federation "
                "(the file is then moved aside)"
            ) from exc
        except StoreError:
            self._conn.close()
            raise

    def _check_integrity(self) -> None:
        rows = self._conn.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            raise sqlite3.DatabaseError(f"integrity check: {rows[0][0]}")
        tables = {
            r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if "meta" not in tables or self._meta("schema_version") is None:
            raise StoreError(
                f"{self.path!r} is an SQLite database but not a fedcodec state database; "
                "refusing to add a federation to it"
            )

    def _create_schema(self) -> None:
        self._conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
        version = self._meta("schema_version")
        if version is None:
            with self._transaction():
                self._set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(version) != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path!r} has schema version {version}, this server reads {SCHEMA_VERSION}"
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back itself (a full disk): keep the original error.
            if self._conn.in_transaction:
                with suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Checkpoint the WAL and close."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._conn.close()

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- the federation -----------------------------------------------------

    @property
    def spec(self) -> ModelSpec | None:
        """The model's names and shapes (None before :meth:`initialize`)."""
        return self._spec

    def _need_spec(self) -> ModelSpec:
        if self._spec is None:
            raise StoreError(f"{self.path!r} holds no federation yet")
        return self._spec

    def initialize(
        self,
        model: ModelVersion,
        downlink: DownlinkState,
        stream_digest: str,
        first_round: RoundRecord | None,
        *,
        now: float | None = None,
    ) -> None:
        """Record version 0, the downlink's start and the first round (one transaction)."""
        if self._spec is not None:
            raise StoreError(f"{self.path!r} already holds a federation")
        now = time.time() if now is None else now
        with self._transaction() as db:
            self._set_meta("spec", json.dumps(model.spec.to_json()))
            self._set_meta("created_at", repr(now))
            db.execute(
                "INSERT INTO models (version, digest, stream_digest, round_id, created_at, "
                "weights) VALUES (?, ?, ?, NULL, ?, ?)",
                (
                    model.version,
                    model.digest,
                    stream_digest,
                    now,
                    _weights_blob(model.spec, dict(model.tensors)),
                ),
            )
            self._write_downlink(downlink)
            if first_round is not None:
                self._insert_round(first_round)
        self._spec = model.spec

    def latest_version(self) -> int:
        """The newest global version."""
        row = self._conn.execute("SELECT MAX(version) FROM models").fetchone()
        if row is None or row[0] is None:
            raise StoreError(f"{self.path!r} holds no model")
        return int(row[0])

    def model(self, version: int | None = None) -> ModelVersion:
        """The exact global model of ``version`` (default: the newest).

        Raises
        ------
        StoreError
            Unknown version, or its weights were pruned.
        """
        spec = self._need_spec()
        version = self.latest_version() if version is None else version
        row = self._conn.execute(
            "SELECT digest, weights FROM models WHERE version = ?", (version,)
        ).fetchone()
        if row is None or row[1] is None:
            raise StoreError(f"the weights of version {version} are not stored")
        model = ModelVersion.create(version, _weights(spec, row[1]), spec)
        if model.digest != row[0]:
            raise StoreError(f"the stored weights of version {version} do not match its digest")
        return model

    def digests(self, version: int) -> tuple[str, str] | None:
        """(exact digest, downlink digest) of a version, or None."""
        row = self._conn.execute(
            "SELECT digest, stream_digest FROM models WHERE version = ?", (version,)
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def downlink(self) -> DownlinkState:
        """The stored downlink stream (for ``DownlinkEncoder.load_state``)."""
        self._need_spec()
        row = self._conn.execute("SELECT meta, arrays FROM downlink").fetchone()
        if row is None:
            raise StoreError(f"{self.path!r} holds no downlink state")
        meta = json.loads(row[0])
        names = meta.pop("_array_names")
        return _state_arrays(row[1], names), meta

    def _write_downlink(self, state: DownlinkState) -> None:
        arrays, meta = state
        document = json.dumps({**meta, "_array_names": list(arrays)})
        self._conn.execute(
            "INSERT INTO downlink (id, meta, arrays) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET meta = excluded.meta, arrays = excluded.arrays",
            (document, _state_blob(arrays)),
        )

    # -- rounds -------------------------------------------------------------

    def _insert_round(self, r: RoundRecord) -> None:
        self._conn.execute(
            "INSERT INTO rounds (round_id, base_version, params, state, opened_at, deadline, "
            "window) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                r.round_id,
                r.base_version,
                json.dumps(r.params.to_json()),
                r.state,
                r.opened_at,
                r.deadline,
                r.window,
            ),
        )

    def _round(self, row: tuple[Any, ...]) -> RoundRecord:
        return RoundRecord(
            round_id=int(row[0]),
            base_version=int(row[1]),
            params=RoundParams.from_json(json.loads(row[2])),
            state=str(row[3]),
            opened_at=float(row[4]),
            deadline=float(row[5]),
            window=int(row[6]),
        )

    def add_round(self, record: RoundRecord) -> None:
        """Open a round (when none is open, e.g. after ``max_rounds`` was raised)."""
        with self._transaction():
            self._insert_round(record)

    def open_round(self) -> RoundRecord | None:
        """The open round, if any."""
        row = self._conn.execute(
            "SELECT round_id, base_version, params, state, opened_at, deadline, window "
            "FROM rounds WHERE state = 'open' ORDER BY round_id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else self._round(row)

    def last_round_id(self) -> int:
        """The highest round id ever opened (0: none)."""
        row = self._conn.execute("SELECT MAX(round_id) FROM rounds").fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def last_stats(self) -> RoundStats | None:
        """Statistics of the newest finalized round."""
        row = self._conn.execute(
            "SELECT stats FROM rounds WHERE state = 'finalized' ORDER BY round_id DESC LIMIT 1"
        ).fetchone()
        return None if row is None or row[0] is None else round_stats_from_json(json.loads(row[0]))

    def round_history(self) -> list[dict[str, Any]]:
        """Every finalized round: id, versions, times and its stats JSON."""
        out = []
        for rid, base, new, opened, closed, stats in self._conn.execute(
            "SELECT round_id, base_version, new_version, opened_at, closed_at, stats "
            "FROM rounds WHERE state = 'finalized' ORDER BY round_id"
        ):
            out.append(
                {
                    "round_id": int(rid),
                    "base_version": int(base),
                    "new_version": int(new),
                    "opened_at": float(opened),
                    "closed_at": float(closed),
                    "stats": json.loads(stats) if stats else None,
                }
            )
        return out

    def extend_round(self, round_id: int, deadline: float, window: int) -> None:
        """Move an open round's deadline and start a new selection window."""
        with self._transaction() as db:
            db.execute(
                "UPDATE rounds SET deadline = ?, window = ? WHERE round_id = ? AND state = 'open'",
                (deadline, window, round_id),
            )

    def add_selection(self, round_id: int, client_id: str, window: int, now: float) -> bool:
        """Record that ``client_id`` was selected (and register the client).

        Committed without an fsync (``synchronous=NORMAL`` for this transaction): the WAL
        reaches the disk with the next update's commit.  A crash can forget a selection made
        since; that client's upload is then refused and it joins a later round.  No
        acknowledged update depends on it.

        Returns
        -------
        bool
            True when the client was not registered before.
        """
        self._conn.execute("PRAGMA synchronous=NORMAL")
        try:
            with self._transaction() as db:
                new = (
                    db.execute("SELECT 1 FROM clients WHERE client_id = ?", (client_id,)).fetchone()
                    is None
                )
                db.execute(
                    "INSERT INTO selections (round_id, client_id, window, selected_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (round_id, client_id) DO NOTHING",
                    (round_id, client_id, window, now),
                )
                self._touch_client(client_id, now)
        finally:
            self._conn.execute("PRAGMA synchronous=FULL")
        return new

    def selections(self, round_id: int) -> dict[str, int]:
        """Selected clients of a round and their selection windows."""
        return {
            str(c): int(w)
            for c, w in self._conn.execute(
                "SELECT client_id, window FROM selections WHERE round_id = ?", (round_id,)
            )
        }

    def _touch_client(self, client_id: str, now: float) -> None:
        self._conn.execute(
            "INSERT INTO clients (client_id, first_seen, last_seen) VALUES (?, ?, ?) "
            "ON CONFLICT (client_id) DO UPDATE SET last_seen = excluded.last_seen",
            (client_id, now, now),
        )

    def registered_clients(self) -> int:
        """Clients ever selected."""
        row = self._conn.execute("SELECT COUNT(*) FROM clients").fetchone()
        return int(row[0])

    # -- updates ------------------------------------------------------------

    def _update(self, row: tuple[Any, ...]) -> UpdateRecord:
        return UpdateRecord(
            round_id=int(row[0]),
            client_id=str(row[1]),
            idempotency_key=str(row[2]),
            base_version=int(row[3]),
            base_digest=str(row[4]),
            num_examples=int(row[5]),
            size=int(row[6]),
            crc32=int(row[7]),
            sha256=bytes(row[8]),
            received_at=float(row[9]),
        )

    _UPDATE_COLUMNS = (
        "round_id, client_id, idempotency_key, base_version, base_digest, num_examples, size, "
        "crc32, sha256, received_at"
    )

    def update_by_key(self, client_id: str, key: str) -> UpdateRecord | None:
        """The update a client sent with idempotency key ``key``, in any round."""
        row = self._conn.execute(
            f"SELECT {self._UPDATE_COLUMNS} FROM updates "
            "WHERE client_id = ? AND idempotency_key = ?",
            (client_id, key),
        ).fetchone()
        return None if row is None else self._update(row)

    def reported(self, round_id: int) -> list[str]:
        """Clients with an accepted update in a round, in client-id order."""
        return [
            str(c)
            for (c,) in self._conn.execute(
                "SELECT client_id FROM updates WHERE round_id = ? ORDER BY client_id",
                (round_id,),
            )
        ]

    def insert_updates(self, items: list[tuple[UpdateRecord, bytes]]) -> list[Exception | None]:
        """Store accepted updates in one transaction (one fsync for all: a group commit).

        Each update is inserted under its own savepoint, so one that cannot be stored (its
        round is no longer open, or the client already has an update in it or reused the
        key) does not affect the others.

        Returns
        -------
        list of (Exception or None)
            Per item: None when stored (durable when this returns), else
            :class:`sqlite3.IntegrityError` (a duplicate), :class:`StoreError` (the
            round is not open) or :class:`OverflowError` (a field beyond 64 bits).
        """
        results: list[Exception | None] = []
        with self._transaction() as db:
            for record, payload in items:
                db.execute("SAVEPOINT one_update")
                try:
                    state = db.execute(
                        "SELECT state FROM rounds WHERE round_id = ?", (record.round_id,)
                    ).fetchone()
                    if state is None or state[0] != "open":
                        raise StoreError(f"round {record.round_id} is not open")
                    self._insert_update(record, payload)
                except (sqlite3.IntegrityError, StoreError, OverflowError) as exc:
                    # OverflowError: an integer beyond SQLite's 64 bits; only this update fails.
                    db.execute("ROLLBACK TO one_update")
                    results.append(exc)
                else:
                    results.append(None)
                db.execute("RELEASE one_update")
        return results

    def insert_update(self, record: UpdateRecord, payload: bytes) -> None:
        """Store one accepted update (durable when this returns).

        Raises
        ------
        sqlite3.IntegrityError
            The client already has an update in the round, or reused the key.
        StoreError
            The round is not open.
        """
        error = self.insert_updates([(record, payload)])[0]
        if error is not None:
            raise error

    def _insert_update(self, record: UpdateRecord, payload: bytes) -> None:
        self._conn.execute(
            f"INSERT INTO updates ({self._UPDATE_COLUMNS}, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.round_id,
                record.client_id,
                record.idempotency_key,
                record.base_version,
                record.base_digest,
                record.num_examples,
                record.size,
                record.crc32,
                record.sha256,
                record.received_at,
                payload,
            ),
        )
        self._touch_client(record.client_id, record.received_at)
        self._conn.execute(
            "UPDATE clients SET updates_accepted = updates_accepted + 1, last_round = ? "
            "WHERE client_id = ?",
            (record.round_id, record.client_id),
        )

    def drop_updates(self, round_id: int, client_ids: list[str]) -> None:
        """Delete stored updates of a round (the clients may send again).

        For updates that can no longer be decoded: coded against a temporal reference the
        server lost in a restart (references are not persisted).
        """
        with self._transaction() as db:
            for client_id in client_ids:
                cur = db.execute(
                    "DELETE FROM updates WHERE round_id = ? AND client_id = ?",
                    (round_id, client_id),
                )
                if cur.rowcount:
                    db.execute(
                        "UPDATE clients SET updates_accepted = updates_accepted - 1 "
                        "WHERE client_id = ?",
                        (client_id,),
                    )

    def client_references(self, limit: int) -> list[tuple[str, bytes]]:
        """The stored temporal references (client id, blob) of the ``limit`` clients stored
        most recently, least recent first."""
        rows = self._conn.execute(
            "SELECT client_id, reference FROM client_references "
            "ORDER BY stored_at DESC, client_id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [(str(c), bytes(b)) for c, b in reversed(rows)]

    def iter_updates(self, round_id: int) -> Iterator[tuple[UpdateRecord, bytes]]:
        """The round's stored updates in client-id order, one payload in memory at a time."""
        for client_id in self.reported(round_id):
            row = self._conn.execute(
                f"SELECT {self._UPDATE_COLUMNS}, payload FROM updates "
                "WHERE round_id = ? AND client_id = ?",
                (round_id, client_id),
            ).fetchone()
            if row is None or row[10] is None:
                raise StoreError(f"round {round_id}: the payload of {client_id!r} is missing")
            yield self._update(row[:10]), bytes(row[10])

    # -- the end of a round ---------------------------------------------------

    def finish_round(
        self,
        round_id: int,
        model: ModelVersion,
        downlink: DownlinkState,
        stream_digest: str,
        stats: RoundStats,
        next_round: RoundRecord | None,
        *,
        keep_model_blobs: int,
        now: float,
        references: Sequence[tuple[str, bytes]] = (),
        keep_references: int = 0,
    ) -> None:
        """Close a round in one transaction.

        Records the new model and the downlink state, marks the round finalized with its
        statistics, drops its update payloads (their metadata stays, for idempotent
        resends), prunes old weights and opens ``next_round``.  ``references``: the
        temporal references the round stored (client id, ``ClientReferences.to_bytes``),
        kept for the ``keep_references`` clients stored most recently.
        """
        spec = self._need_spec()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO models (version, digest, stream_digest, round_id, created_at, "
                "weights) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    model.version,
                    model.digest,
                    stream_digest,
                    round_id,
                    now,
                    _weights_blob(spec, dict(model.tensors)),
                ),
            )
            db.execute(
                "UPDATE models SET weights = NULL WHERE version <= ?",
                (model.version - keep_model_blobs,),
            )
            self._write_downlink(downlink)
            cur = db.execute(
                "UPDATE rounds SET state = 'finalized', closed_at = ?, new_version = ?, "
                "stats = ? WHERE round_id = ? AND state = 'open'",
                (now, model.version, json.dumps(stats.to_json()), round_id),
            )
            if cur.rowcount != 1:
                raise StoreError(f"round {round_id} is not open")
            for client_id, blob in references:
                db.execute(
                    "INSERT OR REPLACE INTO client_references (client_id, stored_at, reference) "
                    "VALUES (?, ?, ?)",
                    (client_id, now, blob),
                )
            db.execute(
                "DELETE FROM client_references WHERE client_id NOT IN (SELECT client_id FROM "
                "client_references ORDER BY stored_at DESC, client_id DESC LIMIT ?)",
                (keep_references,),
            )
            db.execute("UPDATE updates SET payload = NULL WHERE round_id = ?", (round_id,))
            db.execute("DELETE FROM selections WHERE round_id = ?", (round_id,))
            if next_round is not None:
                self._insert_round(next_round)
