"""Temporal side information: tensors coded with a reference tensor (FORMAT.md §7.5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fedcodec
from fedcodec.errors import InvalidParameterError

ROOT = Path(__file__).resolve().parents[1]


def _pair(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A 'previous round' and a correlated current update."""
    rng = np.random.default_rng(seed)
    prev = rng.laplace(0.0, 1e-3, size=(64, 80)).astype(np.float32)
    prev[np.abs(prev) < 7e-4] = 0.0
    cur = (0.9 * prev + rng.laplace(0.0, 3e-4, size=prev.shape)).astype(np.float32)
    bias = rng.normal(0.0, 1e-3, size=80).astype(np.float32)
    return {"w": cur, "b": bias}, {"w": prev, "b": bias * 0.5}


@pytest.mark.parametrize("quantizer", ["uniform", "trellis", "trellis8", "dither"])
def test_roundtrip_with_reference(quantizer: str) -> None:
    cur, prev = _pair()
    kwargs = {"dither_seed": 5} if quantizer == "dither" else {"lam": 0.1155}
    with_ref = fedcodec.encode(
        cur, S=64, quantizer=quantizer, reference=prev, return_recon=True, **kwargs
    )
    without = fedcodec.encode(cur, S=64, quantizer=quantizer, **kwargs)
    assert len(with_ref.data) < len(without.data)
    decoded = fedcodec.decode(with_ref.data, names=["w", "b"], reference=prev)
    assert with_ref.recon is not None
    for got, want in zip(decoded.values(), with_ref.recon, strict=True):
        assert np.array_equal(got, want)
    infos = fedcodec.inspect(with_ref.data)
    for info, ref in zip(infos, prev.values(), strict=True):
        assert info.reference_digest == fedcodec.reference_digest(ref, info.step)


def test_levels_and_accumulate_with_reference() -> None:
    cur, prev = _pair(1)
    levels = [np.round(t / 2e-4).astype(np.int32) for t in cur.values()]
    refs = list(prev.values())
    res = fedcodec.encode_levels(levels, 2e-4, reference=refs)
    assert len(res.data) < len(fedcodec.encode_levels(levels, 2e-4).data)
    out = fedcodec.decode_levels(res.data, reference=refs)
    for (got, _), want in zip(out, levels, strict=True):
        assert np.array_equal(got, want)
    accs = {"w": np.ones((64, 80)), "b": np.zeros(80)}
    fedcodec.decode_accumulate(res.data, accs, 2.0, reference={"w": refs[0], "b": refs[1]})
    step = np.float32(2e-4)
    assert np.allclose(accs["w"], 1.0 + 2.0 * (levels[0].astype(np.float32) * step))


def test_partial_reference_and_unused_reference() -> None:
    cur, prev = _pair(2)
    res = fedcodec.encode(cur, lam=0.1, reference={"w": prev["w"]})
    infos = fedcodec.inspect(res.data)
    assert infos[0].reference_digest is not None
    assert infos[1].reference_digest is None
    # the bias was coded without one: a reference given for it is ignored
    a = fedcodec.decode(res.data, reference=[prev["w"], prev["b"]])
    b = fedcodec.decode(res.data, reference=[prev["w"], None])
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_reference_errors_name_the_tensor() -> None:
    cur, prev = _pair(3)
    res = fedcodec.encode(cur, lam=0.1, reference=prev)
    with pytest.raises(InvalidParameterError, match=r"'w'.*coded with a reference"):
        fedcodec.decode(res.data, names=["w", "b"])
    with pytest.raises(InvalidParameterError, match=r"'w'.*reference differs"):
        fedcodec.decode(res.data, names=["w", "b"], reference={"w": -prev["w"], "b": prev["b"]})
    with pytest.raises(InvalidParameterError, match=r"'b'.*shape"):
        fedcodec.decode(res.data, names=["w", "b"], reference={"w": prev["w"], "b": prev["w"]})
    with pytest.raises(InvalidParameterError, match=r"tensor 0.*coded with a reference"):
        fedcodec.decode_levels(res.data)
    with pytest.raises(InvalidParameterError, match="differs"):
        fedcodec.decode_accumulate(
            res.data, [np.zeros((64, 80)), np.zeros(80)], reference=[prev["w"], -prev["b"] - 1]
        )
    with pytest.raises(InvalidParameterError, match=r"'w'.*shape"):
        fedcodec.encode(cur, reference={"w": prev["b"]})
    with pytest.raises(InvalidParameterError, match="finite"):
        fedcodec.encode(cur, reference={"w": np.full((64, 80), np.nan, np.float32)})
    with pytest.raises(InvalidParameterError, match="unknown tensors"):
        fedcodec.encode(cur, reference={"x": prev["w"]})


