"""Server side: validate, decode-and-accumulate, and finalize a round (FedAvg).

One :class:`Aggregator` per round.  It keeps a single float64 accumulator per
tensor (memory O(model), however many clients), adds ``num_examples ·
decoded`` for every accepted update through
:func:`fedcodec.codec.decode_accumulate`, and turns the weighted mean into
the next global version::

    new = float32(base + server_lr · Σ nᵢ·decodedᵢ / Σ nᵢ)

Every check runs before the accumulator is touched, and the codec checks the
whole container before it writes anything, so a rejected update (unknown or
stale base version, wrong digest, duplicate, wrong tensor set or shapes,
corrupt bytes) never changes the aggregate.

Thread safety: :meth:`Aggregator.accept` and :meth:`Aggregator.finalize` may be
called from several threads; updates are accumulated one at a time.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedcodec import codec
from fedcodec.pipeline.client import EncodedUpdate
from fedcodec.pipeline.errors import (
    BaseDigestMismatchError,
    DuplicateUpdateError,
    EmptyRoundError,
    ModelMismatchError,
    RoundClosedError,
    StaleBaseVersionError,
    UnknownBaseVersionError,
    UpdateRejectedError,
)
from fedcodec.pipeline.model import ModelHistory, ModelVersion, Tensors
from fedcodec.pipeline.stats import ClientRoundStats, RoundStats

__all__ = ["DEFAULT_MAX_STEP", "Aggregator"]

#: Largest accepted quantization step: with levels up to 2**30 the decoded
#: values stay finite in float32 (a container may legally carry any finite step).
DEFAULT_MAX_STEP = float(np.finfo(np.float32).max) / 2.0**31

F64Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class _Accepted:
    stats: ClientRoundStats
    payload_sha256: bytes


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
        self._acc: list[F64Array] = [np.zeros(s, dtype=np.float64) for s in self.spec.shapes]
        self._accepted: dict[str, _Accepted] = {}
        self._total_examples = 0
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
                codec.decode_accumulate(data, self._acc, float(num_examples), threads=self.threads)
            except Exception:
                self.rejected += 1
                raise
            stats = ClientRoundStats(
                client_id=client_id,
                bytes=len(data),
                num_examples=num_examples,
                steps=steps,
                decode_seconds=time.perf_counter() - start,
            )
            self._accepted[client_id] = _Accepted(stats, hashlib.sha256(data).digest())
            self._total_examples += num_examples
        return stats

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
        if not isinstance(client_id, str) or not client_id:
            raise UpdateRejectedError(f"client_id must be a non-empty str, got {client_id!r}")
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
            raise UpdateRejectedError(
                f"num_examples must be an int >= 1, got {num_examples!r} (client {client_id!r})"
            )
        if not isinstance(data, bytes | bytearray | memoryview):
            raise UpdateRejectedError(f"update data must be bytes, got {type(data).__name__}")
        previous = self._accepted.get(client_id)
        if previous is not None:
            same = previous.payload_sha256 == hashlib.sha256(data).digest()
            raise DuplicateUpdateError(
                f"client {client_id!r} already submitted in round {self.round_number}"
                + (" (identical payload: a retry)" if same else ""),
                same_payload=same,
            )
        if base_version != self.base.version:
            if self.history is not None and self.history.was_issued(base_version):
                raise StaleBaseVersionError(
                    f"update of {client_id!r} is against version {base_version}, "
                    f"round {self.round_number} aggregates against version {self.base.version}"
                )
            raise UnknownBaseVersionError(
                f"update of {client_id!r} names base version {base_version}, which this "
                f"server never issued (round {self.round_number} is against version "
                f"{self.base.version})"
            )
        if base_digest is not None and base_digest not in self.base_digests:
            raise BaseDigestMismatchError(
                f"update of {client_id!r}: base digest {base_digest[:16]}… is not a digest of "
                f"version {self.base.version}"
            )
        infos = codec.inspect(data)
        if len(infos) != len(self.spec):
            raise ModelMismatchError(
                f"update of {client_id!r} holds {len(infos)} tensors, the model has "
                f"{len(self.spec)}"
            )
        for info, (name, shape) in zip(infos, self.spec, strict=True):
            if info.shape != shape:
                raise ModelMismatchError(
                    f"update of {client_id!r}: tensor {info.index} ({name!r}) has shape "
                    f"{info.shape}, the model has {shape}"
                )
            if not (math.isfinite(info.step) and 0.0 < info.step <= self.max_step):
                raise UpdateRejectedError(
                    f"update of {client_id!r}: tensor {name!r} has step {info.step!r}, "
                    f"beyond the accepted maximum {self.max_step:.3g}"
                )
        return tuple(info.step for info in infos)

    # -- result -------------------------------------------------------------

    def mean_update(self) -> Tensors:
        """The FedAvg mean of the accepted updates (float32), without finalizing.

        Raises
        ------
        EmptyRoundError
            No update was accepted.
        """
        if not self._accepted:
            raise EmptyRoundError(f"round {self.round_number}: no update was accepted")
        total = float(self._total_examples)
        return {
            name: (acc / total).astype(np.float32)
            for name, acc in zip(self.spec.names, self._acc, strict=True)
        }

    def finalize(self, version: int | None = None) -> ModelVersion:
        """Close the round and build the new global version.

        Parameters
        ----------
        version : int, optional
            Id of the new version (default ``base.version + 1``).

        Returns
        -------
        ModelVersion
            ``float32(base + server_lr · weighted mean)``; the same object on
            repeated calls.

        Raises
        ------
        EmptyRoundError
            No update was accepted (the round stays open).
        """
        with self._lock:
            return self._finalize(version)

    def _finalize(self, version: int | None) -> ModelVersion:
        if self._result is not None:
            return self._result
        if not self._accepted:
            raise EmptyRoundError(f"round {self.round_number}: no update was accepted")
        total = float(self._total_examples)
        new: Tensors = {}
        for name, acc in zip(self.spec.names, self._acc, strict=True):
            base64 = self.base.tensors[name].astype(np.float64)
            new[name] = (base64 + (self.server_lr / total) * acc).astype(np.float32)
        self._result = ModelVersion.create(
            self.base.version + 1 if version is None else version, new, self.spec
        )
        return self._result

    def round_stats(self, bytes_down: int = 0) -> RoundStats:
        """Statistics of the finalized round (for logs and schedules)."""
        result = self.finalize()
        sq = 0.0
        for name in self.spec.names:
            d = result.tensors[name].astype(np.float64) - self.base.tensors[name]
            sq += float(np.dot(d.ravel(), d.ravel()))
        return RoundStats(
            round_number=self.round_number,
            base_version=self.base.version,
            new_version=result.version,
            updates=tuple(a.stats for a in self._accepted.values()),
            rejected=self.rejected,
            bytes_up=self.bytes_up,
            bytes_down=bytes_down,
            update_rms=math.sqrt(sq / max(self.spec.numel, 1)),
        )
