"""The trellis and dithered quantizers through the Python API: round trips
(recon == decode bit for bit, the documented reconstruction rules), options,
seeds, unbiasedness, zeros, and the trellis's bytes at equal SNR."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fedcodec

QUANTIZERS = ["trellis", "trellis8", "dither"]
MODES = ["auto", "dense", "grouped", "runs"]

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12)
values = st.one_of(st.just(0.0), st.floats(-10.0, 10.0, width=32))
float_tensors = hnp.arrays(np.float32, shapes, elements=values)


def bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)


def laplace(shape: tuple[int, ...], seed: int, keep: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.laplace(0.0, 0.01, size=shape).astype(np.float32)
    if keep < 1.0:
        cut = np.quantile(np.abs(x), 1.0 - keep)
        x[np.abs(x) < cut] = 0.0
    return x


def options(quantizer: str, seed: int = 7) -> dict[str, object]:
    if quantizer == "dither":
        return {"quantizer": quantizer, "dither_seed": seed}
    return {"quantizer": quantizer, "lam": 0.1155}


def expected_values(data: bytes, levels: list[tuple[np.ndarray, float]]) -> list[np.ndarray]:
    """The documented reconstruction, from decode_levels and inspect."""
    out = []
    for position, (info, (lv, step)) in enumerate(zip(fedcodec.inspect(data), levels, strict=True)):
        v = lv.astype(np.float32) * np.float32(step)
        if info.quantizer == "dither":
            assert info.dither_seed is not None
            v = v - fedcodec.dither_values(info.dither_seed, position, info.shape, step)
        out.append(v)
    return out


@given(
    tensors=st.lists(float_tensors, min_size=1, max_size=3),
    quantizer=st.sampled_from(QUANTIZERS),
    mode=st.sampled_from(MODES),
    S=st.integers(0, 200),
)
def test_roundtrip_recon_equals_decode(
    tensors: list[np.ndarray], quantizer: str, mode: str, S: int
) -> None:
    result = fedcodec.encode(tensors, S=S, mode=mode, return_recon=True, **options(quantizer))
    decoded = fedcodec.decode(result.data)
    assert result.recon is not None
    for want, got, original in zip(result.recon, decoded, tensors, strict=True):
        assert got.shape == original.shape
        np.testing.assert_array_equal(bits(got), bits(want))
    for got, want in zip(
        decoded, expected_values(result.data, fedcodec.decode_levels(result.data)), strict=True
    ):
        np.testing.assert_array_equal(bits(got), bits(want))
    for info in fedcodec.inspect(result.data):
        assert info.quantizer == quantizer
        assert info.dither_seed == (7 if quantizer == "dither" else None)


@pytest.mark.parametrize("quantizer", QUANTIZERS)
@pytest.mark.parametrize("keep", [1.0, 0.1, 0.01])
def test_bit_exact_across_threads_and_slices(quantizer: str, keep: float) -> None:
    x = laplace((200, 300), 1, keep)
    a = fedcodec.encode([x], S=64, threads=1, slice_elems=9000, **options(quantizer))
    b = fedcodec.encode([x], S=64, threads=2, slice_elems=9000, **options(quantizer))
    assert a.data == b.data
    # (a sparse tensor gets fewer slices: each should carry ~4 KB)
    assert a.stats[0].slices > 1 or keep < 0.1


@pytest.mark.parametrize("quantizer", ["trellis", "trellis8"])
def test_trellis_keeps_exact_zeros(quantizer: str) -> None:
    x = laplace((64, 256), 2, keep=0.05)
    levels, _ = fedcodec.decode_levels(fedcodec.encode([x], S=64, quantizer=quantizer).data)[0]
    assert not np.any(levels[x == 0.0])
    assert np.count_nonzero(levels) > 0


@pytest.mark.parametrize("quantizer", ["trellis", "trellis8"])
def test_trellis_levels_are_reconstruction_indices(quantizer: str) -> None:
    x = laplace((32, 64), 3)
    result = fedcodec.encode([x], S=32, return_recon=True, quantizer=quantizer)
    levels, step = fedcodec.decode_levels(result.data)[0]
    assert result.recon is not None
    np.testing.assert_array_equal(
        bits(levels.astype(np.float32) * np.float32(step)), bits(result.recon[0])
    )
    # Re-coding the indices as plain levels reproduces the reconstruction.
    again = fedcodec.decode(fedcodec.encode_levels([levels], step).data)[0]
    np.testing.assert_array_equal(bits(again), bits(result.recon[0]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dither_accumulates_every_element(dtype: type) -> None:
    x = laplace((40, 50), 4, keep=0.05)  # mostly zero levels
    data = fedcodec.encode([x], S=16, quantizer="dither", dither_seed=11).data
    decoded = fedcodec.decode(data)[0]
    assert np.all(decoded != 0.0)  # zero levels reconstruct to -u
    acc = np.full(x.shape, 2.0, dtype=dtype)
    fedcodec.decode_accumulate(data, [acc], weight=0.5)
    want = (2.0 + 0.5 * decoded.astype(np.float64)).astype(dtype)
    np.testing.assert_array_equal(acc, want)


def test_dither_error_is_unbiased_and_uniform() -> None:
    step = 0.01
    x = np.full(100_000, 0.3 * step, dtype=np.float32)  # between two levels
    dithered = fedcodec.encode([x], step=step, quantizer="dither", dither_seed=1, return_recon=True)
    rounded = fedcodec.encode([x], step=step, return_recon=True)
    assert dithered.recon is not None
    assert rounded.recon is not None
    err = dithered.recon[0].astype(np.float64) - x
    assert abs(err.mean()) < 0.01 * step  # sd of the mean: step / sqrt(12 * 1e5) ~ 0.001 step
    assert abs(err.var() - step**2 / 12) < 0.02 * step**2 / 12
    assert np.abs(err).max() <= 0.5 * step * (1 + 1e-6)
    # plain rounding maps every weight to 0: a bias of the whole value
    assert np.all(rounded.recon[0] == 0.0)


def test_dither_error_does_not_depend_on_the_input() -> None:
    step = 0.02
    rng = np.random.default_rng(5)
    x = rng.normal(0.0, 0.05, size=200_000).astype(np.float32)
    r = fedcodec.encode([x], step=step, quantizer="dither", dither_seed=3, return_recon=True)
    assert r.recon is not None
    err = r.recon[0].astype(np.float64) - x
    # the error is uncorrelated with the input and with its position in the cell
    assert abs(np.corrcoef(err, x)[0, 1]) < 0.01
    frac = x / step - np.round(x / step)
    assert abs(np.corrcoef(err, frac)[0, 1]) < 0.01


def test_dither_values_match_the_container() -> None:
    x = laplace((10, 30), 6)
    r = fedcodec.encode({"a": x, "b": x}, S=32, quantizer="dither", dither_seed=2**64 - 1)
    infos = fedcodec.inspect(r.data)
    assert [i.dither_seed for i in infos] == [2**64 - 1] * 2
    u0 = fedcodec.dither_values(2**64 - 1, 0, x.shape, infos[0].step)
    u1 = fedcodec.dither_values(2**64 - 1, 1, x.shape, infos[1].step)
    assert u0.shape == x.shape
    assert u0.dtype == np.float32
    assert not np.array_equal(u0, u1)  # tensors get their own dither
    assert np.all(np.abs(u0) < infos[0].step / 2)


def test_dither_seed_helper() -> None:
    seeds = {fedcodec.dither_seed(r, c) for r in range(20) for c in range(20)}
    assert len(seeds) == 400
    assert fedcodec.dither_seed(3, 4) == fedcodec.dither_seed(3, 4)
    assert fedcodec.dither_seed(3, 4) != fedcodec.dither_seed(4, 3)
    assert fedcodec.dither_seed(3, 4, salt=1) != fedcodec.dither_seed(3, 4)
    assert all(0 <= s < 2**64 for s in seeds)
    with pytest.raises(fedcodec.InvalidParameterError):
        fedcodec.dither_seed(-1, 0)


def test_option_errors() -> None:
    x = laplace((4, 5), 7)
    with pytest.raises(fedcodec.InvalidParameterError, match="needs a dither_seed"):
        fedcodec.encode([x], quantizer="dither")
    with pytest.raises(fedcodec.InvalidParameterError, match="lam must be 0"):
        fedcodec.encode([x], quantizer="dither", dither_seed=1, lam=0.1)
    with pytest.raises(fedcodec.InvalidParameterError, match="applies to"):
        fedcodec.encode([x], dither_seed=1)
    with pytest.raises(fedcodec.InvalidParameterError, match="quantizer must be one of"):
        fedcodec.encode([x], quantizer="tcq")  # type: ignore[arg-type]
    with pytest.raises(fedcodec.InvalidParameterError, match="dither_seed"):
        fedcodec.encode([x], quantizer="dither", dither_seed=2**64)


def test_uniform_containers_are_unchanged() -> None:
    """A uniform encode carries no seed and no quantizer byte (the 0.1 format)."""
    x = laplace((16, 16), 8)
    data = fedcodec.encode([x], S=32).data
    assert data[5] == 0
    assert fedcodec.inspect(data)[0].quantizer == "uniform"
    assert fedcodec.inspect(data)[0].dither_seed is None


def _snr_db(x: np.ndarray, recon: np.ndarray) -> float:
    x64 = x.astype(np.float64)
    return float(10 * np.log10(np.sum(x64**2) / np.sum((x64 - recon) ** 2)))


@pytest.mark.parametrize("quantizer", ["trellis", "trellis8"])
def test_trellis_fewer_bytes_at_equal_snr_on_dense_data(quantizer: str) -> None:
    """The trellis's RD point lies below uniform RDOQ's curve (log-linear
    interpolation between neighbouring RDOQ points)."""
    x = laplace((256, 512), 9)
    points = []
    for S in (16, 24, 32, 48, 64, 96, 128):
        r = fedcodec.encode([x], S=S, lam=0.1155, return_recon=True)
        assert r.recon is not None
        points.append((_snr_db(x, r.recon[0]), np.log(len(r.data))))
    snr, logb = np.array(points).T
    t = fedcodec.encode([x], S=128, quantizer=quantizer, lam=0.1155, return_recon=True)
    assert t.recon is not None
    t_snr = _snr_db(x, t.recon[0])
    assert snr.min() < t_snr < snr.max()
    rdoq_bytes = float(np.exp(np.interp(t_snr, snr, logb)))
    assert len(t.data) < 0.985 * rdoq_bytes


@pytest.mark.parametrize("quantizer", ["trellis", "trellis8"])
def test_window_auto_searches_the_trellis_under_window_set_4(quantizer: str) -> None:
    """With window_set="auto" a trellis tensor is searched and first coded under window set 4
    (steadier rates than set 0's fast estimators; docs/quantizers.md, "Closing the gap"): its
    levels are those of an encode at set 4, whichever set then codes it, while uniform RDOQ
    keeps set 0's levels."""
    x = laplace((128, 512), 11)

    def levels(**kw: Any) -> np.ndarray:
        r = fedcodec.encode([x], S=64, lam=0.1155, threads=1, **kw)
        return np.asarray(fedcodec.decode_levels(r.data)[0][0])

    auto = levels(quantizer=quantizer)
    set0 = levels(quantizer=quantizer, window_set=0)
    set4 = levels(quantizer=quantizer, window_set=4)
    assert not np.array_equal(set0, set4)  # the search's window set matters on this data
    np.testing.assert_array_equal(auto, set4)
    np.testing.assert_array_equal(levels(), levels(window_set=0))


def test_rdoq_keeps_one_magnitude_rows_of_an_embedding_table() -> None:
    # An AdamW-like embedding update at a coarse step: empty rows, rows that move by one
    # magnitude (0.62 steps) in every column, broad rows. The encoder codes such a slice with
    # and without ROWKIND; under RD quantization the two hold different levels (without
    # ROWKIND the quantizer zeroes the one-magnitude rows, far fewer bytes at far more
    # distortion), so it keeps the one with the lower D + lambda R, not the smaller one.
    rng = np.random.default_rng(5)
    step = 1.0
    x = np.zeros((400, 64), np.float32)
    kind = rng.integers(0, 10, size=400)
    for r in range(400):
        if kind[r] < 4:
            x[r] = 0.62 * step * rng.choice([-1.0, 1.0], size=64)
        elif kind[r] < 6:
            x[r] = rng.laplace(0.0, 1.5 * step, size=64)
    const = kind < 4
    res = fedcodec.encode([x], step=step, lam=0.1155, return_recon=True)
    recon = np.asarray(res.recon[0])
    levels = fedcodec.decode_levels(res.data)[0][0]
    # the one-magnitude rows keep their rounded levels (+-1 step), reconstructed to the
    # row's value on the 1/16-step ROWFINE grid (0.625 steps)
    np.testing.assert_array_equal(levels[const], np.sign(x[const]))
    np.testing.assert_array_equal(recon[const], np.sign(x[const]) * np.float32(0.625 * step))
    # the broad rows are RD-quantized as usual (some values rounded down or to zero)
    assert np.count_nonzero(recon[~const]) < np.count_nonzero(np.rint(x[~const] / step))
    np.testing.assert_array_equal(recon[~const], levels[~const] * np.float32(step))


@pytest.mark.parametrize("lam", [0.0, 0.1155])
def test_rowfine_values_of_one_magnitude_rows(lam: float) -> None:
    # Adam's rarely seen tokens: rows of one magnitude per row from a few values (steps since
    # the token was seen) among broad rows. ROWFINE slices give each such row its value to
    # 1/16 step: the decoder's output equals the encoder's recon, the levels are the rounded
    # ones (decode_levels), no element's error exceeds rounding's by more than float rounding,
    # and the squared error of those rows falls to (1/32 step)^2 at most per element.
    rng = np.random.default_rng(8)
    step = 1.0
    mags = np.array([0.63, 1.2, 1.71, 2.18, 2.62, 3.02], np.float32)
    x = np.zeros((600, 96), np.float32)
    kind = rng.integers(0, 10, size=600)
    for r in range(600):
        if kind[r] < 3:
            x[r] = mags[rng.integers(0, len(mags))] * rng.choice([-1.0, 1.0], size=96)
        elif kind[r] < 5:
            x[r] = rng.laplace(0.0, 1.5 * step, size=96)
    const = kind < 3
    res = fedcodec.encode([x], step=step, lam=lam, return_recon=True)
    assert res.recon is not None
    recon = np.asarray(res.recon[0])
    np.testing.assert_array_equal(bits(fedcodec.decode(res.data)[0]), bits(recon))
    levels = fedcodec.decode_levels(res.data)[0][0]
    np.testing.assert_array_equal(levels[const], np.rint(x[const]))
    err_fine = np.square(recon[const].astype(np.float64) - x[const])
    err_levels = np.square(levels[const] * np.float64(step) - x[const])
    assert err_fine.max() <= (step / 32) ** 2 + 1e-12
    assert err_fine.sum() < 0.05 * err_levels.sum()
    # per row the refined value never costs squared error against the level's
    assert np.all(err_fine.sum(axis=1) <= err_levels.sum(axis=1) + 1e-9)
    # accumulation adds the same values
    acc = np.zeros(x.shape, np.float64)
    fedcodec.decode_accumulate(res.data, [acc], weight=1.0)
    np.testing.assert_array_equal(acc, recon.astype(np.float64))
    # a levels-only coding of the same levels has no ROWFINE values
    plain = fedcodec.encode_levels([levels], step)
    np.testing.assert_array_equal(fedcodec.decode(plain.data)[0], levels * np.float32(step))
