"""Unit tests of the codec benchmark's building blocks: data, quantizer, entropy, baselines."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from fedcodec_bench import _nncodec_worker as worker
from fedcodec_bench import baselines as bl
from fedcodec_bench.data import (
    FULL_SHAPES,
    QUICK_SHAPES,
    dense_update,
    density_label,
    global_topk,
    make_datasets,
    quantize,
)

SMALL = ((64, 32), (16, 48))


def test_shapes_match_the_recipe() -> None:
    assert sum(r * c for r, c in FULL_SHAPES) == 1_998_848
    assert sum(r * c for r, c in QUICK_SHAPES) * 4 == 1_998_848


def test_dense_update_is_deterministic() -> None:
    a = dense_update(SMALL, seed=7)
    b = dense_update(SMALL, seed=7)
    c = dense_update(SMALL, seed=8)
    assert [x.shape for x in a] == list(SMALL)
    assert all(x.dtype == np.float32 and x.flags.c_contiguous for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_dense_update_statistics() -> None:
    # numpy Laplace scale b has std b*sqrt(2); log-normal(0, 0.5) rows add E[r^2] = e^0.5.
    (x,) = dense_update([(2000, 500)], scale=1e-3, row_sigma=0.5, seed=0)
    expected_std = 1e-3 * math.sqrt(2.0) * math.exp(0.25)
    assert float(x.std()) == pytest.approx(expected_std, rel=0.05)
    row_std = x.std(axis=1)
    assert float(row_std.max() / row_std.min()) > 3.0  # rows really differ in scale


@pytest.mark.parametrize("density", [0.0, 0.0001, 0.01, 0.1, 1.0])
def test_global_topk_keeps_exactly_the_largest(density: float) -> None:
    base = dense_update(SMALL, seed=1)
    kept = global_topk(base, density)
    n = sum(x.size for x in base)
    k = round(density * n)
    assert sum(int(np.count_nonzero(x)) for x in kept) == k
    flat_base = np.concatenate([x.ravel() for x in base])
    flat_kept = np.concatenate([x.ravel() for x in kept])
    mask = flat_kept != 0
    assert np.array_equal(flat_kept[mask], flat_base[mask])  # values untouched
    if 0 < k < n:
        assert float(np.abs(flat_base[mask]).min()) >= float(np.abs(flat_base[~mask]).max())


def test_global_topk_is_global_not_per_tensor() -> None:
    small = np.full((4, 4), 1e-6, dtype=np.float32)
    big = np.full((4, 4), 1.0, dtype=np.float32)
    kept = global_topk([small, big], 0.5)
    assert np.count_nonzero(kept[0]) == 0
    assert np.count_nonzero(kept[1]) == 16


def test_global_topk_rejects_bad_density() -> None:
    with pytest.raises(ValueError, match="density"):
        global_topk([np.zeros((2, 2), np.float32)], 1.5)


def test_quantize_rounds_half_away_from_zero() -> None:
    step = 0.25  # exact in binary, so the halves are exact
    w = np.array([[0.0, 0.125, -0.125, 0.375, -0.375, 0.1, -0.2, 1.0]], dtype=np.float32)
    (q,) = quantize([w], step)
    assert q.dtype == np.int32
    assert q.tolist() == [[0, 1, -1, 2, -2, 0, -1, 4]]


def test_quantize_error_is_at_most_half_a_step() -> None:
    base = dense_update(SMALL, seed=3)
    step = 3.662109375e-4
    for w, q in zip(base, quantize(base, step), strict=True):
        assert float(np.abs(w.astype(np.float64) - q * step).max()) <= step / 2 * (1 + 1e-9)


def test_quantize_rejects_bad_step() -> None:
    with pytest.raises(ValueError, match="step"):
        quantize([np.zeros((2, 2), np.float32)], 0.0)


def test_make_datasets_labels_and_steps() -> None:
    sets = make_datasets([0.01, 0.001], shapes=SMALL, sparse_step=1e-3, dense_step=2e-3, seed=0)
    assert [s.name for s in sets] == ["sparse-1%", "sparse-0.1%", "dense"]
    assert [s.step for s in sets] == [1e-3, 1e-3, 2e-3]
    assert sets[-1].density is None
    assert sets[0].nonzeros == round(0.01 * sets[0].numel)
    # every sparse set is a top-k of the dense one
    for s in sets[:-1]:
        for sparse, dense in zip(s.tensors, sets[-1].tensors, strict=True):
            nz = sparse != 0
            assert np.array_equal(sparse[nz], dense[nz])
    assert density_label(0.0001) == "sparse-0.01%"
    assert density_label(None) == "dense"


def test_entropy_of_known_distributions() -> None:
    uniform4 = np.repeat(np.arange(4, dtype=np.int32), 250)
    assert bl.entropy_bits(uniform4) == pytest.approx(2.0 * 1000)
    assert bl.entropy_bits(np.full(100, 7, dtype=np.int32)) == 0.0
    assert bl.entropy_bits(np.zeros(0, dtype=np.int32)) == 0.0
    bern = np.array([1] * 250 + [0] * 750, dtype=np.int32)
    h = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    assert bl.entropy_bits(bern) == pytest.approx(1000 * h)
    # a wide range goes through np.unique instead of bincount: same answer
    wide = np.array([-(2**30), 2**30, 0, 0], dtype=np.int64)
    assert bl.entropy_bits(wide) == pytest.approx(4 * 1.5)


def test_order0_and_iid_bounds() -> None:
    a = np.zeros(1000, dtype=np.int32)
    b = np.ones(1000, dtype=np.int32)
    # each tensor alone is constant (0 bits), together they are a fair coin
    assert bl.iid_ideal_bytes([a, b]) == 0.0
    assert bl.order0_bytes([a, b]) == pytest.approx(2000 / 8)
    rng = np.random.default_rng(0)
    lv: list[npt.NDArray[np.integer]] = [
        rng.integers(-3, 4, size=500).astype(np.int32),
        rng.integers(0, 2, size=300).astype(np.int64),
    ]
    assert bl.iid_ideal_bytes(lv) <= bl.order0_bytes(lv) + 1e-9


@pytest.mark.parametrize(
    ("lo", "hi", "dtype"),
    [
        (0, 0, np.int8),
        (-128, 127, np.int8),
        (-129, 0, np.int16),
        (0, 128, np.int16),
        (-32768, 32767, np.int16),
        (0, 32768, np.int32),
        (-(2**31), 0, np.int32),
        (0, 2**31, np.int64),
    ],
)
def test_narrowest_int_dtype(lo: int, hi: int, dtype: type) -> None:
    arr = np.array([lo, hi], dtype=np.int64)
    assert bl.narrowest_int_dtype([arr]) == np.dtype(dtype)
    assert bl.narrowest_int_dtype(arr) == np.dtype(dtype)


def test_narrowest_int_dtype_empty_and_concat() -> None:
    assert bl.narrowest_int_dtype([np.zeros(0, dtype=np.int32)]) == np.dtype(np.int8)
    a = np.array([[1, -2], [3, -4]], dtype=np.int32)
    b = np.array([300], dtype=np.int32)
    raw = bl.concat_narrow([a, b])
    assert np.frombuffer(raw, dtype=np.int16).tolist() == [1, -2, 3, -4, 300]


def test_measure_baselines_fields() -> None:
    lv = [np.zeros((100, 100), dtype=np.int32), np.eye(50, dtype=np.int32)]
    b = bl.measure_baselines(lv, with_zstd=bl.zstd_available())
    assert b.int_dtype == "int8"
    assert b.raw_bytes == 100 * 100 + 50 * 50
    assert 0 < b.lzma9_bytes < b.raw_bytes
    if bl.zstd_available():
        assert b.zstd19_bytes is not None
        assert 0 < b.zstd19_bytes < b.raw_bytes
    assert b.iid_bytes <= b.order0_bytes


def test_nncodec_grid() -> None:
    assert worker.grid_step(-46, 2) == 3.662109375e-4
    assert worker.grid_step(-42, 2) == 7.32421875e-4
    assert worker.grid_step(-32, 2) == 2.0**-8
    assert worker.find_qp(3.662109375e-4) == (-46, 2)
    assert worker.find_qp(2.0**-8) == (-32, 2)
    assert worker.find_qp(3.7e-4) is None  # not on any grid


def test_worker_imports_only_stdlib_and_numpy() -> None:
    # The worker runs in NNCodec's own interpreter, where fedcodec is not installed.
    tree = ast.parse(Path(worker.__file__).read_text(encoding="utf-8"))
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module.split(".")[0])
    assert "fedcodec" not in mods
    allowed = {"__future__", "gc", "importlib", "json", "os", "statistics", "sys", "time"}
    allowed |= {"types", "typing", "numpy"}
    assert mods <= allowed
