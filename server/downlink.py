"""A downlink stream that survives restarts (no gRPC here).

:class:`fedcodec.pipeline.DownlinkEncoder` keeps its stream in memory only.  The server
must go on with the *same* stream after a restart — clients hold its models and check them
against its digests — so :class:`PersistentDownlink` adds what the pipeline lacks: a
:meth:`~PersistentDownlink.snapshot` of the stream (grid, the model clients reconstruct,
the kept releases, the rate-control warm start) and :meth:`~PersistentDownlink.restore`.
A restored stream serves the same packages and codes the next version into the same bytes
as one that never stopped (``tests/test_server_rounds.py`` checks this).

It reads and writes the encoder's private fields; the equivalence test guards against the
pipeline changing them.  (A ``state()`` / ``load_state()`` pair on ``DownlinkEncoder``, like
``UpdateEncoder`` has, would make this subclass unnecessary.)
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from fedcodec.pipeline import DownlinkEncoder, ModelSpec, Release, RoundParams
from fedcodec.pipeline.downlink import DEFAULT_KEYFRAME_BITS
from fedcodec.server.store import DownlinkSnapshot, ReleaseRecord

__all__ = ["PersistentDownlink"]


class PersistentDownlink(DownlinkEncoder):
    """:class:`~fedcodec.pipeline.DownlinkEncoder` with a snapshot and a restore."""

    def snapshot(self) -> DownlinkSnapshot:
        """The stream's state (copies), for :meth:`restore`.

        Raises
        ------
        LookupError
            Nothing was published yet.
        """
        if self._stream is None or self._grid is None or self._latest is None:
            raise LookupError("nothing published yet")
        return DownlinkSnapshot(
            latest=self._latest,
            grid=list(self._grid),
            warm=self._warm,
            stream={name: array.copy() for name, array in self._stream.items()},
            releases=[
                ReleaseRecord(r.version, r.digest, r.residual_rms, r.delta)
                for r in self._releases.values()
            ],
        )

    @classmethod
    def restore(
        cls,
        spec: ModelSpec,
        snapshot: DownlinkSnapshot,
        *,
        params: RoundParams | None = None,
        keep: int = 8,
        keyframe_bits: int = DEFAULT_KEYFRAME_BITS,
        threads: int = 0,
    ) -> PersistentDownlink:
        """A stream continuing from ``snapshot`` (parameters as for the constructor)."""
        downlink = cls(spec, params=params, keep=keep, keyframe_bits=keyframe_bits, threads=threads)
        if len(snapshot.grid) != len(spec):
            raise ValueError("the downlink snapshot's grid does not match the model")
        downlink._grid = list(snapshot.grid)
        downlink._stream = {
            name: np.ascontiguousarray(snapshot.stream[name], dtype=np.float32).copy()
            for name in spec.names
        }
        downlink._latest = snapshot.latest
        downlink._warm = snapshot.warm
        downlink._releases = OrderedDict(
            (
                r.version,
                Release(
                    version=r.version,
                    digest=r.digest,
                    delta=r.delta,
                    stats=None,
                    residual_rms=r.residual_rms,
                ),
            )
            for r in snapshot.releases
        )
        downlink._keyframe_cache = None
        if snapshot.latest not in downlink._releases:
            raise ValueError("the downlink snapshot lacks its latest release")
        return downlink

    def stream_digest(self) -> str:
        """Digest of the model every up-to-date client holds."""
        if self._latest is None:
            raise LookupError("nothing published yet")
        return self._releases[self._latest].digest
