"""fedcodec.split / fedcodec.join: containers cut by tensor and put back
together without re-coding (fc_split / fc_join)."""

from __future__ import annotations

import itertools
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fedcodec
from fedcodec.cli import main
from fedcodec.errors import CorruptStreamError, InvalidParameterError

QUANTIZERS = ["uniform", "trellis", "trellis8", "dither"]


def _update(seed: int) -> dict[str, np.ndarray]:
    """Tensors of 0..4 dimensions, one with empty rows and columns (a
    transposition candidate), an all-zero one and an empty one."""
    rng = np.random.default_rng(seed)
    w = rng.laplace(0.0, 1e-2, size=(64, 96)).astype(np.float32)
    w[1::3] = 0.0
    w[:, ::4] = 0.0
    return {
        "conv": rng.laplace(0.0, 1e-2, size=(8, 4, 3, 3)).astype(np.float32),
        "w": w,
        "b": rng.normal(0.0, 1e-2, size=96).astype(np.float32),
        "zero": np.zeros((16, 16), np.float32),
        "scalar": np.array(0.25, np.float32),
        "empty": np.zeros((0, 5), np.float32),
    }


def _encode(quantizer: str, transpose: bool, reference: bool, window_set: Any) -> Any:
    update = _update(3)
    previous = {name: (0.8 * t).astype(np.float32) for name, t in _update(3).items()}
    kwargs: dict[str, Any] = {"dither_seed": 77} if quantizer == "dither" else {"lam": 0.1155}
    return (
        update,
        previous,
        fedcodec.encode(
            update,
            S=64,
            quantizer=quantizer,
            transpose=transpose,
            window_set=window_set,
            reference={"w": previous["w"], "b": previous["b"]} if reference else None,
            slice_elems=1024,
            **kwargs,
        ),
    )


@pytest.mark.parametrize("quantizer", QUANTIZERS)
@pytest.mark.parametrize(
    ("transpose", "reference", "window_set"),
    [(False, False, 0), (True, False, "auto"), (False, True, "auto")],
)
def test_parts_decode_like_the_whole_and_join_back(
    quantizer: str, transpose: bool, reference: bool, window_set: Any
) -> None:
    update, previous, result = _encode(quantizer, transpose, reference, window_set)
    names = list(update)
    refs = {"w": previous["w"], "b": previous["b"]} if reference else None
    whole = fedcodec.decode(result.data, names=names, reference=refs)
    whole_levels = fedcodec.decode_levels(
        result.data, reference=[refs.get(n) for n in names] if refs else None
    )
    infos = fedcodec.inspect(result.data)
    if reference:
        assert infos[1].reference_digest is not None
    if quantizer == "dither":
        assert infos[0].dither_seed is not None

    parts = fedcodec.split(result.data, names=names)
    assert list(parts) == names
    for position, (name, part) in enumerate(parts.items()):
        # the part describes its tensor as the whole does: every flag kept
        assert fedcodec.inspect(part) == [infos[position]]
        ref = refs.get(name) if refs else None
        decoded = fedcodec.decode(
            part, names=[name], reference={name: ref} if ref is not None else None
        )
        assert np.array_equal(decoded[name], whole[name])
        assert decoded[name].tobytes() == whole[name].tobytes()  # bit for bit (-0.0, dither)
        ((levels, step),) = fedcodec.decode_levels(part, reference=[ref])
        assert np.array_equal(levels, whole_levels[position][0])
        assert step == whole_levels[position][1]

    # the parts in order give the container back byte for byte
    assert fedcodec.join(parts) == result.data
    assert fedcodec.join(list(parts.values())) == result.data
    # a subset decodes to that subset
    for subset in itertools.combinations(names, 3):
        joined = fedcodec.join({name: parts[name] for name in subset})
        got = fedcodec.decode(
            joined,
            names=list(subset),
            reference={n: refs[n] for n in subset if n in refs} if refs else None,
        )
        for name in subset:
            assert got[name].tobytes() == whole[name].tobytes()


