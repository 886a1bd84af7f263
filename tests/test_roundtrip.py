"""Round trips: lossless levels, the lam=0 error bound, recon == decode, all
modes on dense, sparse, all-zero and empty tensors of 0 to 4 dimensions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fedcodec

MAX_LEVEL = 2**30 - 1
MODES = ["auto", "dense", "grouped", "runs"]

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9)
TINY = float(np.float32(1e-30))
# Finite float32 values, including tiny and subnormal magnitudes.
values = st.one_of(
    st.floats(-1000.0, 1000.0, width=32),
    st.floats(-TINY, TINY, width=32),
)
sparse_values = st.one_of(st.just(0.0), st.just(0.0), st.just(0.0), values)
float_tensors = st.one_of(
    hnp.arrays(np.float32, shapes, elements=values),
    hnp.arrays(np.float32, shapes, elements=sparse_values),
)
levels_elements = st.one_of(
    st.just(0),
    st.integers(-3, 3),
    st.integers(-300, 300),
    st.integers(-MAX_LEVEL, MAX_LEVEL),
    st.sampled_from([MAX_LEVEL, -MAX_LEVEL]),
)
level_tensors = hnp.arrays(np.int32, shapes, elements=levels_elements)
normal_steps = st.floats(float(np.float32(1e-30)), float(np.float32(1e30)), width=32)


def bits(array: np.ndarray) -> np.ndarray:
    """The raw float32 bits, so -0.0 != 0.0 and comparisons are bit-exact."""
    return np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)


def assert_within_half_step(original: np.ndarray, recon: np.ndarray, step: float) -> None:
    """|w - recon| <= step/2, plus float32 rounding of the product level*step."""
    x = original.astype(np.float64)
    err = np.abs(x - recon.astype(np.float64))
    bound = step / 2 * (1 + 1e-6) + np.abs(x) * 2.0**-23 + 1e-30
    assert np.all(err <= bound), float((err - bound).max())


@given(
    tensors=st.lists(level_tensors, min_size=0, max_size=4),
    step=normal_steps,
    mode=st.sampled_from(MODES),
    max_gtx=st.integers(1, 8),
)
def test_integer_levels_are_lossless(tensors, step, mode, max_gtx):
    step32 = float(np.float32(step))
    # Levels whose reconstruction level * step would overflow float32 are
    # refused (a decoder would reject them as corrupt).
    limit = float(np.finfo(np.float32).max) / step32
    if any(t.size and float(np.abs(t.astype(np.float64)).max()) > limit for t in tensors):
        with pytest.raises(fedcodec.InvalidParameterError, match="LEVEL_OVERFLOW"):
            fedcodec.encode_levels(tensors, step, mode=mode, max_gtx=max_gtx)
        return
    result = fedcodec.encode_levels(tensors, step, mode=mode, max_gtx=max_gtx)
    decoded = fedcodec.decode_levels(result.data)
    assert len(decoded) == len(tensors)
    for original, (levels, got_step) in zip(tensors, decoded, strict=True):
        assert levels.dtype == np.int32
        assert levels.shape == original.shape
        np.testing.assert_array_equal(levels, original)
        assert got_step == step32
    for original, value in zip(tensors, fedcodec.decode(result.data), strict=True):
        with np.errstate(over="ignore"):  # (float)level may round up past the limit
            expected = original.astype(np.float32) * np.float32(step32)
        np.testing.assert_array_equal(bits(value), bits(expected))


@given(tensor=float_tensors, S=st.integers(0, 4096), mode=st.sampled_from(MODES))
def test_lam0_error_is_at_most_half_a_step(tensor, S, mode):
    result = fedcodec.encode([tensor], lam=0.0, S=S, mode=mode)
    (decoded,) = fedcodec.decode(result.data)
    assert decoded.shape == tensor.shape
    assert decoded.dtype == np.float32
    assert_within_half_step(tensor, decoded, result.stats[0].step)


@given(
    tensor=float_tensors,
    step=st.floats(1e-3, 10.0),
    mode=st.sampled_from(MODES),
)
def test_lam0_error_bound_holds_for_a_given_step(tensor, step, mode):
    result = fedcodec.encode([tensor], lam=0.0, step=step, mode=mode)
    assert result.stats[0].step == float(np.float32(step))
    (decoded,) = fedcodec.decode(result.data)
    assert_within_half_step(tensor, decoded, result.stats[0].step)


@given(
    tensors=st.lists(float_tensors, min_size=1, max_size=3),
    lam=st.sampled_from([0.0, 0.05, 0.1155, 0.5, 3.0]),
    S=st.integers(0, 512),
    mode=st.sampled_from(MODES),
    max_gtx=st.integers(1, 8),
    window_set=st.integers(0, 7) | st.just("auto"),
    transpose=st.sampled_from([False, True, "auto"]),
    importance_seed=st.none() | st.integers(0, 2**32 - 1),
)
def test_recon_equals_decode_bit_exactly(
    tensors, lam, S, mode, max_gtx, window_set, transpose, importance_seed
):
    importance = None
    if importance_seed is not None:
        rng = np.random.default_rng(importance_seed)
        importance = [rng.exponential(size=t.shape).astype(np.float32) + 0.01 for t in tensors]
    result = fedcodec.encode(
        tensors,
        lam=lam,
        S=S,
        mode=mode,
        max_gtx=max_gtx,
        window_set=window_set,
        transpose=transpose,
        importance=importance,
        return_recon=True,
    )
    assert result.recon is not None
    decoded = fedcodec.decode(result.data)
    for original, recon, got in zip(tensors, result.recon, decoded, strict=True):
        assert recon.shape == original.shape == got.shape
        np.testing.assert_array_equal(bits(recon), bits(got))
    for stats, original, recon in zip(result.stats, tensors, result.recon, strict=True):
        assert stats.numel == original.size
        assert stats.nonzeros == int(np.count_nonzero(recon))
        sq_error = float(np.sum((original.astype(np.float64) - recon) ** 2))
        assert math.isclose(stats.sq_error, sq_error, rel_tol=1e-9, abs_tol=1e-12)


def _tensor(shape: tuple[int, ...], density: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    keep = rng.random(shape) < density
    return np.where(keep, x, np.float32(0)).astype(np.float32)


SHAPES = [(), (1,), (7,), (3, 4, 5, 6), (0,), (5, 0, 3), (300, 200), (2, 4000)]
DENSITIES = [1.0, 0.01, 0.001, 0.0]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_every_mode_round_trips(mode, density, shape):
    x = _tensor(shape, density, seed=len(shape) + int(density * 1000))
    if density > 0 and x.size >= 1000:
        assert np.count_nonzero(x) > 0
    result = fedcodec.encode({"w": x}, lam=0.0, S=256, mode=mode, return_recon=True)
    (stats,) = result.stats
    decoded = fedcodec.decode(result.data, names=["w"])
    assert decoded["w"].shape == x.shape
    np.testing.assert_array_equal(bits(decoded["w"]), bits(result.recon[0]))
    assert_within_half_step(x, decoded["w"], stats.step)
    if not np.any(x):
        assert not np.any(decoded["w"])
    if mode != "auto" and stats.slices > 0:
        assert stats.modes == (mode,)
    assert stats.name == "w"
    assert stats.shape == x.shape
    assert stats.numel == x.size
    levels, step = fedcodec.decode_levels(result.data)[0]
    assert step == stats.step
    np.testing.assert_array_equal(
        bits(levels.astype(np.float32) * np.float32(step)), bits(decoded["w"])
    )


@pytest.mark.parametrize("mode", MODES)
def test_sparse_modes_beat_dense_on_very_sparse_data(mode):
    x = _tensor((1000, 100), 0.001, seed=7)
    dense = fedcodec.encode([x], step=0.01, mode="dense")
    other = fedcodec.encode([x], step=0.01, mode=mode)
    if mode in ("runs", "auto"):
        assert len(other) < len(dense)
    # Every mode codes the same levels.
    np.testing.assert_array_equal(
        fedcodec.decode_levels(other.data)[0][0], fedcodec.decode_levels(dense.data)[0][0]
    )


def test_mapping_order_is_container_order_and_names_come_back():
    tensors = {
        "z.bias": np.arange(5, dtype=np.float32),
        "a.weight": np.ones((2, 3), dtype=np.float32),
        "m": np.float32(-2.5),
    }
    result = fedcodec.encode(tensors, step=0.5, return_recon=True)
    assert [s.name for s in result.stats] == list(tensors)
    assert [s.index for s in result.stats] == [0, 1, 2]
    assert [info.shape for info in fedcodec.inspect(result.data)] == [(5,), (2, 3), ()]
    as_dict = fedcodec.decode(result.data, names=list(tensors))
    assert list(as_dict) == list(tensors)
    for name, original in tensors.items():
        np.testing.assert_array_equal(as_dict[name], original)  # exact multiples of 0.5
    as_list = fedcodec.decode(result.data)
    assert isinstance(as_list, list)
    assert len(as_list) == 3
    assert fedcodec.decode(result.data, names=["a", "b", "c"])["c"].shape == ()


def test_empty_container_round_trips():
    result = fedcodec.encode([])
    assert result.stats == []
    assert len(result) > 0
    assert fedcodec.decode(result.data) == []
    assert fedcodec.inspect(result.data) == []


def test_scalar_inputs_work():
    result = fedcodec.encode([np.float32(0.75), np.array(-3.0, dtype=np.float32)], step=0.25)
    a, b = fedcodec.decode(result.data)
    assert a.shape == ()
    assert b.shape == ()
    assert float(a) == 0.75
    assert float(b) == -3.0


def test_inspect_describes_the_container():
    x = np.random.default_rng(1).standard_normal((400, 300)).astype(np.float32)
    result = fedcodec.encode([x, x[:1]], S=64, max_gtx=6, slice_elems=10000)
    first, second = fedcodec.inspect(result.data)
    assert (first.index, first.shape, first.numel, first.max_gtx) == (0, (400, 300), 120000, 6)
    assert first.step == result.stats[0].step
    assert first.slices == result.stats[0].slices > 1
    assert (second.index, second.shape, second.numel) == (1, (1, 300), 300)
    assert second.slices == result.stats[1].slices == 1


def test_encode_levels_accepts_other_integer_dtypes_that_fit():
    arrays = [
        np.array([0, 1, -2, MAX_LEVEL, -MAX_LEVEL], dtype=np.int64),
        np.array([[0, 255]], dtype=np.uint8),
        np.array(7, dtype=np.int16),
    ]
    result = fedcodec.encode_levels({"a": arrays[0], "b": arrays[1], "c": arrays[2]}, step=2.0)
    decoded = fedcodec.decode_levels(result.data, names=["a", "b", "c"])
    for original, (levels, step) in zip(arrays, decoded.values(), strict=True):
        assert levels.dtype == np.int32
        assert step == 2.0
        np.testing.assert_array_equal(levels, original)


def test_per_tensor_steps_from_sequence_and_mapping():
    x = np.linspace(-1, 1, 101, dtype=np.float32)
    by_seq = fedcodec.encode([x, x, x], step=[0.5, None, 0.125], S=64)
    assert by_seq.stats[0].step == 0.5
    assert by_seq.stats[2].step == 0.125
    derived = fedcodec.encode([x], S=64).stats[0].step
    assert by_seq.stats[1].step == derived
    by_map = fedcodec.encode({"a": x, "b": x}, step={"b": 0.25}, S=64)
    assert by_map.stats[0].step == derived
    assert by_map.stats[1].step == 0.25


def test_larger_S_gives_a_finer_step():
    x = np.random.default_rng(2).standard_normal(1000).astype(np.float32)
    steps = [fedcodec.encode([x], S=S).stats[0].step for S in (0, 16, 128, 1024)]
    assert steps == sorted(steps, reverse=True)
    assert len(set(steps)) == 4


def test_sigma_sets_sigma_min_and_importance_steers_the_error():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(20000).astype(np.float32)
    sigma = rng.uniform(0.5, 2.0, x.shape)
    with_sigma = fedcodec.encode([x], S=32, sigma=[sigma])
    with_sigma_min = fedcodec.encode([x], S=32, sigma_min=float(sigma.min()))
    assert with_sigma.stats[0].step == with_sigma_min.stats[0].step
    assert with_sigma.stats[0].step != fedcodec.encode([x], S=32).stats[0].step

    importance = np.where(np.arange(x.size) < x.size // 2, 100.0, 0.01).astype(np.float32)
    weighted = fedcodec.encode([x], lam=1.0, step=0.5, importance=[importance], return_recon=True)
    err = (x - weighted.recon[0]) ** 2
    assert err[: x.size // 2].mean() < err[x.size // 2 :].mean() / 2
    # Without importance both halves are treated alike.
    plain = fedcodec.encode([x], lam=1.0, step=0.5, return_recon=True)
    err = (x - plain.recon[0]) ** 2
    assert err[: x.size // 2].mean() == pytest.approx(err[x.size // 2 :].mean(), rel=0.2)


def test_stats_properties():
    x = np.zeros((10, 10), dtype=np.float32)
    x[0, :5] = 1.0
    result = fedcodec.encode({"w": x}, step=0.5)
    (s,) = result.stats
    assert s.nonzeros == 5 == result.total_nonzeros
    assert s.density == 0.05
    assert s.bits_per_weight == 8 * s.bytes / 100
    assert s.mse == 0.0
    assert s.sq_error == 0.0
    assert len(result) == len(result.data)
    assert sum(st.bytes for st in result.stats) < len(result)
    empty = fedcodec.encode([np.zeros((0, 3), dtype=np.float32)]).stats[0]
    assert empty.density == 0.0
    assert empty.mse == 0.0
    assert math.isnan(empty.bits_per_weight)


def test_tensor_of_tiny_values_encodes():
    # Finite float32 input must encode; at worst everything quantizes to 0.
    x = np.array([1e-40, -2e-40, 1e-38], dtype=np.float32)
    result = fedcodec.encode([x], lam=0.0, S=128, return_recon=True)
    (decoded,) = fedcodec.decode(result.data)
    np.testing.assert_array_equal(bits(decoded), bits(result.recon[0]))
    assert_within_half_step(x, decoded, result.stats[0].step)


def test_window_auto_is_one_fixed_set_and_never_larger_than_set_0():
    rng = np.random.default_rng(5)
    levels = [
        np.round(rng.laplace(0.0, 1.5, (120, 256))).astype(np.int32),
        np.where(rng.random((64, 300)) < 0.05, rng.integers(-9, 10, (64, 300)), 0).astype(np.int32),
    ]
    fixed = [fedcodec.encode_levels(levels, step=0.25, window_set=w).data for w in range(8)]
    auto = fedcodec.encode_levels(levels, step=0.25).data
    assert auto == fedcodec.encode_levels(levels, step=0.25, window_set="auto").data
    assert len(auto) <= len(fixed[0])
    # per tensor its own set: never above the best single set by more than a few bytes
    assert len(auto) <= min(len(f) for f in fixed) + 4
    for (got, _), want in zip(fedcodec.decode_levels(auto), levels, strict=True):
        np.testing.assert_array_equal(got, want)


def test_transposed_tensors_decode_to_the_original_layout():
    rng = np.random.default_rng(9)
    # an input layer: the client's data never touch 40 % of the inputs
    w1 = np.round(rng.laplace(0.0, 2.0, (64, 200))).astype(np.int32)
    w1[:, rng.random(200) < 0.4] = 0
    cube = np.round(rng.laplace(0.0, 1.0, (6, 5, 7))).astype(np.int32)
    plain = fedcodec.encode_levels([w1, cube], step=0.5, transpose=False).data
    for transpose in (True, "auto"):
        data = fedcodec.encode_levels([w1, cube], step=0.5, transpose=transpose).data
        for (got, _), want in zip(fedcodec.decode_levels(data), [w1, cube], strict=True):
            np.testing.assert_array_equal(got, want)
        acc = [np.zeros(w1.shape, np.float64), np.zeros(cube.shape, np.float64)]
        fedcodec.decode_accumulate(data, acc, weight=2.0)
        np.testing.assert_array_equal(acc[0], 2.0 * w1 * 0.5)
        np.testing.assert_array_equal(acc[1], 2.0 * cube * 0.5)
        assert transpose != "auto" or len(data) <= len(plain)


def test_conv_filters_coded_as_rows_of_input_channels_decode_to_the_original_layout():
    # A conv filter bank [out, in, kh, kw] whose update scale is set by the input
    # channel: "auto" also codes it with axes 0 and 1 swapped (FORMAT.md §4, SWAPPED)
    # and keeps the smaller; decoders return [out, in, kh, kw].
    rng = np.random.default_rng(12)
    scale = 2.0 ** rng.integers(-2, 4, 16)
    conv = np.round(rng.laplace(0.0, 1.0, (24, 16, 3, 3)) * scale[None, :, None, None])
    conv = conv.astype(np.int32)
    given = fedcodec.encode_levels([conv], step=0.5, transpose=False).data
    auto = fedcodec.encode_levels([conv], step=0.5).data
    assert len(auto) < len(given)
    ((got, _),) = fedcodec.decode_levels(auto)
    np.testing.assert_array_equal(got, conv)
    acc = [np.zeros(conv.shape, np.float32)]
    fedcodec.decode_accumulate(auto, acc, weight=1.0)
    np.testing.assert_array_equal(acc[0], conv * np.float32(0.5))
    # lossy, every quantizer but the dither: the decode is the encoder's reconstruction
    w = (conv * 1e-3).astype(np.float32)
    for quantizer in ("uniform", "trellis", "trellis8"):
        res = fedcodec.encode(
            [w], lam=0.1155, S=16, transpose="auto", quantizer=quantizer, return_recon=True
        )
        assert res.recon is not None
        np.testing.assert_array_equal(fedcodec.decode(res.data)[0], res.recon[0])


def test_lossy_encode_keeps_the_given_orientation_by_default():
    # Keeping the smaller of two differently quantized orientations at a fixed λ
    # favours the one that zeroes more; the lossy default codes the layout given.
    rng = np.random.default_rng(11)
    w = rng.laplace(0.0, 1e-3, (64, 300)).astype(np.float32)
    w[:, rng.random(300) < 0.5] = 0.0
    default = fedcodec.encode([w], lam=0.5, S=0).data
    assert default == fedcodec.encode([w], lam=0.5, S=0, transpose=False).data
