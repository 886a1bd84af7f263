"""scripts/cnn_updates.py: real CNN update sets for ``bench codec --real-dir`` (needs torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the CNN update sets are made with torch")

from fedcodec import codec as fc
from fedcodec_bench.codec import quantize
from fedcodec_bench.realdata import npz_update_datasets

_FAST = ("--warm-rounds", "1", "--epochs", "1")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "cnn_updates.py"


@pytest.fixture(scope="module")
def sets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small CNN's six sets after one warm-up round and one local epoch."""
    out = tmp_path_factory.mktemp("cnn-real")
    subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--models", "small", *_FAST],
        check=True,
        capture_output=True,
    )
    return out


def test_the_script_writes_dense_and_sparsified_sets_per_optimizer(sets_dir: Path) -> None:
    names = sorted(p.stem for p in sets_dir.glob("*.npz"))
    assert names == [
        f"cnn-small-{opt}-{kind}" for opt in ("adam", "sgd") for kind in ("dense", "top1", "top10")
    ]
    for opt in ("adam", "sgd"):
        with np.load(sets_dir / f"cnn-small-{opt}-dense.npz") as z:
            dense = {k: z[k] for k in z.files}
        # conv filters stay 4-D; BatchNorm weights, biases and running statistics are included;
        # the integer num_batches_tracked is not.
        assert dense["0.weight"].shape == (8, 1, 3, 3)
        assert dense["4.weight"].shape == (16, 8, 3, 3)
        assert {"1.weight", "1.bias", "1.running_mean", "1.running_var"} <= set(dense)
        assert not any(k.endswith("num_batches_tracked") for k in dense)
        assert all(v.dtype == np.float32 for v in dense.values())
        # a real update: the running statistics and the classifier moved
        assert np.any(dense["1.running_var"] != 0)
        assert np.any(dense["11.weight"] != 0)
        total = sum(v.size for v in dense.values())
        for tag, density in (("top10", 0.10), ("top1", 0.01)):
            with np.load(sets_dir / f"cnn-small-{opt}-{tag}.npz") as z:
                kept = {k: z[k] for k in z.files}
            assert sum(np.count_nonzero(v) for v in kept.values()) == round(density * total)
            for k, v in kept.items():  # sparsified, not changed
                assert np.array_equal(v[v != 0], dense[k][v != 0])


def test_the_bench_reads_the_sets_and_codes_them_losslessly(sets_dir: Path) -> None:
    sets = npz_update_datasets(sets_dir)
    assert len(sets) == 6
    for ds in sets:
        levels = quantize(ds.tensors, ds.step)
        res = fc.encode_levels(levels, ds.step, threads=1)
        back = fc.decode_levels(res.data)
        assert all(np.array_equal(a, b) for a, (b, _) in zip(levels, back, strict=True))
