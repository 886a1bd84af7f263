"""Compact containers (``encode(..., compact=True)``, codec FORMAT.md §2-3): no shapes
(a digest of them), all-zero tensors omitted, 1/2/4-byte steps; every decoding function
needs the shapes and refuses other ones by name."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from fedcodec import codec
from fedcodec.errors import FedCodecError, InvalidParameterError


def _update(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv": rng.laplace(0.0, 1e-2, size=(8, 4, 3, 3)).astype(np.float32),
        "bn.mean": np.zeros(8, np.float32),
        "fc": rng.laplace(0.0, 1e-3, size=(16, 40)).astype(np.float32),
        "bias": rng.normal(0.0, 1e-2, size=(16,)).astype(np.float32),
        "scalar": np.float32(0.0).reshape(()),
    }


def _shapes(update: dict[str, np.ndarray]) -> list[tuple[int, ...]]:
    return [a.shape for a in update.values()]


@pytest.mark.parametrize("quantizer", ["uniform", "trellis", "dither"])
def test_same_reconstruction_fewer_bytes(quantizer: str) -> None:
    update = _update()
    seed = 7 if quantizer == "dither" else None
    plain = codec.encode(update, S=32, quantizer=quantizer, dither_seed=seed, return_recon=True)
    small = codec.encode(
        update, S=32, quantizer=quantizer, dither_seed=seed, return_recon=True, compact=True
    )
    assert codec.is_compact(small.data)
    assert not codec.is_compact(plain.data)
    assert len(small.data) < len(plain.data)
    names, shapes = list(update), _shapes(update)
    decoded = codec.decode(small.data, names=names, expected_shapes=shapes)
    for name, rec, rec_plain in zip(names, small.recon or [], plain.recon or [], strict=True):
        np.testing.assert_array_equal(decoded[name], rec)
        np.testing.assert_array_equal(rec, rec_plain)
    # all-zero tensors cost nothing (a dithered one is never all zero: kept)
    zero = [s.bytes for s in small.stats if s.nonzeros == 0]
    assert zero
    assert all(b == 0 for b in zero) == (quantizer != "dither")


def test_all_zero_update_is_15_bytes() -> None:
    update = {k: np.zeros_like(v) for k, v in _update().items()}
    data = codec.encode(update, compact=True).data
    assert len(data) == 15  # magic, version, flags, digest, count 0, CRC
    out = codec.decode(data, expected_shapes=_shapes(update))
    assert all(a.shape == s and not a.any() for a, s in zip(out, _shapes(update), strict=True))
    levels = codec.decode_levels(data, expected_shapes=_shapes(update))
    assert [step for _, step in levels] == [1.0] * len(update)


@pytest.mark.parametrize(
    ("step", "size"),
    [(0.375, 1), (2.0**-27, 1), (1.875 * 2.0**4, 1), (2.0**-28, 2), (1.0078125, 2), (0.1, 4)],
)
def test_step_forms_are_exact(step: float, size: int) -> None:
    levels = [np.arange(-3, 5, dtype=np.int32)]
    plain = codec.encode_levels(levels, step).data
    small = codec.encode_levels(levels, step, compact=True).data
    # compact: the 1-byte shape is gone, the digest (4 B) added, the step takes `size`
    assert len(small) == len(plain) - 1 + 4 - (4 - size)
    (info,) = codec.inspect(small, expected_shapes=[(8,)])
    assert info.step == float(np.float32(step))
    np.testing.assert_array_equal(
        codec.decode(small, expected_shapes=[(8,)])[0],
        np.arange(-3, 5, dtype=np.float32) * np.float32(step),
    )


def test_shape_digest_definition() -> None:
    shapes = [(8, 4, 3, 3), (8,), ()]
    raw = bytes([3, 4, 8, 4, 3, 3, 1, 8, 0])
    assert codec.shape_digest(shapes) == zlib.crc32(raw)
    data = codec.encode([np.ones(s, np.float32) for s in shapes], compact=True).data
    assert int.from_bytes(data[6:10], "little") == zlib.crc32(raw)


def test_refusals_name_the_problem() -> None:
    update = _update()
    data = codec.encode(update, S=32, compact=True).data
    shapes = _shapes(update)
    with pytest.raises(InvalidParameterError, match="compact container, which stores no shapes"):
        codec.decode(data)
    with pytest.raises(InvalidParameterError, match="coded for other shapes"):
        codec.decode(data, expected_shapes=shapes[:-1])
    other = list(shapes)
    other[2] = (16, 41)
    for call in (codec.inspect, codec.decode, codec.decode_levels, codec.split):
        with pytest.raises(InvalidParameterError, match="coded for other shapes") as err:
            call(data, expected_shapes=other)
        assert err.value.code == 10  # FC_ERR_MISMATCH
    acc = [np.zeros(s) for s in other]
    with pytest.raises(InvalidParameterError, match="other shapes than the accumulators'"):
        codec.decode_accumulate(data, acc)
    # a corrupted byte is still a checksum error, not a shape problem
    bad = bytearray(data)
    bad[12] ^= 0x10
    with pytest.raises(FedCodecError, match="CHECKSUM"):
        codec.decode(bytes(bad), expected_shapes=shapes)


def test_accumulate() -> None:
    update = _update(3)
    shapes = _shapes(update)
    plain = codec.encode(update, S=32)
    small = codec.encode(update, S=32, compact=True)
    acc_a = [np.ones(s) for s in shapes]
    acc_b = [np.ones(s) for s in shapes]
    codec.decode_accumulate(plain.data, acc_a, weight=0.25)
    codec.decode_accumulate(small.data, acc_b, weight=0.25)  # the accumulators' shapes
    for a, b in zip(acc_a, acc_b, strict=True):
        np.testing.assert_array_equal(a, b)


def test_split_join() -> None:
    update = _update(1)
    shapes = _shapes(update)
    data = codec.encode(update, S=32, compact=True).data
    parts = codec.split(data, expected_shapes=shapes)
    assert len(parts) == len(update)
    assert all(codec.is_compact(p) for p in parts)
    assert len(parts[1]) == 15  # an omitted tensor's part holds no tensor
    assert codec.join(parts, expected_shapes=shapes) == data
    # a subset joins to a compact container with the rest all zero
    sub = codec.join([parts[0], parts[3]], expected_shapes=shapes)
    out = codec.decode(sub, expected_shapes=shapes)
    full = codec.decode(data, expected_shapes=shapes)
    np.testing.assert_array_equal(out[0], full[0])
    np.testing.assert_array_equal(out[3], full[3])
    assert not out[2].any()
    with pytest.raises(InvalidParameterError, match=r"part 0: .*stores no shapes"):
        codec.join(parts)
    plain_part = codec.split(codec.encode(update, S=32).data)[2]
    with pytest.raises(InvalidParameterError, match="part 1: a self-describing container"):
        codec.join([parts[0], plain_part], expected_shapes=shapes)


def test_argument_checks() -> None:
    with pytest.raises(InvalidParameterError, match="compact must be a bool"):
        codec.encode([np.ones(3, np.float32)], compact=1)  # type: ignore[arg-type]
    assert not codec.is_compact(b"")
    assert not codec.is_compact(b"XXXX\x01\x02")


def test_tiny_tensors_take_the_short_code_where_smaller() -> None:
    # normalization statistics at a fine step: few, large levels
    rng = np.random.default_rng(4)
    levels = [rng.integers(-600, 600, size=16).astype(np.int32), np.arange(-3, 5, dtype=np.int32)]
    steps = [2.0**-10, 0.5]
    small = codec.encode_levels(levels, steps, compact=True).data
    # the same coded tensors under compact headers, without the short code
    headers_only = codec.convert(codec.encode_levels(levels, steps).data, compact=True)
    assert len(small) < len(headers_only)
    out = codec.decode_levels(small, expected_shapes=[(16,), (8,)])
    for (got, step), want, s in zip(out, levels, steps, strict=True):
        np.testing.assert_array_equal(got, want)
        assert step == s
    # values and accumulation as for any uniform tensor
    values = codec.decode(small, expected_shapes=[(16,), (8,)])
    np.testing.assert_array_equal(values[0], levels[0].astype(np.float32) * np.float32(2.0**-10))
    acc = [np.zeros(16), np.zeros(8)]
    codec.decode_accumulate(small, acc, weight=2.0)
    np.testing.assert_array_equal(acc[1], 2.0 * levels[1].astype(np.float64) * 0.5)


def test_golden_compact_container() -> None:
    """codec_c's golden ok_compact.fcd (the shapes the fuzz target uses) decodes with its
    model's shapes and is refused without them; an omitted tensor decodes as zeros."""
    from pathlib import Path

    golden = Path(__file__).resolve().parents[1] / "codec_c" / "tests" / "golden"
    data = (golden / "ok_compact.fcd").read_bytes()
    shapes = [(8, 4, 3, 3), (8,), (16, 40), (16,), ()]
    assert codec.is_compact(data)
    with pytest.raises(InvalidParameterError, match="stores no shapes"):
        codec.inspect(data)
    levels = codec.decode_levels(data, expected_shapes=shapes)
    assert not levels[1][0].any()
    assert levels[1][1] == 1.0
    values = codec.decode(data, expected_shapes=shapes)
    for (lv, step), value in zip(levels, values, strict=True):
        np.testing.assert_array_equal(value, lv.astype(np.float32) * np.float32(step))
