"""The PyTorch helper (fedcodec[torch]): state_dict ↔ arrays, Fisher importance, filter scaling."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch helper tests need torch (fedcodec[torch])")

from torch import nn  # noqa: E402

from fedcodec.pipeline import ModelMismatchError  # noqa: E402
from fedcodec.torch import (  # noqa: E402
    CodedStatistics,
    FilterScaling,
    FisherAccumulator,
    batchnorm_statistics,
    load_arrays,
    state_dict_to_arrays,
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5),
    )


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 1, 6, 6, generator=g), torch.randint(0, 5, (16,), generator=g)


def test_round_trip_keeps_dtypes_and_integer_buffers() -> None:
    """Floats travel as float32 and come back in the model's dtype; counters stay integers."""
    model = _net()
    model[1].running_mean.add_(0.5)
    model[1].num_batches_tracked.fill_(7)
    arrays = state_dict_to_arrays(model)
    assert list(arrays) == list(model.state_dict())
    assert arrays["1.num_batches_tracked"].dtype == np.int64
    assert arrays["0.weight"].dtype == np.float32
    half = _net().to(torch.float64)
    loaded = load_arrays(half, arrays)
    assert loaded["0.weight"].dtype == torch.float64
    assert loaded["1.num_batches_tracked"].dtype == torch.int64
    assert int(loaded["1.num_batches_tracked"]) == 7
    half.load_state_dict(loaded)
    np.testing.assert_array_equal(half[1].running_mean.numpy(), arrays["1.running_mean"])


def test_local_integer_buffers_stay_on_the_client() -> None:
    """integer_buffers='local': not sent, and the model's own counter is kept on load."""
    model = _net()
    model[1].num_batches_tracked.fill_(3)
    arrays = state_dict_to_arrays(model, integer_buffers="local")
    assert "1.num_batches_tracked" not in arrays
    with pytest.raises(ModelMismatchError, match="num_batches_tracked"):
        load_arrays(model, arrays)
    loaded = load_arrays(model, arrays, integer_buffers="local")
    assert int(loaded["1.num_batches_tracked"]) == 3


def test_bad_arrays_name_the_key() -> None:
    """Shape mismatch, unknown key, unmappable dtype: the error names the key."""
    model = _net()
    arrays = state_dict_to_arrays(model)
    bad = dict(arrays)
    bad["4.weight"] = np.zeros((5, 10), np.float32)
    with pytest.raises(ModelMismatchError, match=r"4\.weight"):
        load_arrays(model, bad)
    with pytest.raises(ModelMismatchError, match="extra"):
        load_arrays(model, {**arrays, "extra": np.zeros(1, np.float32)})
    with pytest.raises(ModelMismatchError, match=r"0\.bias"):
        load_arrays(model, {**arrays, "0.bias": np.zeros(4, np.complex64)})
    with pytest.raises(ModelMismatchError, match="cplx"):
        state_dict_to_arrays({"cplx": torch.zeros(2, dtype=torch.complex64)})


def test_batchnorm_statistics_measure_the_model_as_it_is() -> None:
    """The statistics are the batches' own (unbiased variance), and the model is left as it was."""
    model = _net()
    model[1].running_mean.fill_(3.0)
    model[1].momentum = 0.3
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _batch()
    halves = [(x[:8], y[:8]), (x[8:], y[8:])]
    stats = batchnorm_statistics(model, halves)
    assert list(stats) == ["1.running_mean", "1.running_var"]
    with torch.no_grad():
        feats = [model[0](h) for h, _ in halves]
    mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(dim=0)
    var = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in feats]).mean(dim=0)
    torch.testing.assert_close(stats["1.running_mean"], mean)
    torch.testing.assert_close(stats["1.running_var"], var)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])
    assert model[1].momentum == 0.3
    assert not model.training
    # What the docs tell a ClientApp to do: train, then put the measured statistics back.
    model.load_state_dict(stats, strict=False)
    torch.testing.assert_close(model[1].running_mean, mean)
    only_first = batchnorm_statistics(model, iter([x[:8], x[8:]]), max_batches=1)
    torch.testing.assert_close(only_first["1.running_mean"], feats[0].mean(dim=(0, 2, 3)))
    assert batchnorm_statistics(nn.Linear(3, 2), []) == {}
    with pytest.raises(ValueError, match="at least one batch"):
        batchnorm_statistics(model, [])
    with pytest.raises(ValueError, match="max_batches"):
        batchnorm_statistics(model, halves, max_batches=0)
    torch.testing.assert_close(model[1].running_mean, mean)


