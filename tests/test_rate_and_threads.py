"""Rate behaviour and determinism: larger lam never costs bytes at a fixed
step; the thread count (C workers or Python threads) never changes output."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fedcodec

values = st.floats(-10.0, 10.0, width=32, allow_subnormal=False).map(
    lambda v: v if abs(v) >= 1e-4 else 0.0
)
tensors = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=40),
    elements=values,
)


LAM_NOT_MONOTONE = (
    "C finding (reported): the greedy RD quantizer with live context states is not monotone "
    "in lam; ~0.3 % of random lam pairs cost more bytes (up to ~4 %), in every mode"
)


@given(
    tensor=tensors,
    lams=st.lists(st.floats(0.0, 4.0), min_size=2, max_size=2).map(sorted),
    coarseness=st.sampled_from([2.0, 8.0, 32.0, 128.0]),
    mode=st.sampled_from(["auto", "dense", "grouped", "runs"]),
)
def test_larger_lam_costs_at_most_a_byte_or_five_percent_more(tensor, lams, coarseness, mode):
    """A larger λ never costs more than the known non-monotonicity allows (LAM_NOT_MONOTONE:
    up to ~4 %; one byte on a tiny container); the strict monotone form is the pinned
    counterexample below.  (As a strict xfail on these derandomized examples this property
    passed or failed with the hypothesis build of the environment.)"""
    peak = float(np.abs(tensor).max())
    step = peak / coarseness if peak > 0 else 1.0
    small, large = lams
    low = fedcodec.encode([tensor], lam=small, step=step, mode=mode)
    high = fedcodec.encode([tensor], lam=large, step=step, mode=mode)
    assert low.stats[0].step == high.stats[0].step
    assert len(high) <= max(len(low) + 1, 1.05 * len(low)), (small, large, len(low), len(high))


@pytest.mark.xfail(strict=True, reason=LAM_NOT_MONOTONE)
def test_larger_lam_never_increases_the_byte_count_known_counterexample():
    x = np.array(
        [2.2352338, 1.1916907, -6.09038, 16.983631, -0.82527155, 0.14229853, 15.862938],
        dtype=np.float32,
    )
    step = 2.1229538917541504
    low = fedcodec.encode([x], lam=0.6650795760567298, step=step)
    high = fedcodec.encode([x], lam=1.2269302329644152, step=step)
    assert len(high) <= len(low)


def test_larger_lam_saves_bytes_on_realistic_data():
    rng = np.random.default_rng(11)
    x = (rng.laplace(size=(256, 256)) * 0.01).astype(np.float32)
    sizes = [len(fedcodec.encode([x], lam=lam, step=0.002)) for lam in (0.0, 0.1, 0.5, 2.0)]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[-1] < sizes[0] * 0.8


@pytest.fixture(scope="module")
def big_update() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    dense = rng.standard_normal((2000, 600)).astype(np.float32)
    sparse = np.where(rng.random(1_000_000) < 0.01, dense.reshape(-1)[:1_000_000], 0)
    return [dense, sparse.astype(np.float32).reshape(1000, 1000)]


@pytest.mark.parametrize("lam", [0.0, 0.1155])
def test_same_bytes_with_one_or_four_threads(big_update, lam):
    one = fedcodec.encode(big_update, lam=lam, S=64, slice_elems=65536, threads=1)
    four = fedcodec.encode(big_update, lam=lam, S=64, slice_elems=65536, threads=4)
    every = fedcodec.encode(big_update, lam=lam, S=64, slice_elems=65536, threads=0)
    assert one.stats[0].slices > 4  # the work really is split
    assert one.data == four.data == every.data
    assert one.stats == four.stats
    dec_one = fedcodec.decode(one.data, threads=1)
    dec_four = fedcodec.decode(one.data, threads=4)
    for a, b in zip(dec_one, dec_four, strict=True):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def test_concurrent_python_threads_give_the_sequential_results(big_update):
    # cffi releases the GIL around the C call; the library is reentrant.
    jobs = [(lam, S) for lam in (0.0, 0.05, 0.2) for S in (16, 128)]

    def run(job: tuple[float, int]) -> bytes:
        lam, S = job
        return fedcodec.encode(big_update[:1], lam=lam, S=S, threads=2).data

    sequential = [run(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        concurrent = list(pool.map(run, jobs))
    assert concurrent == sequential
    with ThreadPoolExecutor(max_workers=4) as pool:
        decoded = list(pool.map(fedcodec.decode, sequential))
    for data, got in zip(sequential, decoded, strict=True):
        np.testing.assert_array_equal(got[0], fedcodec.decode(data, threads=1)[0])


def test_slice_elems_changes_slicing_not_reconstruction(big_update):
    coarse = fedcodec.encode(big_update[:1], S=64, slice_elems=1 << 22, return_recon=True)
    fine = fedcodec.encode(big_update[:1], S=64, slice_elems=1 << 15, return_recon=True)
    assert coarse.stats[0].slices == 1 < fine.stats[0].slices
    # lam = 0 is plain rounding: the levels do not depend on slicing.
    np.testing.assert_array_equal(coarse.recon[0], fine.recon[0])


def test_slices_count_the_rows_that_hold_nonzeros():
    # An embedding-like table: 100 of 2,000 rows moved.  Slices are sized by
    # the elements of those rows (3 x 10,000 here), not by all 600,000 (an
    # empty row costs a fraction of a bit; every slice re-learns its contexts).
    rng = np.random.default_rng(5)
    table = np.zeros((2000, 300), dtype=np.float32)
    rows = np.sort(rng.choice(2000, 100, replace=False))
    table[rows] = rng.standard_normal((100, 300)).astype(np.float32)
    one = fedcodec.encode([table], step=0.25, slice_elems=10000, threads=1, transpose=False)
    assert one.stats[0].slices == 3
    for threads in (2, 3):
        again = fedcodec.encode(
            [table], step=0.25, slice_elems=10000, threads=threads, transpose=False
        )
        assert again.data == one.data
    np.testing.assert_array_equal(
        fedcodec.decode(one.data)[0], np.round(table / 0.25).astype(np.float32) * np.float32(0.25)
    )
    # Full rows are unaffected: 600,000 elements in 60 slices of 10,000.
    dense = rng.standard_normal((2000, 300)).astype(np.float32)
    assert fedcodec.encode([dense], step=4.0, slice_elems=10000).stats[0].slices > 3
