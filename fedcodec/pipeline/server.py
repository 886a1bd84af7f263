"""Server side: validate, screen, weight and combine a round's updates (robust FedAvg).

One :class:`Aggregator` per round.  Every update is checked (base version and
digest, duplicate, tensor set and shapes, step), decoded and screened against
the round's :class:`~fedcodec.pipeline.robust.RobustPolicy` (example count,
finite and bounded values, norm); the round-level rules (share cap, norm bound
relative to the round's median, coordinate-wise aggregators) are applied when
the round is finalized::

    new = float32(base + server_lr · Σ pᵢ·sᵢ·decodedᵢ)

with ``pᵢ`` the capped share of ``nᵢ / Σ n`` and ``sᵢ <= 1`` the norm clip
(plain FedAvg: ``pᵢ = nᵢ / Σ n``, ``sᵢ = 1``).  Memory: one float64
accumulator per tensor, plus the accepted *coded* updates when the policy has
round-level rules (or none, when the caller hands them back to
:meth:`Aggregator.finalize`, as the server does from its database); the
coordinate-wise aggregators hold all decoded updates (see
:mod:`fedcodec.pipeline.robust`).  Updates are combined in client-id order, so
the result does not depend on arrival order.

A rejected update (unknown or stale base version, wrong digest, duplicate,
wrong tensor set or shapes, corrupt bytes, values out of range) never changes
the aggregate.

Temporal references (opt-in): with a :class:`ClientReferences` store the
aggregator decodes updates that clients coded with their previous decoded
update as temporal side information (``UpdateEncoder(temporal_reference=True)``)
and, when the round is finalized, keeps each accepted client's decoded update
as that client's next reference.  Memory: one float32 model per client in the
store (``ClientReferences.memory_bytes``), plus one per accepted update of the
open round.

Thread safety: :meth:`Aggregator.accept` and :meth:`Aggregator.finalize` may be
called from several threads; updates are accumulated one at a time.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
import zlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedcodec import codec
from fedcodec.errors import InvalidParameterError
from fedcodec.pipeline.checks import check_base, check_sender, check_tensors, inspect_update
from fedcodec.pipeline.client import EncodedUpdate
from fedcodec.pipeline.errors import (
    DuplicateUpdateError,
    EmptyRoundError,
    RoundClosedError,
    StaleBaseVersionError,
    UpdateRejectedError,
)
from fedcodec.pipeline.model import ModelHistory, ModelVersion, Tensors, reference_token
from fedcodec.pipeline.robust import (
    RobustPolicy,
    RoundPlan,
    UpdateSummary,
    combine_coordinatewise,
    plan_round,
    screen_update,
)
from fedcodec.pipeline.stats import ClientRoundStats, RoundStats

__all__ = [
    "DEFAULT_MAX_STEP",
    "Aggregator",
    "ClientReferences",
    "RobustPolicy",
    "temporal_reference_for",
]

#: Largest accepted quantization step: with levels up to 2**30 the decoded
#: values stay finite in float32 (a container may legally carry any finite step).
DEFAULT_MAX_STEP = float(np.finfo(np.float32).max) / 2.0**31

F64Array = npt.NDArray[np.float64]


class ClientReferences:
    """Per-client temporal references kept by the server across rounds.

    Each entry is the decoded update last accepted from a client (float32, in
    model order): the reference a client with
    ``UpdateEncoder(temporal_reference=True)`` codes its next update against.
    Memory: ``numel * 4`` bytes per client held (:attr:`memory_bytes`); with
    ``max_clients`` the least recently stored client is forgotten first (its
    next reference-coded update is then refused, and the client resends
    without reference).

    Parameters
    ----------
    max_clients : int, optional
        Most clients held at once (None: no limit).
    """

    def __init__(self, max_clients: int | None = None) -> None:
        if max_clients is not None and max_clients < 1:
            raise ValueError(f"max_clients must be >= 1 or None, got {max_clients!r}")
        self.max_clients = max_clients
        self._refs: dict[str, list[npt.NDArray[np.float32]]] = {}
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._refs)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._refs

    @property
    def memory_bytes(self) -> int:
        """Bytes of the references held."""
        with self._lock:
            return sum(a.nbytes for ref in self._refs.values() for a in ref)

    def get(self, client_id: str) -> list[npt.NDArray[np.float32]] | None:
        """The client's reference (model order), or None."""
        with self._lock:
            return self._refs.get(client_id)

    def token(self, client_id: str) -> str | None:
        """:func:`~fedcodec.pipeline.model.reference_token` of the client's reference
        (None: none held) — what a transport tells the client, so that it codes
        against its previous update only when the server holds the same one."""
        with self._lock:
            return self._tokens.get(client_id)

    def put(self, client_id: str, decoded: Sequence[npt.ArrayLike]) -> None:
        """Store the client's latest decoded update as its reference."""
        arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in decoded]
        token = reference_token(arrays)
        with self._lock:
            self._refs.pop(client_id, None)
            self._tokens.pop(client_id, None)
            self._refs[client_id] = arrays
            self._tokens[client_id] = token
            while self.max_clients is not None and len(self._refs) > self.max_clients:
                oldest = next(iter(self._refs))
                del self._refs[oldest]
                self._tokens.pop(oldest, None)

    def discard(self, client_id: str) -> None:
        """Forget a client's reference."""
        with self._lock:
            self._refs.pop(client_id, None)
            self._tokens.pop(client_id, None)

    def snapshot(self) -> tuple[dict[str, list[npt.NDArray[np.float32]]], dict[str, str]]:
        """What the store holds now, for :meth:`rollback` (the arrays are shared, not
        copied: a reference is replaced by :meth:`put`, never changed in place)."""
        with self._lock:
            return dict(self._refs), dict(self._tokens)

    def rollback(
        self, snapshot: tuple[dict[str, list[npt.NDArray[np.float32]]], dict[str, str]]
    ) -> None:
        """Hold again what :meth:`snapshot` saw (e.g. when the round that stored newer
        references is not committed: its updates, coded against the older ones, are
        decoded again)."""
        refs, tokens = snapshot
        with self._lock:
            self._refs = dict(refs)
            self._tokens = dict(tokens)

    def clients(self) -> list[str]:
        """The clients held, least recently stored first."""
        with self._lock:
            return list(self._refs)

    def to_bytes(self, client_id: str) -> bytes | None:
        """The client's reference as a self-contained blob (None: none held):
        deflated float32, exact (e.g. for a server's database; :meth:`put_bytes`
        reads it back)."""
        ref = self.get(client_id)
        if ref is None:
            return None
        raw = b"".join(np.ascontiguousarray(a, dtype="<f4").tobytes() for a in ref)
        return zlib.compress(raw, 6)

    def put_bytes(self, client_id: str, blob: bytes, shapes: Sequence[tuple[int, ...]]) -> None:
        """Store a reference from :meth:`to_bytes` (ValueError when it does not fit
        ``shapes``, the model's)."""
        raw = zlib.decompress(blob)
        sizes = [math.prod(shape) for shape in shapes]
        if len(raw) != 4 * sum(sizes):
            raise ValueError(
                f"a stored reference of {client_id!r} has {len(raw)} bytes, the model "
                f"{4 * sum(sizes)}"
            )
        arrays = []
        offset = 0
        for size, shape in zip(sizes, shapes, strict=True):
            values = np.frombuffer(raw, dtype="<f4", count=size, offset=offset)
            arrays.append(values.astype(np.float32).reshape(shape))
            offset += 4 * size
        self.put(client_id, arrays)


