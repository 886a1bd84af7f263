"""The codec benchmark end to end: ``fedcodec bench codec --quick`` through ``cli.main``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fedcodec.codec as fc
from fedcodec.cli import main
from fedcodec_bench.nncodec_ref import NNCodecFloats, run_nncodec

TIMED_OPS = {
    "enc_levels_1t",
    "enc_levels_all",
    "dec_levels_1t",
    "dec_levels_all",
    # CPU seconds of the coding thread (the speed ratios vs NNCodec use them).
    "enc_levels_1t_cpu",
    "dec_levels_1t_cpu",
    "acc_1t",
    "acc_all",
    "enc_float_1t",
    "enc_float_all",
    "dec_float_all",
    "enc_rdoq_all",
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, dict[str, Any]]:
    path = tmp_path_factory.mktemp("bench") / "quick.json"
    out = tmp_path_factory.mktemp("bench") / "quick.txt"
    with out.open("w", encoding="utf-8") as fh:
        old = sys.stdout
        sys.stdout = fh
        try:
            rc = main(["bench", "codec", "--quick", "--json", str(path)])
        finally:
            sys.stdout = old
    return rc, out.read_text(encoding="utf-8"), json.loads(path.read_text(encoding="utf-8"))


def test_quick_exit_code_and_report(quick_run: tuple[int, str, dict[str, Any]]) -> None:
    rc, text, _ = quick_run
    assert rc == 0  # a benchmark: MISS does not fail without --check
    for heading in ("## Sizes", "## Speed", "## Quantizer", "## NNCodec", "## Targets"):
        assert heading in text
    assert "NNCodec: not installed (see docs)" in text
    assert "NOT measured here" in text
    assert "every decode equals its input: yes" in text
    for name in ("sparse-1%", "sparse-0.1%", "dense"):
        assert f"| {name} " in text
    assert text.count("PASS") + text.count("MISS") >= 1


def test_quick_json_structure(quick_run: tuple[int, str, dict[str, Any]]) -> None:
    _, _, res = quick_run
    assert res["schema"] == "fedcodec-bench-codec/1"
    m = res["machine"]
    for key in ("cpu_model", "usable_cores", "python", "numpy", "date_utc", "git_commit"):
        assert key in m
    assert m["fedcodec_library"] == fc.library_version()
    assert res["config"]["quick"] is True
    assert res["config"]["repeats"] == 1
    assert res["config"]["numel"] == 499_712
    names = [d["name"] for d in res["datasets"]]
    assert names == ["sparse-1%", "sparse-0.1%", "dense"]
    for d in res["datasets"]:
        f = d["fedcodec"]
        assert f["bytes"] > f["all_zero_bytes"] > 0
        assert f["bits_per_weight"] == pytest.approx(8 * f["bytes"] / d["numel"])
        assert set(d["speed"]) == TIMED_OPS
        for op in d["speed"].values():
            assert len(op["runs_s"]) == 1
            assert op["median_mws"] > 0
        b = d["baselines"]
        assert b["iid_bytes"] <= b["order0_bytes"] + 1e-6
        assert b["lzma9_bytes"] > 0
        assert d["relative"]["vs_order0"] == pytest.approx(f["bytes"] / b["order0_bytes"] - 1)
        ck = d["checks"]
        assert ck["decodes_verified"] == 10  # (2 level decodes, 2 accumulates, 1 float) x 2 passes
        assert ck["deterministic_bytes"] is True
        assert ck["rdoq_recon_equals_decode"] is True
        assert d["rdoq"]["bytes"] > 0
    sparse = res["datasets"][0]
    assert sparse["level_nonzeros"] == round(0.01 * 499_712)
    assert [t["status"] for t in res["targets"]].count("n/a") >= 1  # 0.01 % is not in --quick
    assert {t["status"] for t in res["targets"]} <= {"PASS", "MISS", "n/a"}
    assert len(res["targets"]) == 8
    assert res["nncodec"]["status"] == "not installed"
    assert res["elapsed_s"] < 60


def test_check_flag_follows_the_targets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.json"
    argv = ["bench", "codec", "--quick", "--no-dense", "--densities", "1", "--check"]
    rc = main([*argv, "--json", str(path)])
    res = json.loads(path.read_text(encoding="utf-8"))
    assert [d["name"] for d in res["datasets"]] == ["sparse-1%"]
    ok = res["all_targets_pass"] and res["checks_ok"]
    assert rc == (0 if ok else 1)
    capsys.readouterr()


def test_decode_check_is_real(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = fc.decode_levels

    def corrupt(data: bytes, **kw: Any) -> list[tuple[np.ndarray, float]]:
        out = real(data, **kw)
        lv, step = out[-1]
        bad = lv.copy()
        bad.flat[bad.size // 2] += 1  # one level off
        return [*out[:-1], (bad, step)]

    monkeypatch.setattr(fc, "decode_levels", corrupt)
    rc = main(["bench", "codec", "--quick", "--no-dense", "--densities", "1"])
    err = capsys.readouterr().err
    assert rc == 3
    assert "CORRECTNESS FAILURE" in err
    assert "different levels" in err


def test_accumulate_check_is_real(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = fc.decode_accumulate

    def off(data: bytes, accs: Any, weight: float = 1.0, **kw: Any) -> None:
        real(data, accs, weight * 1.001, **kw)

    monkeypatch.setattr(fc, "decode_accumulate", off)
    rc = main(["bench", "codec", "--quick", "--no-dense", "--densities", "1"])
    assert rc == 3
    assert "decode_accumulate" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["bench", "--help"], ["bench", "codec", "--help"]],
)
def test_help_everywhere(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage: fedcodec" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bench"],
        ["bench", "codec", "--densities", "0"],
        ["bench", "codec", "--densities", "abc"],
        ["bench", "codec", "--repeats", "0"],
        ["bench", "codec", "--step", "-1"],
        ["bench", "codec", "--threads", "-1"],
    ],
)
def test_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    capsys.readouterr()


def test_python_dash_m_entry_point() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "fedcodec_bench", "codec", "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parent,
    )
    assert r.returncode == 0, r.stderr
    assert "--nncodec-python" in r.stdout


def test_nncodec_bad_interpreter_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.json"
    argv = ["bench", "codec", "--quick", "--no-dense", "--densities", "1", "--json", str(path)]
    rc = main([*argv, "--nncodec-python", str(tmp_path / "no-such-python")])
    assert rc == 0
    res = json.loads(path.read_text(encoding="utf-8"))
    assert res["nncodec"]["status"] == "failed"
    assert "NNCodec: failed" in capsys.readouterr().out


_FAKE_NNCODEC = """
import io
import numpy as np

