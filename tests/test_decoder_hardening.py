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
import subprocess
import sys
import time
import tracemalloc
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


# ---------------------------------------------------------------------------
# Defect 9: tiny containers that claim huge all-zero tensors
# ---------------------------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def claiming(shape: tuple[int, int]) -> bytes:
    """A CRC-valid container (about 22 bytes) of one all-zero tensor that
    declares ``shape``: a real encoding of a 130 x 131 zero tensor with its
    shape varints replaced."""
    stream = fedcodec.encode([np.zeros((130, 131), np.float32)]).data
    old = varint(130) + varint(131)
    assert stream.count(old) == 1, "shape varints not found: has the format changed?"
    body = stream[:-4].replace(old, varint(shape[0]) + varint(shape[1]))
    return body + struct.pack("<I", zlib.crc32(body))


GIGA = claiming((1 << 15, 1 << 15))  # 2**30 zeros: 4 GiB of float32


def peak_bytes(call) -> tuple[BaseException | None, int, float]:
    """(the exception ``call`` raised, peak traced bytes, seconds)."""
    tracemalloc.start()
    start = time.perf_counter()
    error: BaseException | None = None
    try:
        call()
    except Exception as caught:  # returned to the test
        error = caught
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return error, peak, seconds


def test_the_crafted_container_is_tiny_and_valid():
    assert len(GIGA) <= 26
    (info,) = fedcodec.inspect(GIGA, max_total_elems=1 << 30, max_tensor_elems=1 << 30)
    assert info.numel == 1 << 30


def test_expected_shapes_refuse_a_larger_container_before_allocating():
    error, peak, _ = peak_bytes(lambda: fedcodec.decode(GIGA, expected_shapes=[(100, 100)]))
    assert isinstance(error, fedcodec.InvalidParameterError)
    assert error.code == fedcodec.errors.FC_ERR_MISMATCH
    assert "expected_shapes" in str(error)
    assert peak < 1 << 20, peak
    for call in (fedcodec.decode_levels, fedcodec.inspect):
        with pytest.raises(fedcodec.InvalidParameterError, match="expected_shapes"):
            call(GIGA, expected_shapes=[(100, 100)])


def test_expected_shapes_name_the_tensor_that_differs():
    data = fedcodec.encode([np.ones((3, 4), np.float32), np.ones(5, np.float32)]).data
    decoded = fedcodec.decode(data, expected_shapes=[(3, 4), (5,)])
    assert [d.shape for d in decoded] == [(3, 4), (5,)]
    with pytest.raises(fedcodec.InvalidParameterError, match=r"tensor 1 has shape \(5,\)"):
        fedcodec.decode(data, expected_shapes=[(3, 4), (6,)])
    with pytest.raises(fedcodec.InvalidParameterError, match="it holds 2"):
        fedcodec.decode(data, expected_shapes=[(3, 4), (5,), (1,)])
    with pytest.raises(fedcodec.InvalidParameterError, match="expected_shapes"):
        fedcodec.decode(data, expected_shapes="(3, 4)")  # type: ignore[arg-type]


def test_plain_decode_limits_elements_in_proportion_to_the_input():
    # Today's default (2**28 elements) let 22 bytes allocate and fill 1 GiB.
    error, peak, seconds = peak_bytes(lambda: fedcodec.decode(GIGA))
    assert isinstance(error, fedcodec.CorruptStreamError)
    assert error.code == fedcodec.errors.FC_ERR_LIMIT
    assert "max_total_elems" in str(error)
    assert peak < 1 << 20, peak
    assert seconds < 1.0, seconds
    # 2**21 zeros in ~22 bytes: beyond the default for the size, decoded
    # when the caller allows it
    two_m = claiming((1 << 11, 1 << 10))
    with pytest.raises(fedcodec.CorruptStreamError, match="default limit"):
        fedcodec.decode(two_m)
    (zeros,) = fedcodec.decode(two_m, max_total_elems=1 << 21)
    assert zeros.shape == (2048, 1024)
    assert not zeros.any()
    (zeros,) = fedcodec.decode(two_m, expected_shapes=[(2048, 1024)])
    assert not zeros.any()
    # an all-zero 1 M-element update still decodes with the defaults
    (ok,) = fedcodec.decode(fedcodec.encode([np.zeros((1000, 1000), np.float32)]).data)
    assert ok.shape == (1000, 1000)


def test_model_receiver_refuses_a_22_byte_container_claiming_1g_elements():
    from fedcodec.pipeline import ModelMismatchError, ModelReceiver, ModelSpec
    from fedcodec.pipeline.downlink import DownlinkPackage

    receiver = ModelReceiver(ModelSpec(("w", "b"), ((64, 32), (32,))), threads=1)
    package = DownlinkPackage(version=1, digest="0" * 64, keyframe=GIGA, from_version=None)
    error, peak, seconds = peak_bytes(lambda: receiver.apply(package))
    assert isinstance(error, ModelMismatchError), error
    assert peak < 1 << 20, peak
    assert seconds < 1.0, seconds
    assert receiver.version is None


# ---------------------------------------------------------------------------
# A rejected container never crashes the interpreter later
# ---------------------------------------------------------------------------

CYCLE = """
import gc, sys
import numpy as np
import fedcodec

def refuse(call):
    try:
        call()
    except fedcodec.FedCodecError as caught:
        error = caught  # error -> traceback -> this frame -> error: a cycle
        return error.code
    return 0

garbage = bytearray(b"FCDC\\x01\\x00garbage!!!!")
codes = [refuse(lambda: fedcodec.inspect(garbage)), refuse(lambda: fedcodec.decode(garbage))]
acc = [np.zeros(3)]
codes.append(refuse(lambda: fedcodec.decode_accumulate(memoryview(garbage), acc)))
gc.collect()
print(codes)
"""


def test_an_exception_kept_in_a_reference_cycle_does_not_crash_the_gc(tmp_path):
    # The binding raised while its frame held a memoryview with a cffi buffer
    # export; when the exception's traceback ended up in a cycle, the garbage
    # collector cleared the memoryview first and CPython segfaulted.
    run = subprocess.run(  # the installed package: not from the source tree
        [sys.executable, "-c", CYCLE], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[7, 7, 7]"


def test_verify_checks_expected_shapes_before_its_scratch_buffer():
    error, peak, _ = peak_bytes(lambda: fedcodec.codec.verify(GIGA, expected_shapes=[(64, 32)]))
    assert isinstance(error, fedcodec.InvalidParameterError)
    assert error.code == fedcodec.errors.FC_ERR_MISMATCH
    assert peak < 1 << 20, peak
    data = fedcodec.encode([np.ones((64, 32), np.float32)]).data
    assert [i.shape for i in fedcodec.codec.verify(data, expected_shapes=[(64, 32)])] == [(64, 32)]
