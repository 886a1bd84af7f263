"""Rate control: byte budgets met within ±5 % (or under), in few passes."""

from __future__ import annotations

import numpy as np
import pytest

import fedcodec
from fedcodec.pipeline import (
    HIGH_RATE_LAMBDA,
    BudgetTooSmallError,
    RoundParams,
    encode_with_params,
    min_container_bytes,
)
from fedcodec.pipeline.ratecontrol import DEFAULT_MAX_PASSES, model_rule_step


def _mlp_update(seed: int, scale: float = 1e-3) -> list[np.ndarray]:
    """Laplacian deltas with log-normal row scales, shaped like a 784-128-10 MLP."""
    rng = np.random.default_rng(seed)
    rows = np.exp(rng.normal(0, 0.5, (128, 1)))
    return [
        (rng.laplace(size=(128, 784)) * scale * rows).astype(np.float32),
        (rng.laplace(size=128) * scale).astype(np.float32),
        (rng.laplace(size=(10, 128)) * 5 * scale).astype(np.float32),
        (rng.laplace(size=10) * 10 * scale).astype(np.float32),
    ]


def _conv_like(seed: int) -> list[np.ndarray]:
    """Different shapes and a sparse, heavy-tailed tensor."""
    rng = np.random.default_rng(seed)
    sparse = rng.standard_t(2, size=(64, 3, 3, 32)).astype(np.float32) * 1e-3
    sparse[rng.random(sparse.shape) < 0.7] = 0.0
    return [sparse, (rng.standard_normal((256, 300)) * 2e-4).astype(np.float32)]


@pytest.mark.parametrize("make", [_mlp_update, _conv_like])
@pytest.mark.parametrize("lam", [0.0, HIGH_RATE_LAMBDA, 1.0])
@pytest.mark.parametrize("fraction", [0.002, 0.01, 0.05, 0.2])
def test_budget_within_five_percent(make, lam: float, fraction: float) -> None:  # type: ignore[no-untyped-def]
    tensors = make(0)
    raw = sum(t.nbytes for t in tensors)
    budget = max(int(raw * fraction), 80)
    coded = encode_with_params(tensors, RoundParams(lam=lam, budget_bytes=budget), threads=1)
    size = len(coded.result)
    assert abs(size - budget) <= 0.05 * budget or size <= budget, (size, budget, coded.passes)
    assert abs(size - budget) <= 0.05 * budget, (size, budget, coded.passes)
    assert coded.passes <= DEFAULT_MAX_PASSES
    assert not coded.all_zero_fallback
    assert len({s.step for s in coded.result.stats}) == 1  # one Δ: equal slope


def test_warm_start_needs_fewer_passes() -> None:
    warm_passes = cold_passes = 0
    for seed, budget in [(1, 1000), (2, 3000), (3, 10000), (4, 3000)]:
        params = RoundParams(budget_bytes=budget)
        first = encode_with_params(_mlp_update(seed), params, threads=1)
        values = np.concatenate([t.ravel() for t in _mlp_update(seed)])
        warm = first.steps[0] / float(np.sqrt(np.mean(values.astype(np.float64) ** 2)))
        again = encode_with_params(_mlp_update(seed + 10), params, threads=1, warm_start=warm)
        cold = encode_with_params(_mlp_update(seed + 10), params, threads=1)
        assert abs(len(again.result) - budget) <= 0.05 * budget
        warm_passes += again.passes
        cold_passes += cold.passes
    assert warm_passes <= 0.75 * cold_passes


@pytest.mark.parametrize("budget", [120, 1000, 8000, 40000])
def test_tensor_rule_meets_or_stays_under_the_budget(budget: int) -> None:
    coded = encode_with_params(
        _mlp_update(3), RoundParams(budget_bytes=budget, step_rule="tensor"), threads=1
    )
    size = len(coded.result)
    assert size <= budget * 1.05
    assert coded.passes <= DEFAULT_MAX_PASSES + 1
    if budget >= 1000:
        assert size >= budget * 0.95


def test_budget_below_the_smallest_container_is_an_error() -> None:
    tensors = _mlp_update(0)
    floor = min_container_bytes([t.shape for t in tensors])
    with pytest.raises(BudgetTooSmallError, match="smallest container") as info:
        encode_with_params(tensors, RoundParams(budget_bytes=floor - 1), threads=1)
    assert info.value.min_bytes == floor
    # exactly the floor still works: the all-zero update
    coded = encode_with_params(tensors, RoundParams(budget_bytes=floor), threads=1)
    assert len(coded.result) <= floor * 1.05
    assert coded.result.total_nonzeros == 0


def test_all_zero_input_under_a_budget() -> None:
    tensors = [np.zeros((10, 10), np.float32)]
    coded = encode_with_params(tensors, RoundParams(budget_bytes=500), threads=1)
    assert coded.result.total_nonzeros == 0
    assert coded.passes == 1


def test_fixed_parameters_one_pass_and_step_override() -> None:
    tensors = _mlp_update(0)
    by_s = encode_with_params(tensors, RoundParams(S=32), threads=1)
    assert by_s.passes == 1
    assert by_s.S == 32
    assert by_s.steps[0] == pytest.approx(model_rule_step(tensors, 32), rel=1e-6)
    by_step = encode_with_params(tensors, RoundParams(step=1e-3, budget_bytes=10), threads=1)
    assert by_step.S is None
    assert all(s == pytest.approx(1e-3) for s in by_step.steps)
    per_tensor = encode_with_params(tensors, RoundParams(S=32, step_rule="tensor"), threads=1)
    assert len(set(per_tensor.steps)) == len(tensors)