def test_coded_statistics_measure_the_arrays_they_are_given() -> None:
    """CodedStatistics(arrays, context): the BatchNorm statistics of those arrays as a model,
    on the batches of that context, as float32 numpy arrays by state_dict key."""
    model = _net()
    with torch.no_grad():
        model[0].weight.mul_(3.0)  # the "coded" weights differ from a fresh _net()'s
    arrays = state_dict_to_arrays(model, integer_buffers="local")
    x, _ = _batch()
    contexts: list[object] = []

    def batches(context: object) -> list[torch.Tensor]:
        contexts.append(context)
        return [x]

    hook = CodedStatistics(_net, batches)
    stats = hook(arrays, "node-7")
    assert contexts == ["node-7"]
    assert sorted(stats) == ["1.running_mean", "1.running_var"]
    assert all(v.dtype == np.float32 for v in stats.values())
    expected = batchnorm_statistics(model, [x])
    for key, value in stats.items():
        np.testing.assert_allclose(value, expected[key].numpy(), rtol=1e-5, atol=1e-6)
    fresh = batchnorm_statistics(_net(), [x])
    assert not np.allclose(stats["1.running_var"], fresh["1.running_var"].numpy())
    # the edge SDK calls it without a context
    assert sorted(CodedStatistics(_net, lambda _: [x], max_batches=1)(arrays)) == sorted(stats)
    with pytest.raises(ValueError, match="max_batches"):
        CodedStatistics(_net, batches, max_batches=0)
    with pytest.raises(ModelMismatchError, match=r"0\.weight"):
        hook({**arrays, "0.weight": np.zeros((2, 2), np.float32)})


def test_fisher_accumulates_squared_gradients() -> None:
    """η = mean squared gradient (+ a small floor) under the parameter names."""
    model = _net()
    fisher = FisherAccumulator(model)
    x, y = _batch()
    grads = []
    for _ in range(2):
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        grads.append(model[0].weight.grad.clone())
        fisher.update()
    eta = fisher.importance(floor=0.0)
    assert set(eta) == {n for n, _ in model.named_parameters()}
    expected = ((grads[0] ** 2 + grads[1] ** 2) / 2).numpy()
    np.testing.assert_allclose(eta["0.weight"], expected, rtol=1e-6)
    assert all(np.all(v > 0) for v in fisher.importance(floor=0.01).values())


def test_filter_scaling_trains_scales_and_zeroes_whole_filters() -> None:
    """Scales train with the L1 regularizer; fold() leaves vanished filters at their base."""
    model = _net()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    scaling = FilterScaling(model, l1=0.05, threshold=0.5)
    assert scaling.keys == ["0.weight", "4.weight"]
    opt = torch.optim.SGD(list(scaling.parameters()), lr=0.1)
    assert all(
        p is not model[0].parametrizations["weight"].original for p in opt.param_groups[0]["params"]
    )
    fisher = FisherAccumulator(model, scaling)
    x, y = _batch()
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) + scaling.penalty()
        loss.backward()
        fisher.update()
        opt.step()
    scales = scaling.scales()
    assert scales["0.weight"].shape == (4,)
    assert np.any(scales["0.weight"] < 1.0)  # the regularizer pulled
    with pytest.raises(ModelMismatchError, match="fold"):
        state_dict_to_arrays(model)
    vanished = scaling.fold()
    after = model.state_dict()
    assert list(after) == list(base)
    for key in ("0.weight", "4.weight"):
        small = np.abs(scales[key]) < 0.5
        update = (after[key] - base[key]).numpy().reshape(len(small), -1)
        assert np.all(update[small] == 0.0)
        assert np.all(np.any(update[~small] != 0.0, axis=1))
        assert vanished[key] == pytest.approx(float(small.mean()))
    assert set(fisher.importance()) >= {"0.weight", "4.weight", "1.weight"}
    with pytest.raises(RuntimeError, match="already"):
        scaling.fold()


def test_core_package_does_not_import_torch(tmp_path: Path) -> None:
    """Importing fedcodec, its pipeline and the Flower plugin leaves torch unloaded."""
    code = "import sys, fedcodec, fedcodec.pipeline, fedcodec.flower; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.strip() == "False"
