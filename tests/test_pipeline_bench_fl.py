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


def _tiny_federation() -> fl.Federation:
    sc = fl.Scenario(
        "mnist", "dirichlet", 0.5, clients=8, per_round=3, rounds=6, epochs=1, max_steps=3
    )
    return fl.make_federation(sc, seed=0)


def test_every_method_runs_the_same_loop_with_a_shared_initial_model() -> None:
    fed = _tiny_federation()
    raw = 4 * fed.numel
    methods = {
        "fp32": fl.Method("fp32", compressor=fl.cp.Float32()),
        "int8": fl.Method("int8", compressor=fl.cp.Uniform8()),
        "fedcodec": fl.fedcodec_method("fedcodec", lam=0.5, S=16, topk=0.02, down_topk=0.02),
    }
    runs = {name: fl.run_method(fed, m) for name, m in methods.items()}
    # After round 0 every scheduled client is behind: it holds at best the version it
    # trained from the last time.
    behind = sum(len(chosen) for chosen in fed.schedule[1:])
    for name, res in runs.items():
        # Version 0 never travels: nobody downloads anything before the first round.
        assert res.down_curve[0] == 0, name
        assert res.updates == sum(len(c) for c in fed.schedule)
        assert sum(row["downloads"] for row in res.catchup) == behind
    # fp32: the raw model for every client that is behind.
    assert runs["fp32"].bytes_down == raw * behind
    # fedcodec: the engine's shared-initial stream — a first contact costs a delta, never
    # the model, and no download comes near the float32 size.
    fc = runs["fedcodec"]
    assert fc.keyframes == 0
    assert all(row["max_share"] < 0.25 for row in fc.catchup)
    assert fc.bytes_down < runs["int8"].bytes_down < runs["fp32"].bytes_down
    assert "fedcodec" in fl.catchup_summary(list(runs.values()))


def test_catchup_table_buckets_sizes_and_kinds() -> None:
    d = fl.Download
    rows = fl.catchup_table(
        [
            d({}, 10, "chain", 1),
            d({}, 30, "chain", 1),
            d({}, 50, "cumulative", 3),
            d({}, 400, "keyframe", 20),
        ],
        raw=1000,
    )
    by = {row["missed"]: row for row in rows}
    assert list(by) == ["1", "3-4", "17+"]
    assert by["1"]["downloads"] == 2
    assert by["1"]["median_bytes"] == 20
    assert by["1"]["max_bytes"] == 30
    assert by["3-4"]["kinds"] == {"chain": 0, "cumulative": 1, "keyframe": 0}
    assert by["17+"]["max_share"] == 0.4
