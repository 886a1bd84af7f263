"""The FL baselines' bit codes and compressors: known code words, round trips, byte counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedcodec_bench import bitcodes as bc
from fedcodec_bench import compressors as cp


def _bits_of(data: bytes, nbits: int) -> str:
    return "".join(format(b, "08b") for b in data)[:nbits]


@pytest.mark.parametrize(
    ("x", "word"),
    [(1, "1"), (2, "010"), (3, "011"), (4, "00100"), (5, "00101"), (9, "0001001")],
)
def test_gamma_known_words(x: int, word: str) -> None:
    assert bc.gamma_word(x) == word
    assert bc.gamma_bits([x]) == len(word)


@pytest.mark.parametrize(("x", "word"), [(1, "1"), (2, "0100"), (5, "01101"), (16, "001010000")])
def test_delta_known_words(x: int, word: str) -> None:
    assert bc.delta_word(x) == word
    assert bc.delta_bits([x]) == len(word)


@pytest.mark.parametrize(
    ("x", "k", "word"), [(0, 0, "0"), (3, 0, "1110"), (5, 2, "1001"), (9, 3, "10001")]
)
def test_rice_known_words(x: int, k: int, word: str) -> None:
    assert bc.rice_word(x, k) == word
    assert bc.rice_bits([x], k) == len(word)


def test_stream_layout_is_prefixes_then_suffixes() -> None:
    w = bc.BitWriter()
    w.gamma([5, 1, 2])  # 00101, 1, 010 -> prefixes 001 1 01, suffixes 01 . 0
    assert w.nbits == 5 + 1 + 3
    assert _bits_of(w.getvalue(), w.nbits) == "001" + "1" + "01" + "01" + "0"
    w = bc.BitWriter()
    w.rice([5, 9], 2)  # 10|01, 110|01
    assert _bits_of(w.getvalue(), w.nbits) == "10" + "110" + "01" + "01"


def test_streams_round_trip_and_cost_exactly_the_word_lengths() -> None:
    rng = np.random.default_rng(0)
    g = rng.geometric(0.01, 500)
    w = bc.BitWriter()
    w.gamma(g)
    w.delta(g)
    k = bc.best_rice_parameter(g - 1)
    w.rice(g - 1, k)
    w.uint([7, 1023], 10)
    w.bits([1, 0, 1])
    expect = (
        sum(len(bc.gamma_word(int(v))) for v in g)
        + sum(len(bc.delta_word(int(v))) for v in g)
        + sum(len(bc.rice_word(int(v) - 1, k)) for v in g)
        + 23
    )
    assert w.nbits == expect
    data = w.getvalue()
    assert len(data) == math.ceil(expect / 8)
    r = bc.BitReader(data)
    assert np.array_equal(r.gamma(500), g)
    assert np.array_equal(r.delta(500), g)
    assert np.array_equal(r.rice(500, k), g - 1)
    assert r.uint(2, 10).tolist() == [7, 1023]
    assert r.bits(3).tolist() == [1, 0, 1]


def test_best_rice_parameter_is_the_cheapest() -> None:
    x = np.random.default_rng(1).geometric(1 / 60, 300) - 1
    k = bc.best_rice_parameter(x)
    assert all(bc.rice_bits(x, k) <= bc.rice_bits(x, j) for j in range(20))


def test_uvarints() -> None:
    vals = [0, 1, 127, 128, 300, 2**21, 2**40]
    data = bc.uvarint_array(vals)
    assert data == b"".join(bc.uvarint(v) for v in vals)
    assert bc.uvarint(300) == b"\xac\x02"
    got, end = bc.read_uvarint_array(data + b"\x05", 0, len(vals))
    assert got.tolist() == vals
    assert end == len(data)
    assert bc.read_uvarint(b"\xac\x02", 0) == (300, 2)


def test_truncated_streams_raise() -> None:
    w = bc.BitWriter()
    w.gamma([1000, 2000])
    with pytest.raises(ValueError, match="truncated"):
        bc.BitReader(w.getvalue()[:1]).gamma(2)


SHAPES = [(40, 30), (30,), (10, 40), (10,)]
NUMEL = sum(math.prod(s) for s in SHAPES)


def _tensors(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.laplace(0, 1e-3, s)).astype(np.float32) for s in SHAPES]


def test_float32_is_exact_at_4_bytes_per_weight() -> None:
    t = _tensors()
    c = cp.Float32()
    data = c.encode(t, np.random.default_rng(0))
    assert len(data) == 4 * NUMEL
    for a, b in zip(c.decode(data, SHAPES), t, strict=True):
        assert np.array_equal(a, b)


def test_float16_costs_2_bytes_per_weight() -> None:
    t = _tensors()
    c = cp.Float16()
    data = c.encode(t, np.random.default_rng(0))
    assert len(data) == 2 * NUMEL
    for a, b in zip(c.decode(data, SHAPES), t, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-7)


def test_uniform8_bytes_and_error_bound() -> None:
    t = _tensors()
    c = cp.Uniform8()
    data = c.encode(t, np.random.default_rng(0))
    assert len(data) == NUMEL + 8 * len(SHAPES)
    for a, b in zip(c.decode(data, SHAPES), t, strict=True):
        half_step = (float(b.max()) - float(b.min())) / 255 / 2
        assert float(np.abs(a - b).max()) <= half_step * 1.001 + 1e-9


def test_topk_zstd_keeps_exactly_k_values() -> None:
    pytest.importorskip("zstandard")
    t = _tensors()
    c = cp.TopKZstd(0.05)
    data = c.encode(t, np.random.default_rng(0))
    dec = c.decode(data, SHAPES)
    flat = np.concatenate([x.ravel() for x in t])
    got = np.concatenate([x.ravel() for x in dec])
    k = math.ceil(0.05 * NUMEL)
    assert np.count_nonzero(got) == k
    kept = got != 0
    assert np.array_equal(got[kept], flat[kept])  # float32 values exact
    assert float(np.abs(flat[~kept]).max()) <= float(np.abs(flat[kept]).min())
    assert len(data) < 8 * k  # varint gaps + float32 values, then zstd


def test_stc_is_ternary_per_tensor_and_its_size_is_the_golomb_bits() -> None:
    t = _tensors()
    c = cp.STC(0.02)
    data = c.encode(t, np.random.default_rng(0))
    dec = c.decode(data, SHAPES)
    nbits = 0
    for a, b in zip(dec, t, strict=True):
        k = max(1, math.ceil(0.02 * b.size))
        nz = np.flatnonzero(a.ravel())
        assert nz.size == k
        mags = np.unique(np.abs(a.ravel()[nz]))
        assert mags.size == 1
        np.testing.assert_allclose(mags[0], np.abs(b.ravel()[nz]).mean(), rtol=1e-6)
        assert np.array_equal(np.sign(a.ravel()[nz]), np.sign(b.ravel()[nz]))
        gaps = np.diff(nz, prepend=-1) - 1
        kr = bc.best_rice_parameter(gaps)
        nbits += bc.gamma_bits([k + 1]) + 32 + 5 + bc.rice_bits(gaps, kr) + k
    assert len(data) == math.ceil(nbits / 8)


def test_qsgd_is_unbiased_and_levels_are_on_the_grid() -> None:
    t = _tensors()
    c = cp.QSGD(4, bucket=128)
    rng = np.random.default_rng(3)
    runs = [c.decode(c.encode(t, rng), SHAPES) for _ in range(300)]
    mean = [np.mean([r[i] for r in runs], axis=0) for i in range(len(SHAPES))]
    for m, x in zip(mean, t, strict=True):
        err = float(np.abs(m - x).max())
        assert err < 0.25 * float(np.abs(x).max())
    one = runs[0][0].ravel()
    flat = t[0].ravel().astype(np.float64)
    norms = [np.linalg.norm(flat[i : i + 128]) for i in range(0, flat.size, 128)]
    for i in np.flatnonzero(one):
        lvl = abs(float(one[i])) / norms[i // 128] * 4
        assert abs(lvl - round(lvl)) < 1e-4
        assert 1 <= round(lvl) <= 4


def test_qsgd_byte_count_matches_its_elias_code() -> None:
    t = _tensors()
    c = cp.QSGD(2, bucket=256)
    data = c.encode(t, np.random.default_rng(5))
    dec = c.decode(data, SHAPES)
    nbits = 0
    for a, x in zip(dec, t, strict=True):
        flat = a.ravel()
        nz = np.flatnonzero(flat)
        nb = -(-flat.size // 256)
        src = x.ravel().astype(np.float64)
        norms = np.array([np.linalg.norm(src[i : i + 256]) for i in range(0, flat.size, 256)])
        levels = np.rint(np.abs(flat[nz]) / norms[nz // 256] * 2).astype(int)
        nbits += bc.gamma_bits([nz.size + 1]) + 32 * nb
        if nz.size:
            nbits += bc.gamma_bits(np.diff(nz, prepend=-1)) + nz.size + bc.gamma_bits(levels)
    assert len(data) == math.ceil(nbits / 8)


@pytest.mark.parametrize(
    "codec", [cp.Float32(), cp.Float16(), cp.Uniform8(), cp.STC(0.01), cp.QSGD(1)], ids=str
)
def test_all_zero_tensors_round_trip(codec: cp.UpdateCompressor) -> None:
    z = [np.zeros(s, np.float32) for s in SHAPES]
    dec = codec.decode(codec.encode(z, np.random.default_rng(0)), SHAPES)
    assert all(not d.any() for d in dec)