def temporal_reference_for(
    data: bytes,
    client_id: str,
    references: ClientReferences | None,
    shapes: Sequence[tuple[int, ...]] | None = None,
) -> list[npt.NDArray[np.float32]] | None:
    """The temporal reference an update needs from ``references`` (None: it was
    coded without one).  ``shapes``: the model's, needed for a compact container.

    Raises
    ------
    UpdateRejectedError
        The update was coded with a reference, and ``references`` is None or
        holds none for ``client_id``.
    """
    expected = shapes if codec.is_compact(data) else None
    if all(info.reference_digest is None for info in codec.inspect(data, expected_shapes=expected)):
        return None
    if references is None:
        raise UpdateRejectedError(
            f"the update of {client_id!r} was coded with a temporal reference; this server "
            "keeps no per-client references: encode without (temporal_reference=False)"
        )
    ref = references.get(client_id)
    if ref is None:
        raise UpdateRejectedError(
            f"the update of {client_id!r} was coded with a temporal reference, but the "
            "server holds none for this client: drop the reference and resend"
        )
    return ref


@dataclass(frozen=True)
class _Accepted:
    stats: ClientRoundStats
    payload_sha256: bytes
    norm: float
    data: bytes | None  # kept for the round-level rules (keep_payloads)


class Aggregator:
    """Accumulates the weighted updates of one round.

    Parameters
    ----------
    base : ModelVersion
        The global model the round's updates were computed against.
    round_number : int
        The round (duplicates are per round).
    history : ModelHistory, optional
        Versions the server issued: an older base version is then reported as
        stale (:class:`StaleBaseVersionError`) rather than unknown.
    base_digests : collection of str, optional
        Digests a client may report for ``base`` (e.g. the exact model and the
        downlink reconstruction); default: ``base.digest`` only.  An update
        without a digest is not checked.
    server_lr : float, optional
        Server learning rate applied to the mean update (1.0: plain FedAvg).
    threads : int, optional
        Codec threads (0 = all CPUs).
    max_step : float, optional
        Largest quantization step accepted in a container.
    policy : RobustPolicy, optional
        Robust-aggregation rules (default: ``RobustPolicy()``, safe defaults;
        ``RobustPolicy.fedavg()`` for plain FedAvg).
    keep_payloads : bool, optional
        Keep accepted coded updates until :meth:`finalize` (default True).  With
        False and a policy with round-level rules, :meth:`finalize` needs the
        updates again (``payloads``): memory stays O(model).
    references : ClientReferences, optional
        Per-client temporal references (default None: an update coded with a
        temporal reference is refused).  Updates are decoded with the client's
        stored reference; :meth:`finalize` stores each accepted update as the
        client's next one.

    Attributes
    ----------
    plan : RoundPlan or None
        Shares, clips and rejections of the round (after :meth:`finalize`).
    """

    def __init__(
        self,
        base: ModelVersion,
        *,
        round_number: int,
        history: ModelHistory | None = None,
        base_digests: Collection[str] | None = None,
        server_lr: float = 1.0,
        threads: int = 0,
        max_step: float = DEFAULT_MAX_STEP,
        policy: RobustPolicy | None = None,
        keep_payloads: bool = True,
        references: ClientReferences | None = None,
    ) -> None:
        if not (math.isfinite(server_lr) and server_lr > 0):
            raise ValueError(f"server_lr must be finite and > 0, got {server_lr!r}")
        self.base = base
        self.spec = base.spec
        self.round_number = round_number
        self.history = history
        self.base_digests = frozenset(base_digests) if base_digests else frozenset({base.digest})
        self.server_lr = server_lr
        self.threads = threads
        self.max_step = max_step
        self.policy = RobustPolicy() if policy is None else policy
        self.keep_payloads = keep_payloads
        self.references = references
        # per accepted client: the reference its update was decoded with, and
        # its decoded update (the next reference, stored at finalize)
        self._used_refs: dict[str, list[npt.NDArray[np.float32]] | None] = {}
        self._new_refs: dict[str, list[npt.NDArray[np.float32]]] = {}
        self.plan: RoundPlan | None = None
        self._acc: list[F64Array] = [np.zeros(s, dtype=np.float64) for s in self.spec.shapes]
        self._accepted: dict[str, _Accepted] = {}
        self._total_examples = 0
        # Plain (not round-level) policy: Σ n·s accumulated as updates arrive.
        self._streamed_weight = 0.0
        self.rejected = 0
        self._result: ModelVersion | None = None
        # The codec releases the GIL while it accumulates: one update at a time.
        self._lock = threading.Lock()

    # -- intake -------------------------------------------------------------

    @property
    def num_updates(self) -> int:
        """Accepted updates so far."""
        return len(self._accepted)

    @property
    def total_examples(self) -> int:
        """Sum of the accepted updates' example counts."""
        return self._total_examples

    @property
    def bytes_up(self) -> int:
        """Sum of the accepted updates' sizes."""
        return sum(a.stats.bytes for a in self._accepted.values())

    @property
    def closed(self) -> bool:
        """Whether :meth:`finalize` ran."""
        return self._result is not None

    def accept_update(self, update: EncodedUpdate) -> ClientRoundStats:
        """:meth:`accept` for an :class:`~fedcodec.pipeline.client.EncodedUpdate`.

        Its ``round_number`` must be this round's.
        """
        if update.round_number != self.round_number:
            self.rejected += 1
            raise StaleBaseVersionError(
                f"update of client {update.client_id!r} is for round {update.round_number}, "
                f"this is round {self.round_number}"
            )
        return self.accept(
            update.data,
            client_id=update.client_id,
            base_version=update.base_version,
            num_examples=update.num_examples,
            base_digest=update.base_digest,
        )

    def accept(
        self,
        data: bytes,
        *,
        client_id: str,
        base_version: int,
        num_examples: int,
        base_digest: str | None = None,
    ) -> ClientRoundStats:
        """Check one update and add ``num_examples · decoded`` to the aggregate.

        Parameters
        ----------
        data : bytes
            The update's codec container.
        client_id : str
            Sender (one update per client and round).
        base_version : int
            Version the client computed its delta against.
        num_examples : int
            FedAvg weight, >= 1.
        base_digest : str, optional
            Digest of the base model the client held.

        Returns
        -------
        ClientRoundStats

        Raises
        ------
        RoundClosedError, DuplicateUpdateError, UnknownBaseVersionError,
        StaleBaseVersionError, BaseDigestMismatchError, ModelMismatchError,
        UpdateRejectedError
            The update was refused (see :mod:`fedcodec.pipeline.errors`).
        fedcodec.errors.CorruptStreamError
            The container is damaged.
        In every case the aggregate is unchanged.
        """
        start = time.perf_counter()
        with self._lock:
            try:
                steps = self._check(data, client_id, base_version, num_examples, base_digest)
                ref = self._reference_for(data, client_id)
                try:
                    decoded = codec.decode(
                        data, threads=self.threads, expected_shapes=self.spec.shapes, reference=ref
                    )
                except InvalidParameterError as exc:
                    if ref is None:
                        raise
                    raise UpdateRejectedError(
                        f"the update of {client_id!r} was coded with another temporal reference "
                        "than the server's (the client's last accepted update): drop the "
                        f"reference and resend ({exc})"
                    ) from exc
                norm = screen_update(
                    decoded, self.policy, client_id=client_id, num_examples=num_examples
                )
            except Exception:
                self.rejected += 1
                raise
            if not self.policy.round_level:
                bound = self.policy.norm_bound
                scale = bound / norm if 0.0 < bound < norm else 1.0
                weight = float(num_examples) * scale
                for acc, values in zip(self._acc, decoded, strict=True):
                    acc += weight * values.astype(np.float64)
                self._streamed_weight += float(num_examples)
            stats = ClientRoundStats(
                client_id=client_id,
                bytes=len(data),
                num_examples=num_examples,
                steps=steps,
                decode_seconds=time.perf_counter() - start,
            )
            keep = self.policy.round_level and self.keep_payloads
            self._accepted[client_id] = _Accepted(
                stats, hashlib.sha256(data).digest(), norm, bytes(data) if keep else None
            )
            self._total_examples += num_examples
            if self.references is not None:
                self._used_refs[client_id] = ref
                self._new_refs[client_id] = decoded
        return stats

    def _reference_for(self, data: bytes, client_id: str) -> list[npt.NDArray[np.float32]] | None:
        return temporal_reference_for(data, client_id, self.references, self.spec.shapes)

    def _check(
        self,
        data: bytes,
        client_id: str,
        base_version: int,
        num_examples: int,
        base_digest: str | None,
    ) -> tuple[float, ...]:
        if self.closed:
            raise RoundClosedError(
                f"round {self.round_number} is finalized; update of {client_id!r} refused"
            )
        check_sender(client_id, num_examples, data)
        previous = self._accepted.get(client_id)
        if previous is not None:
            same = previous.payload_sha256 == hashlib.sha256(data).digest()
            raise DuplicateUpdateError(
                f"client {client_id!r} already submitted in round {self.round_number}"
                + (" (identical payload: a retry)" if same else ""),
                same_payload=same,
            )
        check_base(
            client_id=client_id,
            round_number=self.round_number,
            base_version=base_version,
            expected_version=self.base.version,
            base_digest=base_digest,
            base_digests=self.base_digests,
            was_issued=None if self.history is None else self.history.was_issued,
        )
        return check_tensors(
            inspect_update(data, self.spec, client_id=client_id),
            self.spec,
            client_id=client_id,
            max_step=self.max_step,
        )

    # -- result -------------------------------------------------------------

    def mean_update(self, payloads: Iterable[tuple[str, bytes]] | None = None) -> Tensors:
        """The (robust) mean of the accepted updates (float32), without finalizing.

        Parameters
        ----------
        payloads : iterable of (client_id, bytes), optional
            The accepted updates again, when they were not kept (``keep_payloads``).

        Raises
        ------
        EmptyRoundError
            No update was accepted.
        """
        with self._lock:
            mean = self._mean(payloads)
        return {name: m.astype(np.float32) for name, m in zip(self.spec.names, mean, strict=True)}

    def finalize(
        self, version: int | None = None, payloads: Iterable[tuple[str, bytes]] | None = None
    ) -> ModelVersion:
        """Close the round and build the new global version.

        Parameters
        ----------
        version : int, optional
            Id of the new version (default ``base.version + 1``).
        payloads : iterable of (client_id, bytes), optional
            The accepted updates again (any order; others are ignored), needed when a
            policy with round-level rules runs with ``keep_payloads=False``.  Each must
            be the bytes that were accepted (checked by SHA-256).

        Returns
        -------
        ModelVersion
            ``float32(base + server_lr · robust mean)``; the same object on repeated
            calls.

        Raises
        ------
        EmptyRoundError
            No update was accepted (the round stays open).
        UpdateRejectedError
            ``payloads`` misses an accepted update or holds other bytes.
        """
        with self._lock:
            if self._result is not None:
                return self._result
            mean = self._mean(payloads)
            new: Tensors = {}
            for name, m in zip(self.spec.names, mean, strict=True):
                base64 = self.base.tensors[name].astype(np.float64)
                new[name] = (base64 + self.server_lr * m).astype(np.float32)
            self._result = ModelVersion.create(
                self.base.version + 1 if version is None else version, new, self.spec
            )
            if self.references is not None:
                for client_id, decoded in self._new_refs.items():
                    self.references.put(client_id, decoded)
                self._new_refs.clear()
                self._used_refs.clear()
            return self._result

    def _mean(self, payloads: Iterable[tuple[str, bytes]] | None) -> list[F64Array]:
        if not self._accepted:
            raise EmptyRoundError(f"round {self.round_number}: no update was accepted")
        if not self.policy.round_level:
            total = self._streamed_weight
            self.plan = RoundPlan(
                shares={c: a.stats.num_examples / total for c, a in self._accepted.items()},
                scales={
                    c: (self.policy.norm_bound / a.norm)
                    if 0.0 < self.policy.norm_bound < a.norm
                    else 1.0
                    for c, a in self._accepted.items()
                },
                bound=self.policy.norm_bound or math.inf,
            )
            return [acc / total for acc in self._acc]
        plan = plan_round(
            [
                UpdateSummary(c, a.stats.num_examples, a.norm)
                for c, a in sorted(self._accepted.items())
            ],
            self.policy,
        )
        self.plan = plan
        ordered = sorted(self._updates_again(payloads, set(plan.shares)).items())
        if self.policy.aggregator == "mean":
            mean = self._acc  # round-level policies accumulate only here
            for m in mean:
                m.fill(0.0)  # mean_update() may have run before finalize()
            for client_id, data in ordered:
                codec.decode_accumulate(
                    data,
                    mean,
                    plan.weight(client_id),
                    threads=self.threads,
                    reference=self._used_refs.get(client_id),
                )
            return [m.copy() for m in mean]
        # Coordinate-wise: every decoded update at once (k x model float32).
        stacks = [np.empty((len(ordered), *shape), np.float32) for shape in self.spec.shapes]
        for row, (client_id, data) in enumerate(ordered):
            scale = np.float32(plan.scales[client_id])
            decoded = codec.decode(
                data,
                threads=self.threads,
                expected_shapes=self.spec.shapes,
                reference=self._used_refs.get(client_id),
            )
            for stack, values in zip(stacks, decoded, strict=True):
                stack[row] = values * scale
        return [
            combine_coordinatewise(stack, self.policy.aggregator, self.policy.trim_fraction)
            for stack in stacks
        ]

    def _updates_again(
        self, payloads: Iterable[tuple[str, bytes]] | None, wanted: set[str]
    ) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        if payloads is None:
            for client_id in wanted:
                data = self._accepted[client_id].data
                if data is None:
                    raise UpdateRejectedError(
                        "the accepted updates were not kept (keep_payloads=False): pass "
                        "them to finalize(payloads=...)"
                    )
                found[client_id] = data
            return found
        for client_id, data in payloads:
            if client_id not in wanted:
                continue
            if hashlib.sha256(data).digest() != self._accepted[client_id].payload_sha256:
                raise UpdateRejectedError(
                    f"the update of {client_id!r} handed to finalize is not the accepted one"
                )
            found[client_id] = bytes(data)
        missing = wanted - found.keys()
        if missing:
            raise UpdateRejectedError(
                f"finalize: the accepted updates of {sorted(missing)!r} were not handed back"
            )
        return found

    def round_stats(self, bytes_down: int = 0) -> RoundStats:
        """Statistics of the finalized round (for logs and schedules)."""
        result = self.finalize()
        left_out = set() if self.plan is None else set(self.plan.rejected)
        sq = 0.0
        for name in self.spec.names:
            d = result.tensors[name].astype(np.float64) - self.base.tensors[name]
            sq += float(np.square(d).sum())  # no BLAS: its threads crawl on a shared machine
        return RoundStats(
            round_number=self.round_number,
            base_version=self.base.version,
            new_version=result.version,
            updates=tuple(a.stats for c, a in self._accepted.items() if c not in left_out),
            rejected=self.rejected + len(left_out),
            bytes_up=self.bytes_up,
            bytes_down=bytes_down,
            update_rms=math.sqrt(sq / max(self.spec.numel, 1)),
        )
