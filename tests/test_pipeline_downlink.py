"""Downlink: deltas, keyframes, digest checks, and one stream for every client."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedcodec.pipeline import (
    DigestMismatchError,
    DownlinkEncoder,
    DownlinkPackage,
    ModelReceiver,
    ModelVersion,
    RoundParams,
    StateFormatError,
    model_digest,
)
from fedcodec.pipeline.downlink import DEFAULT_KEYFRAME_BITS

SHAPES = {"w": (32, 48), "b": (32,), "out": (6, 32)}


def _versions(count: int, seed: int = 0) -> list[ModelVersion]:
    rng = np.random.default_rng(seed)
    current = {k: (rng.standard_normal(s) * 0.1).astype(np.float32) for k, s in SHAPES.items()}
    current["b"][:] = 0.0  # a zero-initialized tensor
    out = []
    for v in range(count):
        out.append(ModelVersion.create(v, current))
        current = {
            k: x + (rng.laplace(size=x.shape) * 3e-3).astype(np.float32) for k, x in current.items()
        }
    return out


def _stream(
    versions: list[ModelVersion],
    keep: int = 3,
    params: RoundParams | None = None,
    cumulative: bool | None = None,
) -> DownlinkEncoder:
    down = DownlinkEncoder(
        versions[0].spec,
        params=params or RoundParams(budget_bytes=900),
        keep=keep,
        threads=1,
        cumulative=cumulative,
    )
    down.publish(versions[0])
    return down


def test_first_contact_gets_a_near_lossless_keyframe_then_deltas() -> None:
    versions = _versions(6)
    down = _stream(versions)
    rx = ModelReceiver(versions[0].spec, threads=1)
    first = down.package_for("c0")
    assert first.is_keyframe
    assert first.deltas == ()
    model = rx.apply(first)
    bits = DEFAULT_KEYFRAME_BITS
    for k in SHAPES:  # grid <= 2**-bits of the tensor's max: error <= half a grid step
        err = np.max(np.abs(model.tensors[k] - versions[0].tensors[k]))
        scale = np.max(np.abs(versions[0].tensors["w"]))
        assert err <= scale * 2.0 ** -(bits + 1)
    sizes = []
    for v in versions[1:]:
        release = down.publish(v)
        package = down.package_for("c0", have_version=rx.version, have_digest=rx.digest)
        assert not package.is_keyframe
        assert package.deltas == (release.delta,)
        rx.apply(package)  # verifies the digest
        assert rx.digest == release.digest == down.digest_of(v.version)
        sizes.append(len(package))
    assert max(sizes) < len(first) / 2
    # server-side error feedback: the stream follows the exact model with a bounded residual
    residual = np.concatenate(
        [(versions[-1].tensors[k] - rx.model.tensors[k]).ravel() for k in SHAPES]
    )
    step_change = np.concatenate(
        [(versions[-1].tensors[k] - versions[-2].tensors[k]).ravel() for k in SHAPES]
    )
    assert np.sqrt(np.mean(residual**2)) < 2 * np.sqrt(np.mean(step_change**2))


def test_late_joiner_and_lagging_client_hold_the_same_model_bit_for_bit() -> None:
    versions = _versions(9)
    down = _stream(versions, keep=3, cumulative=False)
    regular = ModelReceiver(versions[0].spec)
    lagging = ModelReceiver(versions[0].spec)
    regular.apply(down.package_for("regular"))
    lagging.apply(down.package_for("lagging"))
    for v in versions[1:5]:
        down.publish(v)
        regular.apply(down.package_for("regular", have_version=regular.version))
    # lagging is 4 versions behind with keep=3: keyframe
    package = down.package_for("lagging", have_version=lagging.version)
    assert package.is_keyframe
    lagging.apply(package)
    down.publish(versions[5])
    down.publish(versions[6])
    regular.apply(down.package_for("regular", have_version=4))
    # 2 behind: two deltas, no keyframe
    package = down.package_for("lagging", have_version=4)
    assert not package.is_keyframe
    assert len(package.deltas) == 2
    lagging.apply(package)
    late = ModelReceiver(versions[0].spec)
    late.apply(down.package_for("late"))
    assert regular.digest == lagging.digest == late.digest
    for k in SHAPES:
        assert np.array_equal(regular.model.tensors[k], late.model.tensors[k])
    # from here on all three follow one stream
    down.publish(versions[7])
    for rx, cid in ((regular, "regular"), (lagging, "lagging"), (late, "late")):
        pkg = down.package_for(cid)  # the server remembers what it sent
        assert not pkg.is_keyframe
        rx.apply(pkg)
    assert regular.digest == lagging.digest == late.digest
    # an up-to-date client gets an empty package
    assert len(down.package_for("late")) == 0


def test_digest_mismatch_is_detected_and_a_keyframe_repairs_it() -> None:
    versions = _versions(3)
    down = _stream(versions)
    rx = ModelReceiver(versions[0].spec)
    rx.apply(down.package_for("c0"))
    down.publish(versions[1])
    good = down.package_for("c0", have_version=0)
    tampered = DownlinkPackage(good.version, "f" * 64, None, good.from_version, good.deltas)
    with pytest.raises(DigestMismatchError, match="keyframe"):
        rx.apply(tampered)
    assert rx.version == 0  # unchanged
    # a client whose model was damaged reports its digest: the server answers with a keyframe
    pkg = down.package_for("c0", have_version=0, have_digest="0" * 64)
    assert pkg.is_keyframe
    rx.apply(pkg)
    assert rx.version == 1
    assert rx.digest == down.digest_of(1)
    # deltas that start from a version the client does not hold
    down.publish(versions[2])
    stale = DownlinkPackage(2, down.digest_of(2) or "", None, 0, ())
    with pytest.raises(DigestMismatchError, match="request a keyframe"):
        rx.apply(stale)
    # an explicit keyframe request
    assert down.package_for("c0", keyframe=True).is_keyframe


def test_unknown_version_gets_a_keyframe() -> None:
    versions = _versions(2)
    down = _stream(versions)
    down.publish(versions[1])
    assert down.package_for("c0", have_version=57).is_keyframe
    assert down.keyframes_sent == 1
    assert down.bytes_sent == down.keyframe_bytes_sent > 0


def test_stream_stays_on_its_grid_and_matches_the_digest() -> None:
    versions = _versions(5)
    down = _stream(versions, params=RoundParams(lam=0.0, S=500))
    for v in versions[1:]:
        down.publish(v)
    model = down.stream_model()
    grid = down.grid
    assert grid is not None
    for (name, _), g in zip(model.spec, grid, strict=True):
        levels = np.rint(model.tensors[name] / g)
        assert np.array_equal(levels.astype(np.float32) * np.float32(g), model.tensors[name])
    assert model.digest == model_digest(model.spec, dict(model.tensors))


def test_receiver_state_round_trip(tmp_path: Path) -> None:
    versions = _versions(2)
    down = _stream(versions)
    rx = ModelReceiver(versions[0].spec)
    rx.apply(down.package_for("c0"))
    path = tmp_path / "rx.npz"
    rx.save_state(path)
    again = ModelReceiver.restore(path, versions[0].spec)
    assert again.version == rx.version
    assert again.digest == rx.digest
    down.publish(versions[1])
    again.apply(down.package_for("c0", have_version=again.version, have_digest=again.digest))
    assert again.version == 1
    empty = ModelReceiver(versions[0].spec)
    empty.save_state(tmp_path / "empty.npz")
    assert ModelReceiver.restore(tmp_path / "empty.npz", versions[0].spec).version is None
    other = ModelVersion.create(0, {"x": np.zeros(3, np.float32)})
    with pytest.raises(StateFormatError):
        ModelReceiver.restore(path, other.spec)


def test_a_chain_larger_than_the_keyframe_is_replaced_by_it() -> None:
    versions = _versions(6)
    # fine steps: each delta costs a sizeable part of a keyframe
    down = _stream(versions, keep=8, params=RoundParams(lam=0.0, S=2000), cumulative=False)
    rx = ModelReceiver(versions[0].spec)
    rx.apply(down.package_for("c0"))
    chain = 0
    for v in versions[1:]:
        release = down.publish(v)
        assert release.delta is not None
        chain += len(release.delta)
    package = down.package_for("c0", have_version=0)
    assert chain > len(down.keyframe())
    assert package.is_keyframe
    rx.apply(package)
    assert rx.digest == down.digest_of(5)


def test_downlink_state_round_trip_continues_the_same_stream(tmp_path: Path) -> None:
    versions = _versions(6)
    a = _stream(versions, keep=3)
    rx = ModelReceiver(versions[0].spec)
    rx.apply(a.package_for("c0"))
    for v in versions[1:4]:
        a.publish(v)
    path = tmp_path / "downlink.npz"
    a.save_state(path)
    b = DownlinkEncoder(versions[0].spec, params=RoundParams(budget_bytes=900), keep=3, threads=1)
    b.load_state_file(path)
    assert b.latest_version == 3
    assert b.client_versions == a.client_versions
    assert b.stream_model().digest == a.stream_model().digest
    # same packages for a lagging client, same bytes for the next version
    assert b.package_for("c0", have_version=0).deltas == a.package_for("c0", have_version=0).deltas
    assert b.publish(versions[4]).delta == a.publish(versions[4]).delta
    assert b.keyframe() == a.keyframe()
    rx.apply(b.package_for("c0", have_version=rx.version))
    assert rx.digest == a.digest_of(4)
    # a state of nothing published, and a state of another model
    empty = DownlinkEncoder(versions[0].spec)
    empty.load_state(*DownlinkEncoder(versions[0].spec).state())
    assert empty.latest_version is None
    other = DownlinkEncoder(ModelVersion.create(0, {"x": np.zeros(3, np.float32)}).spec)
    with pytest.raises(StateFormatError, match="another model"):
        other.load_state_file(path)
    with pytest.raises(StateFormatError, match="keyframe_bits"):
        DownlinkEncoder(versions[0].spec, keyframe_bits=6).load_state_file(path)