def compress(tensors, **kw):
    assert kw["lambda_scale"] == 0.0
    step = 6 * 2.0 ** -14 if kw["qp"] == -46 else None
    buf = io.BytesIO()
    # a stand-in for DQ: only even multiples of the step
    m = 2 if kw["use_dq"] else 1
    lv = {k: m * np.round(v / np.float32(m * step)).astype(np.int32) for k, v in tensors.items()}
    np.savez(buf, **lv)
    return buf.getvalue()

def decompress(bs):
    z = np.load(io.BytesIO(bytes(bs)))
    return {k: z[k].astype(np.float32) * np.float32(6 * 2.0 ** -14) for k in z.files}
"""


def test_nncodec_worker_plumbing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in "nncodec" (and an empty "torch") on PYTHONPATH, run through the real worker.
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "nncodec").mkdir()
    (tmp_path / "nncodec" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "nncodec" / "nnc.py").write_text(textwrap.dedent(_FAKE_NNCODEC), encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    rng = np.random.default_rng(0)
    levels = [rng.integers(-5, 6, size=(8, 16)).astype(np.int32), np.zeros(7, dtype=np.int32)]
    step = 3.662109375e-4
    floats = [(rng.standard_normal((8, 16)) * 4 * step).astype(np.float32)]
    runs, meta = run_nncodec(
        sys.executable,
        [("a", levels, step), ("off-grid", levels, 3.7e-4)],
        repeats=2,
        floats=[NNCodecFloats("dq", floats, step, use_dq=True)],
    )
    a = runs["a"]
    assert a.error is None
    assert (a.qp, a.qp_density) == (-46, 2)
    assert a.nncodec_bytes is not None
    assert a.nncodec_bytes > 0
    assert len(a.enc_s) == len(a.dec_s) == 2
    # The worker's CPU times reach the record (the speed ratios use them, not wall clock).
    assert len(a.enc_cpu_s) == len(a.dec_cpu_s) == 2
    assert all(x >= 0.0 for x in a.enc_cpu_s + a.dec_cpu_s)
    assert asdict(a)["dec_cpu_s"] == a.dec_cpu_s
    assert a.decoded_equal
    assert a.deterministic
    assert runs["off-grid"].nncodec_bytes is None
    assert "grid" in (runs["off-grid"].error or "")
    assert "import_s" in meta
    assert a.err_sq is None
    # a float set: NNCodec quantizes it itself (here DQ's stand-in) and reports the error
    dq = runs["dq"]
    s32 = np.float32(step)
    rec = 2 * np.round(floats[0] / (2 * s32)).astype(np.int32) * s32
    assert dq.err_sq == pytest.approx(float(np.square(rec - floats[0].astype(np.float64)).sum()))
    assert not dq.decoded_equal


def test_one_thread_makes_parallel_targets_not_applicable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.json"
    argv = ["bench", "codec", "--quick", "--no-dense", "--densities", "1", "--threads", "1"]
    assert main([*argv, "--json", str(path)]) == 0
    res = json.loads(path.read_text(encoding="utf-8"))
    parallel = [t for t in res["targets"] if "all cores" in t["name"]]
    assert len(parallel) == 2
    assert all(t["status"] == "n/a" for t in parallel)
    capsys.readouterr()


def test_temporal_reference_gain_on_real_rounds() -> None:
    """The temporal section: real consecutive-round updates coded with the same levels without
    and with a reference; every decode checked; the encoder keeps a reference tensor by tensor
    where it pays, so neither kind costs bytes, and the client's previous update helps."""
    from fedcodec_bench.codec import temporal_targets
    from fedcodec_bench.temporal import run_temporal, temporal_lines

    results = run_temporal(quick=True)
    assert len(results) == 1
    r = results[0]
    assert r["updates"] == 8  # 4 clients x rounds 1..2
    assert r["tensors"] == 4 * r["updates"]  # MLP: 2 weights, 2 biases
    assert r["decodes_verified"] == 3 * r["updates"]
    for kind in ("client_prev", "global_prev"):
        # each tensor keeps the smaller of its codings with and without its reference
        assert r["bytes"][kind] <= r["bytes"]["none"]
        assert r["bytes"][kind] <= r["bytes_reference_forced"][kind]
    # measured 285,504 vs 289,729 B: some tensors keep the client's previous update, some not
    assert r["bytes"]["client_prev"] < r["bytes"]["none"]
    assert 0 < r["tensors_with_reference"]["client_prev"] < r["tensors"]
    # with every reference forced, the global change costs bytes (measured +5.9 %)
    assert r["bytes_reference_forced"]["global_prev"] > r["bytes"]["global_prev"]
    assert r["gain"]["client_prev"] == pytest.approx(
        r["bytes"]["client_prev"] / r["bytes"]["none"] - 1
    )
    assert "## Temporal side information" in temporal_lines(results)
    (target,) = temporal_targets(results, quick=True)
    assert target.status == "n/a"  # not judged on the small federation


def test_speed_ratios_vs_nncodec_use_cpu_time_when_both_sides_measured_it() -> None:
    """A preempted wall-clock run must not decide a per-core speed ratio."""
    from fedcodec_bench.codec import _nncodec_speed_ratio

    numel = 1_000_000
    record: dict[str, Any] = {
        "numel": numel,
        # fedcodec: 0.01 s CPU per decode, but one wall-clock run was preempted (0.09 s).
        "speed": {
            "dec_levels_1t": {"median_mws": numel / 0.09 / 1e6},
            "dec_levels_1t_cpu": {"median_mws": numel / 0.01 / 1e6},
        },
        "nncodec": {"dec_s": [0.03, 0.03, 0.03], "dec_cpu_s": [0.03, 0.03, 0.03]},
    }
    assert _nncodec_speed_ratio(record, "dec_levels_1t", "dec_s") == pytest.approx(3.0)
    # An NNCodec result from before CPU times were recorded: wall clock on both sides.
    del record["nncodec"]["dec_cpu_s"]
    assert _nncodec_speed_ratio(record, "dec_levels_1t", "dec_s") == pytest.approx(1 / 3)
