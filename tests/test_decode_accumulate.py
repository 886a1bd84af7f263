"""decode_accumulate: acc += weight * decode(), in float32 or float64, in
place, and nothing written unless the whole call succeeds."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fedcodec

values = st.floats(-100.0, 100.0, width=32, allow_subnormal=False).map(
    lambda v: v if abs(v) >= 1e-5 else 0.0
)
tensors = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12), elements=values
)


@given(
    items=st.lists(tensors, min_size=1, max_size=3),
    weight=st.floats(-10.0, 10.0),
    dtype=st.sampled_from([np.float32, np.float64]),
    lam=st.sampled_from([0.0, 0.2]),
    seed=st.integers(0, 2**32 - 1),
)
def test_accumulate_equals_acc_plus_weight_times_decode(items, weight, dtype, lam, seed):
    data = fedcodec.encode(items, lam=lam, S=64).data
    decoded = fedcodec.decode(data)
    rng = np.random.default_rng(seed)
    start = [rng.standard_normal(t.shape).astype(dtype) for t in items]
    accs = [a.copy() for a in start]
    fedcodec.decode_accumulate(data, accs, weight)
    for acc, acc0, dec in zip(accs, start, decoded, strict=True):
        assert acc.dtype == dtype
        assert acc.shape == dec.shape
        expected = acc0.astype(np.float64) + weight * dec.astype(np.float64)
        if dtype is np.float64:
            np.testing.assert_allclose(acc, expected, rtol=1e-12, atol=1e-12)
        else:
            tol = 2e-7 * (np.abs(acc0) + np.abs(weight * dec.astype(np.float64))) + 1e-30
            assert np.all(np.abs(acc - expected) <= 2 * tol)


def test_accumulating_several_clients_is_fedavg():
    rng = np.random.default_rng(0)
    updates = [
        {"w": rng.standard_normal((50, 40)).astype(np.float32), "b": rng.standard_normal(40)}
        for _ in range(3)
    ]
    for u in updates:
        u["b"] = u["b"].astype(np.float32)
    examples = [10, 30, 60]
    acc = {"w": np.zeros((50, 40)), "b": np.zeros(40)}
    decoded = []
    for update, n in zip(updates, examples, strict=True):
        data = fedcodec.encode(update, lam=0.1, S=64).data
        fedcodec.decode_accumulate(data, acc, n / sum(examples))
        decoded.append(fedcodec.decode(data, names=["w", "b"]))
    for name in ("w", "b"):
        pairs = zip(decoded, examples, strict=True)
        expected = sum(d[name].astype(np.float64) * n for d, n in pairs) / 100
        np.testing.assert_allclose(acc[name], expected, rtol=1e-12, atol=1e-12)


def test_zero_weight_and_empty_tensors():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    data = fedcodec.encode([x, np.zeros((0, 4), np.float32)], step=1.0).data
    acc = [np.ones((2, 3), np.float32), np.zeros((0, 4), np.float32)]
    fedcodec.decode_accumulate(data, acc, 0.0)
    assert np.all(acc[0] == 1.0)
    fedcodec.decode_accumulate(data, acc)
    np.testing.assert_array_equal(acc[0], x + 1)


def _two_tensor_stream() -> bytes:
    return fedcodec.encode(
        [np.ones((4, 4), np.float32), np.full(3, 2.0, np.float32)], step=0.5
    ).data


@pytest.mark.parametrize(
    ("accs", "problem"),
    [
        ([np.zeros((4, 4)), np.zeros(4)], "shape"),
        ([np.zeros((4, 4)), np.zeros((3, 1))], "shape"),
        ([np.zeros((4, 4)), np.zeros(3, np.float16)], "dtype"),
        ([np.zeros((4, 4)), np.zeros(3, np.int64)], "dtype"),
        ([np.zeros((4, 4)), np.zeros(3, ">f8")], "dtype"),
        ([np.zeros((4, 4)), np.zeros(6)[::2]], "C-contiguous"),
        ([np.zeros((4, 4)), np.zeros(3)], None),  # read-only: set below
        ([np.zeros((4, 4))], "2 tensors"),
        ([np.zeros((4, 4)), np.zeros(3), np.zeros(3)], "2 tensors"),
        ([np.zeros((4, 4)), [0.0, 0.0, 0.0]], "numpy array"),
    ],
)
def test_bad_accumulators_raise_and_nothing_is_written(accs, problem):
    if problem is None:
        accs[1].flags.writeable = False
        problem = "writeable"
    data = _two_tensor_stream()
    with pytest.raises(fedcodec.InvalidParameterError, match=problem) as info:
        fedcodec.decode_accumulate(data, accs, 1.0)
    assert isinstance(info.value, ValueError)
    assert not accs[0].any()  # the first, valid accumulator is untouched


def test_non_finite_weight_is_rejected():
    data = _two_tensor_stream()
    acc = [np.zeros((4, 4)), np.zeros(3)]
    for weight in (float("nan"), float("inf")):
        with pytest.raises(fedcodec.InvalidParameterError, match="weight"):
            fedcodec.decode_accumulate(data, acc, weight)
    assert not acc[0].any()


def test_accumulator_untouched_when_a_payload_is_corrupt():
    # Corrupt a payload byte but keep the CRC valid, so only decoding the
    # payload can notice; C promises to check every payload before writing.
    rng = np.random.default_rng(9)
    x = rng.standard_normal((64, 64)).astype(np.float32)
    stream = fedcodec.encode([x, x], S=64).data
    rejected = 0
    for position in range(len(stream) - 40, len(stream) - 4):
        body = bytearray(stream[:-4])
        body[position] ^= 0xFF
        data = bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
        accs = [np.full((64, 64), 1.5), np.full((64, 64), 1.5, np.float32)]
        try:
            fedcodec.decode_accumulate(data, accs, 1.0)
        except fedcodec.CorruptStreamError:
            rejected += 1
            assert np.all(accs[0] == 1.5)
            assert np.all(accs[1] == 1.5)
    assert rejected > 0  # the mutations really reach the payload checks