def test_c_decoder_refuses_a_wrong_reference() -> None:
    """The C library checks the digest itself (for C callers)."""
    from fedcodec import _binding

    cur, prev = _pair(4)
    res = fedcodec.encode([cur["w"]], lam=0.1, reference=[prev["w"]])
    info = _binding.inspect(res.data, _binding.DecodeOptions())[0]
    out = np.empty(info.numel, np.int32)
    target = _binding.DecodeTarget(label="w", numel=info.numel, levels=out, reference=-prev["w"])
    with pytest.raises(InvalidParameterError, match="FC_ERR_MISMATCH"):
        _binding.decode(res.data, _binding.DecodeOptions(), [target])


def test_old_containers_decode_unchanged() -> None:
    """The golden must-decode containers (written before references existed;
    codec_c's test_golden checks their exact levels) decode alike with or
    without a reference passed, and record none."""
    golden = ROOT / "codec_c" / "tests" / "golden"
    # (ok_compact needs its model's shapes: tests/test_compact.py and test_golden read it)
    files = sorted(p for p in golden.glob("ok_*.fcd") if p.name != "ok_compact.fcd")
    assert files
    for path in files:
        data = path.read_bytes()
        infos = fedcodec.inspect(data)
        assert all(info.reference_digest is None for info in infos)
        decoded = fedcodec.decode_levels(data)
        refs = [np.ones(info.shape, np.float32) for info in infos]
        again = fedcodec.decode_levels(data, reference=refs)
        for (a, _), (b, _) in zip(decoded, again, strict=True):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("quantizer", ["uniform", "trellis", None])
def test_reference_kept_only_where_it_pays(quantizer: str | None) -> None:
    """use_reference="auto" (default): a tensor is also coded without its reference and the
    better coding kept; "always" forces every reference.  A correlated reference is kept, an
    unrelated one dropped (that tensor decodes without it), and the container is never larger
    than without references (same levels) or than with every reference forced."""
    cur, prev = _pair(5)
    rng = np.random.default_rng(9)
    cur["u"] = rng.laplace(0.0, 1e-3, size=(48, 40)).astype(np.float32)
    prev["u"] = rng.laplace(0.0, 1e-3, size=(48, 40)).astype(np.float32)  # unrelated
    names = list(cur)

    def code(**kw: object) -> fedcodec.EncodeResult:
        if quantizer is None:  # the same levels every way: compared by size
            levels = {n: np.round(t / 2e-4).astype(np.int32) for n, t in cur.items()}
            return fedcodec.encode_levels(levels, 2e-4, **kw)  # type: ignore[arg-type]
        return fedcodec.encode(cur, lam=0.1155, S=64, quantizer=quantizer, **kw)  # type: ignore[arg-type]

    auto = code(reference=prev)
    forced = code(reference=prev, use_reference="always")
    plain = code()
    used = [info.reference_digest is not None for info in fedcodec.inspect(auto.data)]
    assert used[0]  # w: correlated
    assert not used[2]  # u: unrelated
    assert all(info.reference_digest is not None for info in fedcodec.inspect(forced.data))
    if quantizer is None:
        assert len(auto.data) < len(plain.data)
        assert len(auto.data) < len(forced.data)
    # u decodes without its reference; w needs its own
    refs = {"w": prev["w"], "b": prev["b"]}
    out = fedcodec.decode(auto.data, names=names, reference=refs)
    again = fedcodec.decode(auto.data, names=names, reference=prev)
    assert all(np.array_equal(out[n], again[n]) for n in names)
    with pytest.raises(InvalidParameterError, match="use_reference"):
        code(reference=prev, use_reference="never")
