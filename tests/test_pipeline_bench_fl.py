"""The FL benchmark's building blocks (the end-to-end run is ``fedcodec bench fl --quick``)."""

from __future__ import annotations

import numpy as np

from fedcodec_bench import fl


def test_dirichlet_partition_covers_every_example_once() -> None:
    labels = np.repeat(np.arange(10), 50)
    parts = fl.dirichlet_partition(labels, 8, 0.5, np.random.default_rng(0))
    joined = np.concatenate(parts)
    assert np.array_equal(np.sort(joined), np.arange(len(labels)))
    assert min(len(p) for p in parts) >= 10
    # label skew: some client is far from the uniform label mix
    shares = [np.bincount(labels[p], minlength=10) / len(p) for p in parts]
    assert max(float(s.max()) for s in shares) > 0.3


def test_mlp_backward_matches_finite_differences() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    p = fl.init_mlp(rng, 5, 4, 3)
    p["b1"] += 0.1  # keep ReLUs away from their kink

    def loss(q: dict[str, np.ndarray]) -> float:
        z = np.maximum(x.astype(np.float64) @ q["w1"].T + q["b1"], 0) @ q["w2"].T + q["b2"]
        z -= z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(6), y]))

    lr = 1e-3
    stepped = fl.train_local(p, x, y, epochs=1, batch=6, lr=lr, rng=np.random.default_rng(0))
    for name in p:
        grad = (p[name].astype(np.float64) - stepped[name]) / lr
        numeric = np.zeros_like(grad)
        for i in range(p[name].size):
            q = {k: v.astype(np.float64) for k, v in p.items()}
            q[name].flat[i] += 1e-5
            up = loss(q)
            q[name].flat[i] -= 2e-5
            numeric.flat[i] = (up - loss(q)) / 2e-5
        np.testing.assert_allclose(grad, numeric, atol=2e-3)
