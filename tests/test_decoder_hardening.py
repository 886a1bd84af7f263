"""The decoder returns only finite values and allocates only what the caller
allows (issue #12, defects 7 and 9).

* A CRC-valid container whose reconstruction would overflow float32 (a huge
  step times a large level, a rounding case just past FLT_MAX, a dithered
  tensor at step FLT_MAX) is corrupt for every decoding entry point, and a
  rejected decode-and-accumulate leaves the accumulators untouched.
* Decoding with ``expected_shapes`` (or a caller's element limit) refuses a
  container that claims more before allocating anything from its header.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedcodec

FLT_MAX = float(np.finfo(np.float32).max)
GOLDEN = Path(__file__).resolve().parents[1] / "codec_c" / "tests" / "golden"


def with_step(stream: bytes, step: float) -> bytes:
    """``stream`` (one tensor encoded with step 1) with its float32 step
    replaced by ``step`` and the CRC32 recomputed (FORMAT.md: the step is a
    little-endian float32, the last four bytes the CRC of the rest)."""
    old = struct.pack("<f", 1.0)
    body = stream[:-4]
    assert body.count(old) == 1, "step not found: has the format changed?"
    body = body.replace(old, struct.pack("<f", step))
    return body + struct.pack("<I", zlib.crc32(body))


def decodes_finite_or_corrupt(data: bytes, shape: tuple[int, ...]) -> bool:
    """True when every entry point decodes ``data`` to finite values, False
    when every one raises CorruptStreamError (accumulator untouched);
    anything else fails the test."""
    acc = np.full(shape, 2.5, dtype=np.float64)
    try:
        values = fedcodec.decode(data)[0]
    except fedcodec.CorruptStreamError:
        with pytest.raises(fedcodec.CorruptStreamError):
            fedcodec.decode_accumulate(data, [acc], 1.0)
        assert np.all(acc == 2.5)
        return False
    assert np.isfinite(values).all(), values
    fedcodec.decode_accumulate(data, [acc], 1.0)
    assert np.isfinite(acc).all()
    return True


def test_uniform_rounding_past_float32_max_is_corrupt():
    # 78084108 * step < FLT_MAX in real arithmetic, but float32(78084108)
    # rounds up and the float32 product is inf: the decoder returned inf.
    step = float(np.float32(np.ldexp(float.fromhex("0x1.b808f2p0"), 101)))
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.float32(78084108) * np.float32(step))
    levels = np.array([78084108, -78084108, 0, 1], dtype=np.int32)
    data = with_step(fedcodec.encode_levels([levels], step=1.0).data, step)
    assert not decodes_finite_or_corrupt(data, (4,))
    # one step below, the largest level still decodes (finite)
    ok = with_step(
        fedcodec.encode_levels([levels], step=1.0).data, float(np.float32(step) * np.float32(0.999))
    )
    assert decodes_finite_or_corrupt(ok, (4,))


def test_huge_step_times_large_level_is_corrupt():
    levels = np.array([1000, -1000, 0, 1], dtype=np.int32)
    data = with_step(fedcodec.encode_levels([levels], step=1.0).data, 1e36)
    assert not decodes_finite_or_corrupt(data, (4,))


def test_dither_at_float32_max_step_is_corrupt():
    # level +-1 at step FLT_MAX minus a dither of the other sign overflows
    values = np.array([1.0, -1.0, 0.0, 1.0] * 4, dtype=np.float32)
    stream = fedcodec.encode([values], step=1.0, quantizer="dither", dither_seed=77).data
    assert not decodes_finite_or_corrupt(with_step(stream, FLT_MAX), (16,))
    assert decodes_finite_or_corrupt(with_step(stream, 1e37), (16,))


@pytest.mark.parametrize("quantizer", ["trellis", "trellis8"])
def test_trellis_overflow_is_corrupt(quantizer):
    values = (np.arange(16, dtype=np.float32) * 37 % 19 - 9).astype(np.float32)
    stream = fedcodec.encode([values], step=1.0, quantizer=quantizer).data
    assert not decodes_finite_or_corrupt(with_step(stream, FLT_MAX / 4), (16,))
    assert decodes_finite_or_corrupt(with_step(stream, 1e36), (16,))


def test_the_encoder_refuses_what_the_decoder_would_refuse():
    with pytest.raises(fedcodec.InvalidParameterError, match="LEVEL_OVERFLOW"):
        fedcodec.encode([np.ones(4, np.float32)], step=FLT_MAX, quantizer="dither", dither_seed=1)
    levels = np.array([78084108], dtype=np.int32)
    step = float(np.ldexp(float.fromhex("0x1.b808f2p0"), 101))
    with pytest.raises(fedcodec.InvalidParameterError, match="LEVEL_OVERFLOW"):
        fedcodec.encode_levels([levels], step=step)


@settings(max_examples=300, deadline=None)
@given(
    level=st.integers(min_value=1, max_value=(1 << 30) - 1),
    ulps=st.integers(min_value=-3, max_value=3),
    quantizer=st.sampled_from(["uniform", "dither", "trellis"]),
)
def test_steps_around_the_overflow_boundary_decode_finite_or_corrupt(level, ulps, quantizer):
    """Levels at the float32 boundary, any quantizer: never inf."""
    boundary = np.float32(FLT_MAX / level)
    step = float(boundary)
    with np.errstate(over="ignore"):
        for _ in range(abs(ulps)):
            step = float(np.nextafter(np.float32(step), np.float32(np.inf if ulps > 0 else 0)))
    if not (np.isfinite(step) and step > 0):
        return
    if quantizer == "uniform":
        stream = fedcodec.encode_levels([np.array([level, -level, 0], np.int32)], step=1.0).data
    else:
        values = np.array([level, -level, 0], np.float32)
        kwargs = {"dither_seed": 3} if quantizer == "dither" else {}
        try:
            stream = fedcodec.encode([values], step=1.0, quantizer=quantizer, **kwargs).data
        except fedcodec.InvalidParameterError:
            return  # beyond the trellis' level range
    decodes_finite_or_corrupt(with_step(stream, step), (3,))


def test_golden_overflow_files_are_corrupt():
    files = sorted(GOLDEN.glob("bad_overflow_*.fcd"))
    assert len(files) >= 4
    for path in files:
        data = path.read_bytes()
        shapes = [info.shape for info in fedcodec.inspect(data)]
        assert not decodes_finite_or_corrupt(data, shapes[0])
