"""NNCodec as a reference competitor: measured in its own interpreter, or published figures.

NNCodec (Fraunhofer HHI's MPEG NNR / DeepCABAC reference) is never a dependency of fedcodec: it
needs its own heavy environment. When the user points ``--nncodec-python`` at that
environment's interpreter, :func:`run_nncodec` writes the benchmark's integer levels to a
temporary directory and runs ``_nncodec_worker.py`` there in a subprocess, which codes exactly
those levels. Otherwise the benchmark prints :data:`PUBLISHED`, the figures measured on the same
data recipe in the project's NNCodec notes, clearly labelled as not measured here.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["PUBLISHED", "NNCodecFloats", "NNCodecRun", "PublishedRow", "run_nncodec"]

WORKER = Path(__file__).with_name("_nncodec_worker.py")


@dataclass(frozen=True)
class PublishedRow:
    """One published NNCodec measurement (URQ, lambda 0) on the synthetic sparse recipe.

    Attributes
    ----------
    density : float
        Fraction of nonzeros of the global top-k.
    step : float
        Quantization step (qp -46 on NNCodec's grid).
    nncodec_bytes : int
        NNCodec's container size.
    order0_bytes : int
        Order-0 entropy of those levels (their draw, not ours).
    bits_per_weight, bits_per_nonzero : float
        Rates.
    enc_mws, dec_mws : float
        Encode / decode speed in million weights per second (one thread, their machine).
    """

    density: float
    step: float
    nncodec_bytes: int
    order0_bytes: int
    bits_per_weight: float
    bits_per_nonzero: float
    enc_mws: float
    dec_mws: float


#: NNCodec 2.1.3, reference notes §4.1: 1,998,848 weights, Δ = 3.66e-4 (qp -46), median of 5
#: runs on a 2-vCPU Xeon. Same shapes, row scales and global top-k as this benchmark, but the
#: values were scaled to an overall std of exactly 1e-3 (about 0.55x this benchmark's values).
PUBLISHED: tuple[PublishedRow, ...] = (
    PublishedRow(0.10, 3.662109375e-4, 204_067, 217_653, 0.817, 8.17, 4.3, 19.7),
    PublishedRow(0.05, 3.662109375e-4, 112_072, 121_916, 0.449, 8.97, 9.3, 37.3),
    PublishedRow(0.01, 3.662109375e-4, 28_049, 31_437, 0.112, 11.23, 13.1, 44.3),
)

#: Number of weights behind :data:`PUBLISHED`.
PUBLISHED_NUMEL = 1_998_848


@dataclass(frozen=True)
class NNCodecRun:
    """NNCodec measured on one data set's levels.

    Attributes
    ----------
    nncodec_bytes : int or None
        Container size, or None when this set could not be coded (see ``error``).
    qp, qp_density : int or None
        NNCodec's grid point for the step.
    enc_s, dec_s : list of float
        Seconds of each encode / decode run (wall clock).
    deterministic : bool
        The same size in every run.
    decoded_equal : bool
        NNCodec decoded exactly ``level * step``.
    error : str or None
        Why the set was not coded.
    err_sq : float or None
        For a :class:`NNCodecFloats` set: the squared error of NNCodec's decoded tensors
        against the floats it was given (float64 sum); None for a set of levels.
    enc_cpu_s, dec_cpu_s : list of float
        CPU seconds of the coding thread in each encode / decode run (what the speed ratios
        against fedcodec use; empty when the worker did not measure them).
    """

    nncodec_bytes: int | None
    qp: int | None
    qp_density: int | None
    enc_s: list[float]
    dec_s: list[float]
    deterministic: bool
    decoded_equal: bool
    error: str | None = None
    err_sq: float | None = None
    enc_cpu_s: list[float] = field(default_factory=list)
    dec_cpu_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class NNCodecFloats:
    """A set of float tensors that NNCodec quantizes with its own quantizer.

    Attributes
    ----------
    name : str
        Key of the result.
    tensors : sequence of numpy.ndarray
        float32 tensors.
    step : float
        The step (on NNCodec's qp grid).
    use_dq : bool
        NNCodec's 8-state dependent quantization (DQ) instead of URQ.
    lambda_scale : float
        NNCodec's RD weight (0: plain rounding, or DQ's distortion-only trellis).
    """

    name: str
    tensors: Sequence[npt.NDArray[np.float32]]
    step: float
    use_dq: bool
    lambda_scale: float = 0.0


def _parse(d: dict[str, Any]) -> NNCodecRun:
    if "error" in d:
        return NNCodecRun(None, None, None, [], [], False, False, str(d["error"]))
    return NNCodecRun(
        nncodec_bytes=int(d["bytes"]),
        qp=int(d["qp"]),
        qp_density=int(d["qp_density"]),
        enc_s=[float(x) for x in d["enc_s"]],
        dec_s=[float(x) for x in d["dec_s"]],
        deterministic=bool(d["deterministic"]),
        decoded_equal=bool(d["decoded_equal"]),
        err_sq=None if d.get("err_sq") is None else float(d["err_sq"]),
        enc_cpu_s=[float(x) for x in d.get("enc_cpu_s", [])],
        dec_cpu_s=[float(x) for x in d.get("dec_cpu_s", [])],
    )


def run_nncodec(
    python: str,
    sets: Sequence[tuple[str, Sequence[npt.NDArray[np.int32]], float]],
    *,
    repeats: int,
    floats: Sequence[NNCodecFloats] = (),
    timeout: float = 1800.0,
) -> tuple[dict[str, NNCodecRun], dict[str, Any]]:
    """Code the given levels (and float sets) with NNCodec in a subprocess.

    Parameters
    ----------
    python : str
        Interpreter of an environment where ``nncodec`` imports.
    sets : sequence of (name, levels, step)
        Data sets: int32 levels per tensor and the step they were quantized with.
    repeats : int
        Encode + decode runs per set (medians are taken by the caller).
    floats : sequence of NNCodecFloats, optional
        Float sets NNCodec quantizes itself (URQ or DQ); their runs carry ``err_sq``.
    timeout : float, optional
        Seconds before the subprocess is abandoned.

    Returns
    -------
    tuple of (dict, dict)
        Per set name its :class:`NNCodecRun`, and worker metadata (versions, import time).

    Raises
    ------
    RuntimeError
        If the worker fails; the message carries the end of its stderr.
    """
    with tempfile.TemporaryDirectory(prefix="fedcodec-nncodec-") as tmp:
        spec_sets = []
        for i, (name, levels, step) in enumerate(sets):
            npz = Path(tmp) / f"set{i}.npz"
            np.savez(npz, *[np.asarray(a, dtype=np.int32) for a in levels])
            spec_sets.append({"name": name, "npz": str(npz), "step": float(step)})
        for i, f in enumerate(floats):
            npz = Path(tmp) / f"float{i}.npz"
            np.savez(npz, *[np.asarray(a, dtype=np.float32) for a in f.tensors])
            spec_sets.append(
                {
                    "name": f.name,
                    "npz": str(npz),
                    "step": float(f.step),
                    "floats": True,
                    "use_dq": f.use_dq,
                    "lambda_scale": f.lambda_scale,
                }
            )
        spec = Path(tmp) / "spec.json"
        out = Path(tmp) / "out.json"
        spec.write_text(json.dumps({"repeats": repeats, "sets": spec_sets}), encoding="utf-8")
        proc = subprocess.run(
            [python, str(WORKER), str(spec), str(out)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=tmp,
        )
        if proc.returncode != 0 or not out.exists():
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"NNCodec worker failed (exit {proc.returncode}):\n{tail}")
        result = json.loads(out.read_text(encoding="utf-8"))
    runs = {name: _parse(d) for name, d in result["sets"].items()}
    meta = {k: v for k, v in result.items() if k != "sets"}
    return runs, meta