def test_levels_containers_and_accumulation() -> None:
    rng = np.random.default_rng(4)
    levels = [rng.integers(-3, 4, size=shape).astype(np.int32) for shape in [(20, 30), (7,), ()]]
    data = fedcodec.encode_levels(levels, 0.5).data
    parts = fedcodec.split(data)
    assert len(parts) == 3
    assert fedcodec.join(parts) == data
    acc = np.zeros(7)
    fedcodec.decode_accumulate(parts[1], [acc], 2.0)
    assert np.array_equal(acc, 2.0 * 0.5 * levels[1])
    # joining containers that were never split: tensor indices 0.. of the
    # second follow those of the first only if they increase
    later = fedcodec.encode_levels(levels, 0.5)
    with pytest.raises(InvalidParameterError, match="part 1 starts with tensor index 0"):
        fedcodec.join([data, later.data])


def test_empty_containers() -> None:
    empty = fedcodec.encode({}).data
    assert fedcodec.split(empty) == []
    assert fedcodec.split(empty, names=[]) == {}
    assert fedcodec.join([]) == empty
    assert fedcodec.join({}) == empty
    one = fedcodec.encode({"x": np.ones(3, np.float32)}).data
    assert fedcodec.join([empty, one, empty]) == one


def test_many_tensors() -> None:
    rng = np.random.default_rng(5)
    update = {f"t{i}": rng.normal(size=i % 7 + 1).astype(np.float32) for i in range(300)}
    data = fedcodec.encode(update, S=32).data
    parts = fedcodec.split(data, names=list(update))
    assert len(parts) == 300
    assert fedcodec.join(parts) == data
    got = fedcodec.decode(parts["t299"], names=["t299"])
    assert np.array_equal(got["t299"], fedcodec.decode(data, names=list(update))["t299"])


