"""Client side of the pipeline: error feedback, state save/restore, sparsification, importance."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fedcodec
from fedcodec.pipeline import (
    BudgetTooSmallError,
    ModelMismatchError,
    ModelVersion,
    RoundParams,
    Sparsification,
    StateFormatError,
    UpdateEncoder,
)

SHAPES = {"w1": (32, 64), "b1": (32,), "w2": (10, 32), "b2": (10,)}


def _model(seed: int, scale: float = 0.1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s) * scale).astype(np.float32) for k, s in SHAPES.items()}


def _laplace_delta(rng: np.random.Generator, scale: float = 1e-2) -> dict[str, np.ndarray]:
    return {k: (rng.laplace(size=s) * scale).astype(np.float32) for k, s in SHAPES.items()}


def test_error_feedback_sum_of_decoded_tracks_sum_of_deltas() -> None:
    rng = np.random.default_rng(1)
    base = ModelVersion.create(0, _model(0))
    enc = UpdateEncoder(base.spec, "c0", threads=1)
    params = RoundParams(budget_bytes=300)  # a few % of the float32 size: heavy quantization
    sum_true = {k: np.zeros(s) for k, s in SHAPES.items()}
    sum_decoded = {k: np.zeros(s) for k, s in SHAPES.items()}
    norms = []
    for r in range(40):
        delta = _laplace_delta(rng)
        local = {k: base.tensors[k] + delta[k] for k in SHAPES}
        true = {k: local[k] - base.tensors[k] for k in SHAPES}  # the float32 delta coded
        update = enc.encode(local, base, params, round_number=r, num_examples=5)
        decoded = fedcodec.decode(update.data, names=list(SHAPES))
        for k in SHAPES:
            sum_true[k] += true[k]
            sum_decoded[k] += decoded[k]
        norms.append(enc.residual_norm())
        # sum(decoded) = sum(true) - residual, up to float32 rounding of the adds
        for k in SHAPES:
            gap = sum_true[k] - sum_decoded[k] - enc.residual[k]
            assert np.max(np.abs(gap)) < 1e-5 * (r + 1)
    # Bounded: the residual stops growing (late rounds no larger than 2x the early peak),
    # while the sum of true deltas keeps growing like sqrt(rounds).
    assert max(norms[20:]) < 2.0 * max(norms[:20])
    total_true = np.sqrt(sum(float(np.sum(v**2)) for v in sum_true.values()))
    assert norms[-1] < total_true


def test_without_error_feedback_the_residual_stays_zero() -> None:
    base = ModelVersion.create(0, _model(0))
    enc = UpdateEncoder(base.spec, "c0", threads=1, error_feedback=False)
    local = {k: v + 0.01 for k, v in base.tensors.items()}
    enc.encode(local, base, RoundParams(budget_bytes=200), round_number=0, num_examples=1)
    assert enc.residual_norm() == 0.0


def test_update_carries_version_digest_and_statistics() -> None:
    base = ModelVersion.create(7, _model(0))
    enc = UpdateEncoder(base.spec, "phone-3", threads=1)
    local = {k: v + np.float32(0.02) * np.sign(v) for k, v in base.tensors.items()}
    update = enc.encode(local, base, RoundParams(lam=0.2, S=32), round_number=3, num_examples=42)
    assert (update.client_id, update.round_number, update.num_examples) == ("phone-3", 3, 42)
    assert (update.base_version, update.base_digest) == (7, base.digest)
    s = update.stats
    assert s.bytes == len(update.data)
    assert s.lam == pytest.approx(0.2)
    assert s.S == 32
    assert s.passes == 1
    assert [t.name for t in s.tensors] == list(SHAPES)
    assert sum(t.bytes for t in s.tensors) < s.bytes  # plus the container header
    steps = {t.step for t in s.tensors}
    assert len(steps) == 1  # model step rule: one Δ for all tensors
    assert 0.0 < s.density <= 1.0
    assert s.mse > 0.0
    assert np.isfinite(s.snr_db)
    assert s.seconds > 0
    assert s.to_json()["tensors"][0]["name"] == "w1"


def test_state_round_trip_continues_identically(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    base = ModelVersion.create(0, _model(0))
    params = RoundParams(budget_bytes=400)
    a = UpdateEncoder(base.spec, "c1", threads=1)
    for r in range(3):
        local = {k: base.tensors[k] + d for k, d in _laplace_delta(rng).items()}
        a.encode(local, base, params, round_number=r, num_examples=3)
    path = tmp_path / "state.npz"
    a.save_state(path)
    b = UpdateEncoder.restore(path, base.spec, "c1", threads=1)
    for k in SHAPES:
        assert np.array_equal(a.residual[k], b.residual[k])
    assert b.rounds_encoded == 3
    assert b.last_round == 2
    local = {k: base.tensors[k] + d for k, d in _laplace_delta(rng).items()}
    ua = a.encode(local, base, params, round_number=3, num_examples=3)
    ub = b.encode(local, base, params, round_number=3, num_examples=3)
    assert ua.data == ub.data  # the warm start of the rate control came along too


def test_state_survives_a_process_restart(tmp_path: Path) -> None:
    base = ModelVersion.create(0, _model(0))
    enc = UpdateEncoder(base.spec, "c9", threads=1)
    local = {k: v + 0.013 for k, v in base.tensors.items()}
    enc.encode(local, base, RoundParams(budget_bytes=250), round_number=0, num_examples=1)
    path = tmp_path / "c9.npz"
    enc.save_state(path)
    script = (
        "import sys, numpy as np\n"
        "from fedcodec.pipeline import ModelSpec, UpdateEncoder\n"
        f"spec = ModelSpec(tuple({list(SHAPES)!r}), tuple({list(SHAPES.values())!r}))\n"
        "e = UpdateEncoder.restore(sys.argv[1], spec, 'c9')\n"
        "print(repr(e.residual_norm()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,  # not the repository root: import the installed fedcodec
    )
    assert float(out.stdout) == enc.residual_norm()
    with np.load(path, allow_pickle=False) as data:  # plain arrays only
        assert all(data[k].dtype != object for k in data.files)


def test_restore_rejects_another_model_or_client(tmp_path: Path) -> None:
    base = ModelVersion.create(0, _model(0))
    path = tmp_path / "s.npz"
    UpdateEncoder(base.spec, "c1").save_state(path)
    with pytest.raises(StateFormatError, match="client"):
        UpdateEncoder.restore(path, base.spec, "c2")
    other = ModelVersion.create(0, {"w1": np.zeros((3, 3), np.float32)})
    with pytest.raises(StateFormatError, match="names or shapes"):
        UpdateEncoder.restore(path, other.spec, "c1")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(StateFormatError):
        UpdateEncoder.restore(garbage, base.spec, "c1")


def test_wrong_tensor_set_or_shapes_are_rejected() -> None:
    base = ModelVersion.create(0, _model(0))
    enc = UpdateEncoder(base.spec, "c0")
    params = RoundParams()
    missing = {k: v for k, v in base.tensors.items() if k != "b2"}
    with pytest.raises(ModelMismatchError, match="missing"):
        enc.encode(missing, base, params, round_number=0, num_examples=1)
    extra = dict(base.tensors) | {"w3": np.zeros(3, np.float32)}
    with pytest.raises(ModelMismatchError, match="unexpected"):
        enc.encode(extra, base, params, round_number=0, num_examples=1)
    wrong = dict(base.tensors) | {"w1": np.zeros((64, 32), np.float32)}
    with pytest.raises(ModelMismatchError, match="shape"):
        enc.encode(wrong, base, params, round_number=0, num_examples=1)
    nan = dict(base.tensors) | {"b1": np.full(32, np.nan, np.float32)}
    with pytest.raises(ModelMismatchError, match="NaN"):
        enc.encode(nan, base, params, round_number=0, num_examples=1)
    with pytest.raises(ModelMismatchError, match="importance"):
        enc.encode(
            dict(base.tensors),
            base,
            params,
            round_number=0,
            num_examples=1,
            importance={"w1": np.ones((2, 2))},
        )


def test_budget_too_small_is_a_clear_error_and_keeps_the_residual() -> None:
    base = ModelVersion.create(0, _model(0))
    enc = UpdateEncoder(base.spec, "c0", threads=1)
    local = {k: v + 0.01 for k, v in base.tensors.items()}
    enc.encode(local, base, RoundParams(budget_bytes=300), round_number=0, num_examples=1)
    before = {k: v.copy() for k, v in enc.residual.items()}
    with pytest.raises(BudgetTooSmallError) as info:
        enc.encode(local, base, RoundParams(budget_bytes=5), round_number=1, num_examples=1)
    assert info.value.min_bytes > 5
    assert isinstance(info.value, ValueError)
    assert all(np.array_equal(before[k], enc.residual[k]) for k in SHAPES)


def test_topk_keeps_the_largest_and_feeds_the_rest_back() -> None:
    base = ModelVersion.create(0, _model(0))
    enc = UpdateEncoder(base.spec, "c0", threads=1)
    rng = np.random.default_rng(3)
    local = {k: base.tensors[k] + d for k, d in _laplace_delta(rng).items()}
    params = RoundParams(lam=0.0, S=4096, sparsification=Sparsification(topk=0.05))
    update = enc.encode(local, base, params, round_number=0, num_examples=1)
    decoded = fedcodec.decode(update.data, names=list(SHAPES))
    numel = sum(np.prod(s) for s in SHAPES.values())
    nonzero = sum(int(np.count_nonzero(v)) for v in decoded.values())
    assert nonzero <= int(np.ceil(0.05 * numel))
    assert update.stats.sparsified == pytest.approx(0.95, abs=0.01)
    # what was dropped is in the residual
    delta = {k: local[k] - base.tensors[k] for k in SHAPES}
    for k in SHAPES:
        np.testing.assert_allclose(decoded[k] + enc.residual[k], delta[k], atol=1e-6)
    kept = np.concatenate([np.abs(delta[k]).ravel()[decoded[k].ravel() != 0] for k in SHAPES])
    dropped = np.concatenate([np.abs(delta[k]).ravel()[decoded[k].ravel() == 0] for k in SHAPES])
    assert kept.min() >= np.quantile(dropped, 0.9)


def _sparse_rounds(
    params: RoundParams, rounds: list[int]
) -> tuple[UpdateEncoder, ModelVersion, dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    """Encode one fixed delta in each of ``rounds``; the residual before the last encode."""
    base = ModelVersion.create(0, _model(0))
    enc = UpdateEncoder(base.spec, "c0", threads=1)
    local = {k: base.tensors[k] + d for k, d in _laplace_delta(np.random.default_rng(5)).items()}
    residual: dict[str, np.ndarray] = {}
    decoded = []
    for r in rounds:
        residual = {k: np.array(v) for k, v in enc.residual.items()}
        update = enc.encode(local, base, params, round_number=r, num_examples=1)
        decoded.append(fedcodec.decode(update.data, names=list(SHAPES)))
    return enc, base, residual, decoded


def test_stale_decay_scales_the_residual_by_the_rounds_missed() -> None:
    params = RoundParams(lam=0.0, S=4096, sparsification=Sparsification(topk=0.05))
    delta = {
        k: (d + _model(0)[k]) - _model(0)[k]
        for k, d in _laplace_delta(np.random.default_rng(5)).items()
    }
    # back after missing rounds 2..4: the residual enters the update at 0.5**3
    enc, _, before, decoded = _sparse_rounds(params.replace(stale_decay=0.5), [0, 1, 5])
    assert enc.residual_scale(params.replace(stale_decay=0.5), 9) == 0.5**3
    assert sum(float(np.abs(v).sum()) for v in before.values()) > 0
    for k in SHAPES:
        np.testing.assert_allclose(
            decoded[-1][k] + enc.residual[k], delta[k] + np.float32(0.125) * before[k], atol=1e-6
        )
    # consecutive rounds (full participation) and stale_decay=1: nothing decays, same bytes
    _, _, _, plain = _sparse_rounds(params, [0, 1, 5])
    _, _, _, consecutive = _sparse_rounds(params.replace(stale_decay=0.5), [0, 1, 2])
    _, _, _, consecutive_plain = _sparse_rounds(params, [0, 1, 2])
    for k in SHAPES:
        np.testing.assert_array_equal(consecutive[-1][k], consecutive_plain[-1][k])
    assert any(not np.array_equal(plain[-1][k], decoded[-1][k]) for k in SHAPES)
    # 0.0 drops the residual after any absence: the update is the fresh delta's top-k alone
    _, _, _, dropped = _sparse_rounds(params.replace(stale_decay=0.0), [0, 3])
    _, _, _, fresh = _sparse_rounds(params, [3])
    for k in SHAPES:
        np.testing.assert_array_equal(dropped[-1][k], fresh[0][k])


def test_threshold_and_row_sparsification() -> None:
    base = ModelVersion.create(0, {"w": np.zeros((20, 10), np.float32)})
    rows = np.arange(1, 21, dtype=np.float32)[:, None] * np.ones((1, 10), np.float32) * 1e-3
    enc = UpdateEncoder(base.spec, "c0", threads=1, error_feedback=False)
    up = enc.encode(
        {"w": rows},
        base,
        RoundParams(lam=0.0, S=4096, sparsification=Sparsification(rows=0.25)),
        round_number=0,
        num_examples=1,
    )
    w = fedcodec.decode(up.data)[0]
    assert np.array_equal(np.flatnonzero(np.abs(w).sum(axis=1)), np.arange(15, 20))
    up = enc.encode(
        {"w": rows},
        base,
        RoundParams(lam=0.0, S=4096, sparsification=Sparsification(threshold=0.0105)),
        round_number=1,
        num_examples=1,
    )
    w = fedcodec.decode(up.data)[0]
    assert np.array_equal(np.flatnonzero(np.abs(w).sum(axis=1)), np.arange(10, 20))


def test_importance_moves_accuracy_to_important_weights() -> None:
    rng = np.random.default_rng(4)
    base = ModelVersion.create(0, {"w": np.zeros((64, 64), np.float32)})
    delta = (rng.laplace(size=(64, 64)) * 1e-2).astype(np.float32)
    eta = np.ones((64, 64), np.float32)
    eta[:8] = 100.0  # the first rows matter much more
    params = RoundParams(lam=0.5, S=8)
    errors = []
    for importance in (None, {"w": eta}):
        enc = UpdateEncoder(base.spec, "c0", threads=1, error_feedback=False)
        up = enc.encode(
            {"w": delta}, base, params, round_number=0, num_examples=1, importance=importance
        )
        w = fedcodec.decode(up.data)[0]
        errors.append(float(np.mean((w[:8] - delta[:8]) ** 2)))
    assert errors[1] < 0.7 * errors[0]


def _two_tensor_update(
    importance_scale: str, importance: dict[str, np.ndarray] | None, params: RoundParams
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """Decoded update and delta of a model whose tensor "a" is 10x as important as "b"."""
    rng = np.random.default_rng(7)
    zeros = {"a": np.zeros((48, 64), np.float32), "b": np.zeros((48, 64), np.float32)}
    base = ModelVersion.create(0, zeros)
    delta = {k: (rng.laplace(size=v.shape) * 1e-2).astype(np.float32) for k, v in zeros.items()}
    enc = UpdateEncoder(base.spec, "c0", threads=1)
    up = enc.encode(
        delta,
        base,
        params,
        round_number=0,
        num_examples=1,
        importance=importance,
        importance_scale=importance_scale,  # type: ignore[arg-type]
    )
    decoded = fedcodec.decode(up.data, names=["a", "b"])
    # error feedback saw exactly what a decoder reconstructs
    for k in zeros:
        assert np.array_equal(np.subtract(delta[k], decoded[k]), enc.residual[k])
    return decoded, delta, len(up)


def test_global_importance_scale_keeps_the_importance_of_whole_tensors() -> None:
    eta = {"a": np.full((48, 64), 10.0, np.float32), "b": np.ones((48, 64), np.float32)}
    params = RoundParams(lam=2.0, S=16)

    def mse(dec: dict[str, np.ndarray], delta: dict[str, np.ndarray], k: str) -> float:
        return float(np.mean((dec[k] - delta[k]) ** 2))

    plain, delta, _ = _two_tensor_update("tensor", None, params)
    per_tensor, _, _ = _two_tensor_update("tensor", eta, params)
    global_, _, _ = _two_tensor_update("global", eta, params)
    # per tensor, a constant importance normalizes away: the same levels as no importance
    for k in ("a", "b"):
        assert np.array_equal(per_tensor[k], plain[k])
    # globally, "a" (10x) is coded more finely and "b" more coarsely than with equal weight
    assert mse(global_, delta, "a") < 0.8 * mse(plain, delta, "a")
    assert mse(global_, delta, "b") > 1.2 * mse(plain, delta, "b")


def test_global_importance_scale_is_the_per_tensor_rule_when_the_means_agree() -> None:
    rng = np.random.default_rng(3)
    eta = {k: rng.uniform(0.5, 1.5, (48, 64)).astype(np.float32) for k in ("a", "b")}
    eta["b"] *= np.float32(eta["a"].mean() / eta["b"].mean())
    params = RoundParams(lam=1.0, S=16)
    a, _, _ = _two_tensor_update("tensor", eta, params)
    b, _, _ = _two_tensor_update("global", eta, params)
    for k in ("a", "b"):
        assert np.array_equal(a[k], b[k])


def test_global_importance_scale_meets_a_budget() -> None:
    eta = {"a": np.full((48, 64), 10.0, np.float32)}  # "b" has no importance: eta = 1
    params = RoundParams(lam=0.5, budget_bytes=900)
    _, _, size = _two_tensor_update("global", eta, params)
    assert abs(size - 900) <= 0.05 * 900
    with pytest.raises(ValueError, match="importance_scale"):
        _two_tensor_update("model", eta, params)


def test_importance_lam_scales_are_the_global_over_the_tensor_means() -> None:
    from fedcodec.pipeline.ratecontrol import importance_lam_scales

    eta = [np.full((10, 10), 4.0, np.float32), None, np.zeros((0,), np.float32)]
    scales = importance_lam_scales(eta, [(10, 10), (300,), (0,)])
    assert scales == pytest.approx([1.75 / 4.0, 1.75, 1.0])
    with pytest.raises(ValueError, match="sums to zero"):
        importance_lam_scales([np.zeros(4, np.float32)], [(4,)])
