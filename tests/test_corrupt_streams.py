"""Hostile containers: every truncation, every bit flip, garbage, wrong magic
or version, absurd shapes and the decoder limits raise CorruptStreamError,
never crash, and never touch an accumulator.

Crafted containers rely on three facts of codec_c/FORMAT.md: the magic and
the format version come first, shapes are stored as LEB128 varints, and the
last four bytes are the CRC32 (little endian) of everything before them.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fedcodec
from fedcodec import errors

STREAM_ERRORS = {
    errors.FC_ERR_TRUNCATED,
    errors.FC_ERR_CORRUPT,
    errors.FC_ERR_CHECKSUM,
    errors.FC_ERR_VERSION,
    errors.FC_ERR_LIMIT,
}


def small_stream() -> tuple[bytes, list[tuple[int, ...]]]:
    """A ~100-byte container with a dense, a sparse and a scalar tensor."""
    rng = np.random.default_rng(42)
    dense = rng.standard_normal((4, 6)).astype(np.float32)
    sparse = np.zeros((3, 20), dtype=np.float32)
    sparse[1, 7] = 2.0
    sparse[2, 19] = -1.0
    tensors = [dense, sparse, np.float32(0.5)]
    return fedcodec.encode(tensors, S=16).data, [np.shape(t) for t in tensors]


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def crafted(shape: tuple[int, ...], step: float = 1.0) -> bytes:
    """A valid container whose one all-zero tensor declares ``shape``.

    Made from a real encoder output rather than from scratch, so it follows
    the format as it evolves: an all-zero marker tensor of the same rank and
    distinctive sizes is encoded, its shape varints are replaced, the CRC32
    is recomputed.
    """
    marker = tuple(130 + axis for axis in range(len(shape)))
    stream = fedcodec.encode([np.zeros(marker, dtype=np.float32)], step=step).data
    old = b"".join(varint(n) for n in marker)
    assert stream.count(old) == 1, "shape varints not found: has the format changed?"
    return with_crc(stream[:-4].replace(old, b"".join(varint(n) for n in shape)))


def assert_rejected(data: bytes, shapes: list[tuple[int, ...]] | None = None) -> set[int]:
    """Every decoding entry point raises CorruptStreamError on ``data``; an
    accumulator of the right shapes is left exactly as it was."""
    codes = set()
    for decode in (fedcodec.inspect, fedcodec.decode, fedcodec.decode_levels):
        with pytest.raises(fedcodec.CorruptStreamError) as info:
            decode(data)
        assert info.value.code in STREAM_ERRORS
        assert info.value.result_name == fedcodec._binding.result_name(info.value.code)
        assert str(info.value).startswith(info.value.result_name)
        codes.add(info.value.code)
    if shapes is not None:
        accs = [np.full(shape, 3.25, dtype=np.float64) for shape in shapes]
        with pytest.raises(fedcodec.CorruptStreamError):
            fedcodec.decode_accumulate(data, accs, 2.0)
        for acc in accs:
            assert np.all(acc == 3.25)
    return codes


def test_the_small_stream_is_valid():
    data, shapes = small_stream()
    assert [a.shape for a in fedcodec.decode(data)] == shapes
    assert 40 < len(data) < 200


def test_every_truncation_is_rejected():
    data, shapes = small_stream()
    codes: set[int] = set()
    for length in range(len(data)):
        codes |= assert_rejected(data[:length], shapes)
    assert errors.FC_ERR_TRUNCATED in codes
    assert errors.FC_ERR_CHECKSUM in codes


def test_every_single_bit_flip_is_rejected():
    data, shapes = small_stream()
    codes: set[int] = set()
    for bit in range(8 * len(data)):
        mutated = bytearray(data)
        mutated[bit // 8] ^= 1 << (bit % 8)
        codes |= assert_rejected(bytes(mutated), shapes)
    assert codes == {errors.FC_ERR_VERSION, errors.FC_ERR_CHECKSUM}


def test_appended_bytes_are_rejected():
    data, shapes = small_stream()
    assert_rejected(data + b"\x00", shapes)
    assert_rejected(data + data, shapes)


def test_wrong_magic_and_version():
    data, _ = small_stream()
    assert assert_rejected(b"PK\x03\x04" + data[4:]) == {errors.FC_ERR_VERSION}
    newer = with_crc(data[:4] + bytes([data[4] + 1]) + data[5:-4])  # the version byte
    assert assert_rejected(newer) == {errors.FC_ERR_VERSION}
    assert assert_rejected(b"") == {errors.FC_ERR_TRUNCATED}


def test_crafted_container_is_understood():
    (zeros,) = fedcodec.decode(crafted((3, 5), step=0.5))
    assert zeros.shape == (3, 5)
    assert not zeros.any()
    (info,) = fedcodec.inspect(crafted((3, 5), step=0.5))
    assert info.step == 0.5
    assert info.slices == 0


@pytest.mark.parametrize(
    "shape",
    [(1 << 33,), (1 << 20, 1 << 20), (1 << 40, 1 << 40, 1 << 40), (2**63, 2), (2**64 - 1,)],
    ids=str,
)
def test_huge_declared_shapes_hit_the_limits(shape):
    data = crafted(shape)
    assert assert_rejected(data) == {errors.FC_ERR_LIMIT}


def test_caller_limits_are_enforced():
    data, shapes = small_stream()
    assert fedcodec.decode(crafted((1001,)))[0].shape == (1001,)  # default limits allow it
    with pytest.raises(fedcodec.CorruptStreamError) as info:
        fedcodec.decode(crafted((1001,)), max_tensor_elems=1000)
    assert info.value.code == errors.FC_ERR_LIMIT
    for limits in ({"max_tensors": 2}, {"max_tensor_elems": 59}, {"max_total_elems": 84}):
        with pytest.raises(fedcodec.CorruptStreamError) as info:
            fedcodec.decode(data, **limits)
        assert info.value.code == errors.FC_ERR_LIMIT
        acc = [np.zeros(s) for s in shapes]
        with pytest.raises(fedcodec.CorruptStreamError):
            fedcodec.decode_accumulate(data, acc, **limits)
        assert not any(a.any() for a in acc)
    # Exactly at the limits is fine: 24 + 60 + 1 elements, largest 60.
    fedcodec.decode(data, max_tensors=3, max_tensor_elems=60, max_total_elems=85)


@given(garbage=st.binary(max_size=300))
def test_random_garbage_is_rejected(garbage):
    with pytest.raises(fedcodec.CorruptStreamError):
        fedcodec.decode(garbage)


def _decode_or_reject(data: bytes) -> None:
    """Hostile but checksummed input: either a clean CorruptStreamError with
    every accumulator untouched, or arrays of the declared shapes."""
    limit = {"max_total_elems": 1 << 16}
    try:
        infos = fedcodec.inspect(data, **limit)
    except fedcodec.CorruptStreamError:
        return
    code = None
    try:
        decoded = fedcodec.decode(data, **limit)
    except fedcodec.CorruptStreamError as error:
        code = error.code
    else:
        assert [a.shape for a in decoded] == [i.shape for i in infos]
        assert all(a.dtype == np.float32 for a in decoded)
    assert code is None or code in STREAM_ERRORS
    accs = [np.full(info.shape, 7.0, dtype=np.float32) for info in infos]
    try:
        fedcodec.decode_accumulate(data, accs, 1.0, **limit)
    except fedcodec.CorruptStreamError:
        assert all(np.all(a == 7.0) for a in accs)


@given(body=st.binary(max_size=200), count=st.integers(0, 4))
def test_garbage_behind_a_valid_header_and_crc_is_handled(body, count):
    magic_and_version = small_stream()[0][:6]
    _decode_or_reject(with_crc(magic_and_version + varint(count) + body))


@given(data=st.data())
def test_payload_mutations_with_a_fixed_up_crc_are_handled(data):
    stream, _ = small_stream()
    body = bytearray(stream[:-4])
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(6, len(body) - 1))
        body[position] = data.draw(st.integers(0, 255))
    _decode_or_reject(with_crc(bytes(body)))


def test_every_byte_value_at_every_position_with_a_fixed_up_crc():
    stream, _ = small_stream()
    body = stream[:-4]
    for position in range(6, len(body)):
        for value in range(0, 256, 17):
            mutated = bytearray(body)
            mutated[position] = value
            _decode_or_reject(with_crc(bytes(mutated)))
