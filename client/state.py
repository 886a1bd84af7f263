"""What an edge client keeps on disk between runs (``.npz`` files, no pickle).

A state folder holds:

* ``model.npz`` — the global model the client holds (:class:`~fedcodec.pipeline.ModelReceiver`),
  so the next round needs only the coded deltas;
* ``encoder.npz`` — the error-feedback residual (:class:`~fedcodec.pipeline.UpdateEncoder`)
  as of the last update the server *acknowledged*;
* ``pending.npz`` — an update that was encoded but not yet acknowledged: its bytes, its
  idempotency key, and the residual to adopt once it is.

The order of writes makes a crash at any point safe: the pending file is written before
the upload starts; ``encoder.npz`` advances only after the server acknowledged (then the
pending file is removed).  A client restarted with a pending file resends the same bytes
with the same key, so the server counts the update once; if the server refuses it for good
(its round closed), the update is dropped and the residual stays as it was before it.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedcodec.pipeline import StateFormatError
from fedcodec.pipeline._state import write_npz_atomic

__all__ = ["PendingUpload", "load_pending", "save_pending"]

_FORMAT = "fedcodec-pending-upload/1"


@dataclass(frozen=True)
class PendingUpload:
    """An encoded update waiting for the server's acknowledgement.

    Attributes
    ----------
    idempotency_key : str
        The same for every resend.
    round_id, base_version : int
        Where it belongs.
    base_digest : str
        Digest of the base model.
    num_examples : int
        FedAvg weight.
    payload : bytes
        The codec container.
    residual : dict of str to ndarray
        The encoder's residual after this update (adopted on acknowledgement).
    encoder_meta : dict
        The encoder's state metadata after this update.
    """

    idempotency_key: str
    round_id: int
    base_version: int
    base_digest: str
    num_examples: int
    payload: bytes
    residual: dict[str, np.ndarray]
    encoder_meta: dict[str, Any]


def save_pending(path: str | os.PathLike[str], pending: PendingUpload) -> None:
    """Write ``pending`` atomically (temporary file, fsync, rename)."""
    names = list(pending.residual)
    meta = {
        "format": _FORMAT,
        "idempotency_key": pending.idempotency_key,
        "round_id": pending.round_id,
        "base_version": pending.base_version,
        "base_digest": pending.base_digest,
        "num_examples": pending.num_examples,
        "encoder_meta": pending.encoder_meta,
        "residual_names": names,
    }
    arrays: dict[str, np.ndarray] = {f"r{i}": pending.residual[n] for i, n in enumerate(names)}
    arrays["payload"] = np.frombuffer(pending.payload, dtype=np.uint8)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    write_npz_atomic(path, arrays)


def load_pending(path: str | os.PathLike[str]) -> PendingUpload | None:
    """Read a pending upload, or None when there is none.

    Raises
    ------
    StateFormatError
        The file exists but is not a pending upload.
    """
    target = Path(path)
    if not target.exists():
        return None
    try:
        with np.load(target, allow_pickle=False) as data:
            meta: Mapping[str, Any] = json.loads(bytes(data["meta"]).decode("utf-8"))
            if meta.get("format") != _FORMAT:
                raise StateFormatError(f"{str(target)!r} is not a pending upload")
            residual = {
                name: np.array(data[f"r{i}"], dtype=np.float32)
                for i, name in enumerate(meta["residual_names"])
            }
            return PendingUpload(
                idempotency_key=str(meta["idempotency_key"]),
                round_id=int(meta["round_id"]),
                base_version=int(meta["base_version"]),
                base_digest=str(meta["base_digest"]),
                num_examples=int(meta["num_examples"]),
                payload=bytes(data["payload"]),
                residual=residual,
                encoder_meta=dict(meta["encoder_meta"]),
            )
    except StateFormatError:
        raise
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise StateFormatError(f"{str(target)!r}: unreadable pending upload: {exc}") from exc