def test_bytes_fall_as_the_budget_falls() -> None:
    tensors = _mlp_update(5)
    sizes = [
        len(encode_with_params(tensors, RoundParams(budget_bytes=b), threads=1).result)
        for b in (20000, 5000, 1000)
    ]
    assert sizes[0] > sizes[1] > sizes[2]


def test_a_step_grid_keeps_one_magnitude_rows_on_level_times_step() -> None:
    """On a grid (the downlink's), every reconstruction is a multiple of its step.

    An embedding-like table whose nonzero rows are half one-magnitude: coded freely, the
    codec values such rows to 1/16 step (ROWFINE, FORMAT.md §8.1), off any grid of the
    step; with ``step_grid`` the encoder re-codes the levels and the container decodes to
    exactly the returned reconstruction.
    """
    from fedcodec import codec

    rng = np.random.default_rng(0)
    table = np.zeros((2000, 32), np.float32)
    for j, r in enumerate(rng.choice(2000, 200, replace=False)):
        table[r] = rng.choice([-1, 1], 32) * 0.0137 if j % 2 else rng.standard_normal(32) * 0.02
    step = np.float32(0.01)

    def on_levels(values: np.ndarray) -> bool:
        return bool(np.array_equal(np.rint(values / step).astype(np.float32) * step, values))

    free = encode_with_params([table], RoundParams(step=float(step), lam=0.0), threads=1)
    assert not on_levels(free.recon[0])  # the codec valued the one-magnitude rows finer
    grid = float(step) / 4
    coded = encode_with_params(
        [table], RoundParams(step=float(step), lam=0.0), threads=1, step_grid=[grid]
    )
    assert coded.result.stats[0].step == float(step)
    assert on_levels(coded.recon[0])
    assert np.array_equal(codec.decode(coded.result.data)[0], coded.recon[0])
    err = float(np.square(table.astype(np.float64) - coded.recon[0]).sum())
    assert coded.result.stats[0].sq_error == pytest.approx(err)


@pytest.mark.parametrize("lam_scales", [None, [0.5, 2.0]])
def test_recon_is_the_decode_with_rowfine_rows(lam_scales: list[float] | None) -> None:
    # An AdamW-like embedding table (rows of one magnitude from a few values, codec FORMAT.md
    # §8.1 ROWFINE) and a dense tensor. With per-tensor lambda scales the levels are re-joined
    # by encode_levels, which carries no ROWFINE values: recon and squared error must still be
    # what a decoder reconstructs from the container sent.
    rng = np.random.default_rng(3)
    table = np.zeros((300, 64), np.float32)
    for r in range(300):
        if r % 3 == 0:
            table[r] = rng.choice([0.63, 1.71, 2.62]) * rng.choice([-1.0, 1.0], size=64)
        elif r % 3 == 1:
            table[r] = rng.laplace(0.0, 1.5, size=64)
    dense = rng.laplace(0.0, 1.0, size=(32, 48)).astype(np.float32)
    tensors = [table, dense]
    coded = encode_with_params(
        tensors, RoundParams(lam=0.1155, step=1.0), threads=1, lam_scales=lam_scales
    )
    decoded = fedcodec.decode(coded.result.data)
    for t, rec, dec, st in zip(tensors, coded.recon, decoded, coded.result.stats, strict=True):
        np.testing.assert_array_equal(np.asarray(rec), np.asarray(dec))
        err = float(np.square(t.astype(np.float64) - np.asarray(dec, np.float64)).sum())
        assert st.sq_error == pytest.approx(err, rel=1e-6)
    # one call: the table's one-magnitude rows keep their own values (ROWFINE)
    if lam_scales is None:
        levels = fedcodec.decode_levels(coded.result.data)[0][0]
        assert not np.array_equal(np.asarray(decoded[0]), levels * np.float32(1.0))


@pytest.mark.parametrize("make", [_mlp_update, _conv_like])
@pytest.mark.parametrize("fraction", [0.002, 0.01, 0.05])
def test_compact_budget_within_five_percent_and_fixed_steps_in_one_byte(
    make, fraction: float
) -> None:  # type: ignore[no-untyped-def]
    """Compact containers: a budget search rounds steps to bfloat16s (its ±5 % holds);
    fixed parameters round them to the one-byte steps (1 + m/8)·2**e."""
    tensors = make(0)
    shapes = [t.shape for t in tensors]
    budget = max(int(sum(t.nbytes for t in tensors) * fraction), 80)
    coded = encode_with_params(tensors, RoundParams(budget_bytes=budget), threads=1, compact=True)
    assert fedcodec.codec.is_compact(coded.result.data)
    assert abs(len(coded.result.data) - budget) <= 0.05 * budget, (len(coded.result), budget)
    fixed = encode_with_params(tensors, RoundParams(lam=0.5, S=16), threads=1, compact=True)
    for info in fedcodec.inspect(fixed.result.data, expected_shapes=shapes):
        if info.slices:
            mantissa, _ = np.frexp(info.step)
            assert (2 * mantissa * 8) % 1 == 0  # (1 + m/8) * 2**e
    decoded = fedcodec.decode(fixed.result.data, expected_shapes=shapes)
    for got, want in zip(decoded, fixed.recon, strict=True):
        np.testing.assert_array_equal(got, want)
