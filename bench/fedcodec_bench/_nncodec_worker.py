"""Code given integer levels with NNCodec; runs in NNCodec's own Python environment.

This file is executed as a script by *another* interpreter (``--nncodec-python``), one that has
NNCodec installed; it must therefore import nothing from fedcodec, only the standard library,
numpy and nncodec. fedcodec never imports it.

Usage::

    PYTHON _nncodec_worker.py SPEC.json OUT.json

``SPEC.json`` holds ``{"repeats": int, "sets": [{"name": str, "npz": path, "step": float}]}``;
each ``.npz`` holds the int32 levels of one data set as arrays ``arr_0, arr_1, ...`` in order. For
each set the worker finds NNCodec's ``(qp, qp_density)`` whose step equals ``step`` exactly,
feeds NNCodec the float32 tensors ``level * step`` with plain rounding (URQ: no trellis,
``lambda_scale=0``, row skipping and parameter optimisation on), so that NNCodec quantizes
them back to exactly the given levels, and times ``compress`` and ``decompress``. The decoded
tensors must equal ``level * step`` bit for bit, which proves NNCodec coded the same levels.

A set with ``"floats": true`` (and optionally ``"use_dq"``, ``"lambda_scale"``) holds float32
tensors instead: NNCodec quantizes them itself at ``step`` with its own quantizer (URQ, or
with ``use_dq`` its 8-state dependent quantization), and the worker reports the squared error
of its decoded tensors (``err_sq``, float64) so the caller can place the point on an RD curve.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import statistics
import sys
import time
import types
from typing import Any

import numpy as np

_DENSITY_PREFERENCE = (2, 0, 1, 3, 4, 5, 6, 7)


def grid_step(qp: int, qp_density: int) -> float:
    """NNCodec's step for ``(qp, qp_density)``: ``(k + qp mod k) * 2**(floor(qp/k) - d)``.

    Parameters
    ----------
    qp : int
        Quantization parameter.
    qp_density : int
        ``d``; ``k = 2**d`` steps per octave.

    Returns
    -------
    float
        The step.
    """
    k = 1 << qp_density
    return float((k + qp % k) * 2.0 ** (qp // k - qp_density))


def find_qp(step: float) -> tuple[int, int] | None:
    """``(qp, qp_density)`` whose step equals ``step`` (to float32 precision), or None.

    Parameters
    ----------
    step : float
        Wanted step.

    Returns
    -------
    tuple of (int, int) or None
        The grid point, preferring NNCodec's default density 2.
    """
    target = float(np.float32(step))
    for d in _DENSITY_PREFERENCE:
        k = 1 << d
        octave = int(np.floor(np.log2(target)))
        for s in (octave - 1, octave, octave + 1):
            for m in range(k):
                qp = k * s + m
                if abs(grid_step(qp, d) / target - 1.0) < 1e-7:
                    return qp, d
    return None


class _Anything:
    """Accepts any call and any attribute; stands in for torchvision's dataset helpers."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __call__(self, *args: object, **kwargs: object) -> _Anything:
        return _Anything()

    def __getattr__(self, name: str) -> _Anything:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything()


def _placeholder_module(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)

    def getattr_(attr: str) -> type:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return type(attr, (_Anything,), {})

    mod.__getattr__ = getattr_  # type: ignore[method-assign]
    return mod


def import_nnc() -> Any:
    """Import ``nncodec.nnc``, with a placeholder torchvision if the real one cannot load.

    NNCodec imports torchvision only for dataset helpers that coding never uses, and the PyPI
    torchvision wheel does not import against a CPU-only torch.

    Returns
    -------
    module
        ``nncodec.nnc``.
    """
    importlib.import_module("torch")
    try:
        importlib.import_module("torchvision")
    except Exception:
        for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[key]
        top = _placeholder_module("torchvision")
        for sub in ("datasets", "transforms", "models"):
            m = _placeholder_module("torchvision." + sub)
            setattr(top, sub, m)
            sys.modules["torchvision." + sub] = m
        sys.modules["torchvision"] = top
    return importlib.import_module("nncodec.nnc")