def test_join_refusals_name_the_part_and_tensor() -> None:
    update = _update(6)
    names = list(update)
    parts = fedcodec.split(fedcodec.encode(update, S=32).data, names=names)
    # a tensor twice
    twice = r"part 'w again' \(position 1\) starts with tensor index 1, which does not come after"
    with pytest.raises(
        InvalidParameterError, match=twice + r" index 1 \(the last tensor of part 'w'"
    ) as info:
        fedcodec.join({"w": parts["w"], "w again": parts["w"]})
    assert info.value.result_name == "FC_ERR_INVALID_ARGUMENT"
    with pytest.raises(
        InvalidParameterError, match=r"part 'again' \(position 2\) starts with tensor index 1"
    ):
        fedcodec.join({"conv": parts["conv"], "w": parts["w"], "again": parts["w"]})
    # out of order
    with pytest.raises(InvalidParameterError, match=r"part 'conv' \(position 1\).*part 'b'"):
        fedcodec.join({"b": parts["b"], "conv": parts["conv"]})
    # one dither seed per container
    x = {"a": np.ones(8, np.float32), "b": np.ones(8, np.float32)}
    seven = fedcodec.split(fedcodec.encode(x, S=8, quantizer="dither", dither_seed=7).data)
    eight = fedcodec.split(fedcodec.encode(x, S=8, quantizer="dither", dither_seed=8).data)
    with pytest.raises(
        InvalidParameterError, match=r"tensor index 1 is dithered with seed 8, part 'a' .* seed 7"
    ):
        fedcodec.join({"a": seven[0], "b": eight[1]})
    assert fedcodec.inspect(fedcodec.join([seven[0], seven[1]]))[1].dither_seed == 7
    # a corrupt part: CorruptStreamError naming it
    bad = bytearray(parts["b"])
    bad[len(bad) // 2] ^= 1
    with pytest.raises(CorruptStreamError, match=r"part 'b' \(position 1\).*CRC32"):
        fedcodec.join({"conv": parts["conv"], "b": bytes(bad)})
    with pytest.raises(CorruptStreamError, match=r"part 'b'.*truncated"):
        fedcodec.join({"conv": parts["conv"], "b": parts["b"][:3]})
    with pytest.raises(CorruptStreamError, match=r"part 1.*magic"):
        fedcodec.join([parts["conv"], b"not a container at all"])
    # limits and expected shapes hold for the joined container
    with pytest.raises(CorruptStreamError, match="limit"):
        fedcodec.join(list(parts.values()), max_tensors=5)
    shapes = [t.shape for t in update.values()]
    assert fedcodec.join(list(parts.values()), expected_shapes=shapes) == fedcodec.join(parts)
    with pytest.raises(
        InvalidParameterError, match=r"part 'b' .*shape \(96,\) would be tensor 2.*\(9, 9\)"
    ):
        fedcodec.join(parts, expected_shapes=[shapes[0], shapes[1], (9, 9), *shapes[3:]])
    with pytest.raises(
        InvalidParameterError, match="another number of tensors than expected_shapes"
    ):
        fedcodec.join(parts, expected_shapes=[*shapes, (1,)])
    # not a collection of containers
    with pytest.raises(InvalidParameterError, match="parts must be a sequence"):
        fedcodec.join(parts["b"])
    with pytest.raises(InvalidParameterError, match="bytes-like"):
        fedcodec.join([parts["b"], 5])  # type: ignore[list-item]


def test_split_refusals() -> None:
    data = fedcodec.encode(_update(7), S=32).data
    for cut in (0, 3, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(CorruptStreamError):
            fedcodec.split(data[:cut])
    flipped = bytearray(data)
    flipped[20] ^= 4
    with pytest.raises(CorruptStreamError, match="CRC32"):
        fedcodec.split(bytes(flipped))
    with pytest.raises(InvalidParameterError, match="names has 2 entries"):
        fedcodec.split(data, names=["a", "b"])
    with pytest.raises(InvalidParameterError, match="distinct"):
        fedcodec.split(data, names=["a"] * 6)
    with pytest.raises(InvalidParameterError, match="expected_shapes"):
        fedcodec.split(data, expected_shapes=[(1,)])
    with pytest.raises(CorruptStreamError, match="limit"):
        fedcodec.split(data, max_tensors=2)


def test_parts_are_what_encode_writes_for_one_tensor() -> None:
    update = _update(8)
    data = fedcodec.encode(update, S=64, lam=0.05).data
    parts = fedcodec.split(data)
    # the first tensor has index 0 both ways: the same bytes
    alone = fedcodec.encode({"conv": update["conv"]}, S=64, lam=0.05).data
    assert parts[0] == alone
    # later tensors keep their index: the part is one index varint longer
    b_alone = fedcodec.encode({"b": update["b"]}, S=64, lam=0.05).data
    assert len(parts[2]) == len(b_alone) + 1
    assert fedcodec.inspect(parts[2])[0].index == 2


def test_verify_decodes_part_by_part_and_names_the_corrupt_tensor() -> None:
    update = {
        "a": np.full(100, 0.3, np.float32),
        "b": np.linspace(-1.0, 1.0, 5000, dtype=np.float32),
    }
    data = fedcodec.encode(update, S=64).data
    assert [info.shape for info in fedcodec.codec.verify(data)] == [(100,), (5000,)]
    seen: list[int] = []
    fedcodec.codec.verify(data, visit=lambda position, values: seen.append(values.size))
    assert seen == [100, 5000]
    first, second = fedcodec.split(data)
    # a payload byte of tensor 1 changed, the checksum made valid again
    broken = bytearray(second)
    broken[20] ^= 0x55
    broken[-4:] = zlib.crc32(bytes(broken[:-4])).to_bytes(4, "little")
    joined = fedcodec.join([first, bytes(broken)])
    with pytest.raises(CorruptStreamError, match="FC_ERR_CORRUPT: tensor 1: "):
        fedcodec.codec.verify(joined)


def test_command_line_inspect_split_join(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    update = _update(9)
    names = list(update)
    data = fedcodec.encode(update, S=32, quantizer="dither", dither_seed=5).data
    container = tmp_path / "update.fcd"
    container.write_bytes(data)
    assert main(["inspect", str(container), "--names", ",".join(names)]) == 0
    out = capsys.readouterr().out
    assert f"{len(data):,} bytes, {len(names)} tensors" in out
    parts = fedcodec.split(data, names=names)
    assert all(f"{len(parts[n]):,}" in out for n in names)
    assert "dither seed 0x5" in out

    assert (
        main(["split", str(container), "-o", str(tmp_path / "parts"), "--names", ",".join(names)])
        == 0
    )
    files = [tmp_path / "parts" / f"{i:04d}-{n}.fcd" for i, n in enumerate(names)]
    assert [f.read_bytes() for f in files] == list(parts.values())
    # `fedcodec join DIR/*`: the shell's (sorted) order is the container's order
    globbed = sorted(map(str, (tmp_path / "parts").iterdir()))
    assert main(["join", *globbed, "-o", str(tmp_path / "joined.fcd")]) == 0
    assert (tmp_path / "joined.fcd").read_bytes() == data
    capsys.readouterr()
    # refusals: exit 1 with the reason, naming the part; unreadable files exit 2
    assert main(["join", str(files[1]), str(files[0]), "-o", str(tmp_path / "bad.fcd")]) == 1
    assert "conv.fcd' (position 1) starts with tensor index 0" in capsys.readouterr().err
    assert not (tmp_path / "bad.fcd").exists()
    (tmp_path / "junk.fcd").write_bytes(b"junk")
    assert main(["inspect", str(tmp_path / "junk.fcd")]) == 1
    assert "FC_ERR_VERSION" in capsys.readouterr().err
    assert main(["split", str(tmp_path / "missing.fcd"), "-o", str(tmp_path)]) == 2
    assert main(["split", str(container), "-o", str(tmp_path), "--names", "a,../b,c,d,e,f"]) == 2


def test_command_line_compact_containers_take_shapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A compact container stores no shapes: the commands take them with --shapes, and
    without them say so in the command line's terms (not the Python argument's)."""
    update = _update(4)
    data = fedcodec.encode(update, S=32, lam=0.1155, compact=True).data
    container = tmp_path / "compact.fcd"
    container.write_bytes(data)
    shapes = ",".join("x".join(map(str, t.shape)) or "scalar" for t in update.values())
    out_dir = tmp_path / "parts"
    for command in (["inspect"], ["split", "-o", str(out_dir)]):
        assert main([*command, str(container)]) == 1
        err = capsys.readouterr().err
        assert "compact container stores no shapes" in err
        assert "--shapes" in err
        assert "expected_shapes" not in err
    assert not out_dir.exists()

    assert main(["inspect", str(container), "--shapes", shapes]) == 0
    out = capsys.readouterr().out
    assert f"{len(update)} tensors" in out
    assert "16x16" in out  # the omitted all-zero tensor is listed
    assert "scalar" in out
    assert main(["split", str(container), "-o", str(out_dir), "--shapes", shapes]) == 0
    parts = sorted(map(str, out_dir.iterdir()))
    assert len(parts) == len(update)
    capsys.readouterr()
    assert main(["join", *parts, "-o", str(tmp_path / "joined.fcd")]) == 1
    assert "--shapes" in capsys.readouterr().err
    assert main(["join", *parts, "-o", str(tmp_path / "joined.fcd"), "--shapes", shapes]) == 0
    assert (tmp_path / "joined.fcd").read_bytes() == data
    capsys.readouterr()

    # other shapes: the digest refusal; a malformed --shapes is a usage error
    wrong = shapes.replace("64x96", "96x64")
    assert main(["inspect", str(container), "--shapes", wrong]) == 1
    assert "shape digest" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(container), "--shapes", "4xfour"])
    assert exit_info.value.code == 2
    assert "not a shape: '4xfour'" in capsys.readouterr().err


def test_command_line_split_names_sort_in_container_order_past_9999(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Positions are as wide as the last one: with 10,001 tensors the shell's order of
    the parts (``fedcodec join DIR/*``) is still the container's."""
    update = [np.full(1, i % 5, np.float32) for i in range(10_001)]
    data = fedcodec.encode(update, S=32).data
    container = tmp_path / "many.fcd"
    container.write_bytes(data)
    assert main(["split", str(container), "-o", str(tmp_path / "parts")]) == 0
    globbed = sorted(map(str, (tmp_path / "parts").iterdir()))
    assert Path(globbed[-1]).name == "10000.fcd"
    assert Path(globbed[0]).name == "00000.fcd"
    assert main(["join", *globbed, "-o", str(tmp_path / "joined.fcd")]) == 0
    assert (tmp_path / "joined.fcd").read_bytes() == data
    capsys.readouterr()