def code_set(
    nnc: Any,
    arrays: list[np.ndarray],
    step: float,
    repeats: int,
    *,
    floats: bool = False,
    use_dq: bool = False,
    lambda_scale: float = 0.0,
) -> dict[str, Any]:
    """Code one data set with NNCodec ``repeats`` times.

    Parameters
    ----------
    nnc : module
        ``nncodec.nnc``.
    arrays : list of numpy.ndarray
        int32 levels per tensor; with ``floats``, float32 tensors to quantize.
    step : float
        The step (must lie on NNCodec's qp grid).
    repeats : int
        Number of encode + decode runs.
    floats : bool, optional
        The arrays are floats: NNCodec quantizes them with its own quantizer.
    use_dq : bool, optional
        With ``floats``: NNCodec's dependent (trellis-coded) quantization instead of URQ.
    lambda_scale : float, optional
        With ``floats``: NNCodec's RD weight (0: plain rounding / distortion-only trellis).

    Returns
    -------
    dict
        ``bytes``, ``qp``, ``qp_density``, ``enc_s``/``dec_s`` (lists of seconds),
        ``deterministic``, ``decoded_equal`` (levels only: the decode is ``level * step``),
        ``err_sq`` (floats only: squared error of the decode); or ``error`` when the step is
        off the grid.
    """
    grid = find_qp(step)
    if grid is None:
        return {"error": f"step {step!r} is not on NNCodec's qp grid"}
    qp, d = grid
    s32 = np.float32(step)
    tensors: dict[str, np.ndarray] = {}
    for i, lv in enumerate(arrays):
        a = np.asarray(lv, np.float32) if floats else lv.astype(np.float32) * s32
        tensors[f"layer{i}.weight"] = a.reshape(1, -1) if a.ndim < 2 else a
    kwargs: dict[str, Any] = {
        "bitstream_path": None,
        "qp": qp,
        "qp_density": d,
        "nonweight_qp": qp,
        "qp_per_tensor": dict.fromkeys(tensors, qp),
        "use_dq": bool(use_dq and floats),
        "lambda_scale": float(lambda_scale) if floats else 0.0,
        "row_skipping": True,
        "param_opt": True,
        "return_bitstream": True,
        "verbose": False,
    }
    enc_s: list[float] = []
    dec_s: list[float] = []
    enc_cpu_s: list[float] = []
    dec_cpu_s: list[float] = []
    sizes: set[int] = set()
    equal = True
    err_sq = 0.0
    for _ in range(max(1, repeats)):
        gc.collect()
        c0, t0 = time.thread_time(), time.perf_counter()
        bs = bytearray(nnc.compress(tensors, **kwargs))
        c1, t1 = time.thread_time(), time.perf_counter()
        rec = nnc.decompress(bs)
        c2, t2 = time.thread_time(), time.perf_counter()
        enc_s.append(t1 - t0)
        dec_s.append(t2 - t1)
        # CPU seconds of this thread (NNCodec codes on one thread): per-core speed
        # unaffected by preemption on a shared machine.
        enc_cpu_s.append(c1 - c0)
        dec_cpu_s.append(c2 - c1)
        sizes.add(len(bs))
        err_sq = 0.0
        for name, a in tensors.items():
            got = np.asarray(rec[name], dtype=np.float32).reshape(a.shape)
            if floats:
                err_sq += float(np.square(got.astype(np.float64) - a.astype(np.float64)).sum())
            elif not np.array_equal(got, a):
                equal = False
    out: dict[str, Any] = {
        "bytes": min(sizes),
        "qp": qp,
        "qp_density": d,
        "enc_s": enc_s,
        "dec_s": dec_s,
        "enc_cpu_s": enc_cpu_s,
        "dec_cpu_s": dec_cpu_s,
        "enc_s_median": statistics.median(enc_s),
        "dec_s_median": statistics.median(dec_s),
        "deterministic": len(sizes) == 1,
        "decoded_equal": equal and not floats,
    }
    if floats:
        out["err_sq"] = err_sq
    return out


def main(argv: list[str]) -> int:
    """Run the worker: read the spec, code every set, write the results.

    Parameters
    ----------
    argv : list of str
        ``[SPEC.json, OUT.json]``.

    Returns
    -------
    int
        Exit status.
    """
    # The script's own folder (fedcodec_bench) is sys.path[0]; keep it from shadowing packages.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    if len(argv) != 2:
        print("usage: _nncodec_worker.py SPEC.json OUT.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as fh:
        spec = json.load(fh)
    t0 = time.perf_counter()
    nnc = import_nnc()
    version = "unknown"
    try:
        from importlib.metadata import version as _v

        version = _v("nncodec")
    except Exception:
        pass
    out: dict[str, Any] = {
        "nncodec_version": version,
        "numpy_version": np.__version__,
        "import_s": time.perf_counter() - t0,
        "sets": {},
    }
    for s in spec["sets"]:
        with np.load(s["npz"], allow_pickle=False) as z:
            levels = [np.asarray(z[f"arr_{i}"]) for i in range(len(z.files))]
        out["sets"][s["name"]] = code_set(
            nnc,
            levels,
            float(s["step"]),
            int(spec["repeats"]),
            floats=bool(s.get("floats", False)),
            use_dq=bool(s.get("use_dq", False)),
            lambda_scale=float(s.get("lambda_scale", 0.0)),
        )
    with open(argv[1], "w", encoding="utf-8") as fh:
        json.dump(out, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
