"""Protein (UCI CASP) regression benchmark: every head on seeded 90/10 splits.

``velora-ens bench protein`` (or ``python -m velora_ens.bench.protein``): RMSE and NLL in
RMSD units (mean ± std over splits), the coverage of the 90% interval, wall time, and
Kendall's tau between the absolute error and each confidence measure (the Liquid
Ensemble's four, and the predictive standard deviation of every head).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from velora_ens.bench.heads import HEADS, LiquidRegressor, build_regressor
from velora_ens.bench.report import (
    Timer,
    environment,
    markdown_table,
    mean_std,
    write_atomic,
    write_json,
)
from velora_ens.bench.scoring import confidence_taus, regression_scores

__all__ = ["PUBLISHED", "add_arguments", "run"]

# Deep Ensembles paper (NeurIPS 2017), Table 1, protein: (RMSE, NLL)
PUBLISHED = {"PBP": (4.73, 2.97), "MC-dropout": (4.36, 2.89), "Deep Ensembles": (4.71, 2.83)}
# The Liquid Ensemble study's configuration tuned for confidence on protein
# (liquid/protein_best_conf.json, see ensembles.md section 1.6): 20 experts with a
# 4 x 50 body, load-distribution weight 0.5 and specialisation weight 0.2.
LIQUID_CONFIDENCE = {"num_experts": 20, "hidden": 50, "depth": 4, "load_lambda": 0.5,
                     "spec_lambda": 0.2}
HEAD_NAMES = {"single": "single model", "deep": "Deep Ensemble (5)",
              "batch": "BatchEnsemble (4)",
              "liquid": f"Liquid Ensemble ({LIQUID_CONFIDENCE['num_experts']})",
              "moe": "stochastic MoE (4)"}


def _build(head: str, dim_in: int, num_train: int, args: argparse.Namespace
           ) -> torch.nn.Module:
    if head == "liquid":
        return LiquidRegressor(dim_in, **LIQUID_CONFIDENCE)
    return build_regressor(head, dim_in, num_train, hidden=args.hidden, depth=args.depth)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--heads", default=",".join(HEADS),
                   help=f"comma-separated heads among {', '.join(HEADS)} (default: all)")
    p.add_argument("--splits", type=int, default=5, help="random 90/10 splits (default 5)")
    p.add_argument("--epochs", type=int, default=20, help="epochs per model (default 20)")
    p.add_argument("--batch-size", type=int, default=256, help="batch size (default 256)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    p.add_argument("--hidden", type=int, default=128,
                   help="hidden width of the single, deep and batch heads (default 128)")
    p.add_argument("--depth", type=int, default=3,
                   help="hidden blocks of the single, deep and batch heads (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits and models")


def _evaluate(model: torch.nn.Module, split, head: str) -> tuple[dict[str, Any], dict]:
    model.eval()
    with torch.no_grad():
        pred = model.predict(split.x_test)
    mean, var = split.to_original(pred.mean, pred.total)
    target = split.y_test_original
    scores = regression_scores(mean, var, target)
    error = (mean - target).abs().squeeze(-1)
    measures = {"predictive_std": 1.0 / var.sqrt().squeeze(-1)}
    if head == "liquid":
        measures.update({k: v for k, v in pred.confidences.items()})
    scores["kendall_tau"] = confidence_taus(error, measures)
    return scores, {"error": error, "measures": measures}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by ``args`` and write its JSON, Markdown and PNGs."""
    from velora_ens.data import load_protein, protein_splits
    from velora_ens.training import TensorDataset, Trainer

    heads = _heads(args.heads)
    for name in ("splits", "epochs", "batch_size", "hidden", "depth"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    X, y = load_protein(args.data_root)
    out = Path(args.out)
    results: dict[str, list[dict[str, Any]]] = {h: [] for h in heads}
    plot_data = None
    device = None
    for split in protein_splits(X, y, n_splits=args.splits, seed=args.seed):
        for head in heads:
            torch.manual_seed(args.seed * 1000 + split.index)
            model = _build(head, X.shape[1], len(split.x_train), args)
            with tempfile.TemporaryDirectory() as tmp:
                trainer = Trainer(model, TensorDataset(split.x_train, split.y_train),
                                  train_batch_size=args.batch_size, train_lr=args.lr,
                                  epochs=args.epochs, ema_decay=None, weight_decay=1e-4,
                                  warmup_steps=100, results_folder=tmp, save_every=0,
                                  progress_bar=False, seed=args.seed + split.index,
                                  device=args.device, amp=args.amp, compile=args.compile)
                device = str(trainer.device)
                with Timer() as t:
                    trainer.train()
            model = model.cpu()
            scores, extra = _evaluate(model, split, head)
            scores.update({"split": split.index, "train_seconds": t.seconds,
                           "steps": trainer.train_num_steps})
            results[head].append(scores)
            if head == "liquid" and split.index == 0:
                plot_data = extra
            print(f"split {split.index} {head:7s} rmse {scores['rmse']:.3f} "
                  f"nll {scores['nll']:.3f} tau " +
                  " ".join(f"{k}={v:.3f}" for k, v in scores["kendall_tau"].items()) +
                  f" ({t.seconds:.0f} s)", flush=True)
    env = environment(device or "cpu")
    report = {"benchmark": "protein", "command": args.command_line, "environment": env,
              "settings": {k: getattr(args, k) for k in ("splits", "epochs", "batch_size",
                                                          "lr", "hidden", "depth", "seed")},
              "results": results}
    write_json(out / "results.json", report)
    pngs = []
    if plot_data is not None and not args.no_plots:
        from velora_ens.bench.plots import have_matplotlib, plot_error_vs_confidence

        if have_matplotlib():
            plot_error_vs_confidence(out / "liquid_error_vs_confidence.png", plot_data["error"],
                                     plot_data["measures"],
                                     results["liquid"][0]["kendall_tau"],
                                     "Liquid Ensemble, protein split 0: |error| vs confidence")
            pngs.append("liquid_error_vs_confidence.png")
    write_atomic(out / "index.md", _markdown(report, pngs))
    return report


def _heads(text: str) -> list[str]:
    heads = [h.strip() for h in text.split(",") if h.strip()]
    bad = [h for h in heads if h not in HEADS]
    if bad or not heads:
        raise ValueError(f"--heads must be a comma-separated list of {', '.join(HEADS)}, "
                         f"got {text!r}")
    return heads


def _markdown(report: dict[str, Any], pngs: Sequence[str]) -> str:
    env, s, res = report["environment"], report["settings"], report["results"]
    lines = [
        "# Protein regression (UCI CASP)", "",
        f"Generated by `{report['command']}`.", "",
        f"Machine: {env['machine']}; device {env['device']}"
        + (f" ({env['gpu']})" if env["gpu"] else "")
        + f"; torch {env['torch']}, {env['threads']} thread(s); {env['date']}.", "",
        f"Protocol: {s['splits']} random 90/10 splits (seed {s['seed']} + split), inputs and "
        "target standardised on the training part, metrics in RMSD units on the test part, "
        f"mean ± std over splits. Single model, Deep Ensemble and BatchEnsemble: hidden "
        f"width {s['hidden']}, {s['depth']} blocks `Linear -> RMSNorm -> SiLU` per member. "
        "Liquid Ensemble: the Liquid Ensemble study's configuration tuned for confidence on "
        "protein (`protein_best_conf.json`): "
        f"{LIQUID_CONFIDENCE['num_experts']} experts, each a "
        f"{LIQUID_CONFIDENCE['depth']} x {LIQUID_CONFIDENCE['hidden']} SiLU MLP with a "
        "Gaussian head and a delegation head, many-sinks solver, load-distribution weight "
        f"{LIQUID_CONFIDENCE['load_lambda']}, specialisation weight "
        f"{LIQUID_CONFIDENCE['spec_lambda']}. MoE: functional 1x64 SiLU experts with "
        "Gaussian weights. All: Gaussian NLL, "
        f"{s['epochs']} epochs of batch {s['batch_size']}, AdamW (weight decay 1e-4), peak "
        f"lr {s['lr']} with 100 warm-up steps and cosine decay, no EMA, one "
        "`velora_ens.training.Trainer`. NLL includes the `0.5 log 2 pi` constant; coverage "
        "is that of the central 90% Gaussian interval of the moment-matched prediction.", "",
        "## Accuracy and calibration", "",
    ]
    rows = []
    for head, runs in res.items():
        rows.append([HEAD_NAMES[head], mean_std([r["rmse"] for r in runs]),
                     mean_std([r["nll"] for r in runs]),
                     mean_std([r["coverage90"] for r in runs]),
                     mean_std([r["train_seconds"] for r in runs], 0)])
    lines.append(markdown_table(["head", "RMSE", "NLL", "90% coverage", "train time (s)"],
                                rows))
    lines += ["", "Published (Deep Ensembles paper, Table 1, same protocol): "
              + "; ".join(f"{k} RMSE {v[0]} / NLL {v[1]}" for k, v in PUBLISHED.items())
              + ".", "", "## Confidence against error", "",
              "Kendall's tau between the absolute error and minus each confidence measure "
              "(positive: less confident predictions err more). `predictive_std` ranks by "
              "the predicted standard deviation; the other four are the Liquid Ensemble's "
              "measures (power entropy, delegation entropy, self-delegation, expert "
              "disagreement).", ""]
    names: list[str] = []
    for runs in res.values():
        for k in runs[0]["kendall_tau"]:
            if k not in names:
                names.append(k)
    rows = [[HEAD_NAMES[h]] + [mean_std([r["kendall_tau"][k] for r in runs])
                                if k in runs[0]["kendall_tau"] else "" for k in names]
            for h, runs in res.items()]
    lines.append(markdown_table(["head"] + names, rows))
    for png in pngs:
        lines += ["", f"![{png}]({png})"]
    lines += ["", "## Targets", ""]
    lines.append(markdown_table(["target", "measured", "met"], _targets(res), align="lrl"))
    return "\n".join(lines) + "\n"


def _mean(vals: Sequence[float]) -> float:
    return sum(vals) / len(vals)


def _targets(res: dict[str, list[dict[str, Any]]]) -> list[list[str]]:
    rows = []
    if "deep" in res:
        r = _mean([x["rmse"] for x in res["deep"]])
        n = _mean([x["nll"] for x in res["deep"]])
        rows.append(["Deep Ensemble RMSE < 4.36", f"{r:.3f}", "yes" if r < 4.36 else "no"])
        rows.append(["Deep Ensemble NLL < 2.83", f"{n:.3f}", "yes" if n < 2.83 else "no"])
    if "liquid" in res:
        taus = {k: _mean([x["kendall_tau"][k] for x in res["liquid"]])
                for k in res["liquid"][0]["kendall_tau"]}
        four = {k: v for k, v in taus.items() if k != "predictive_std"}
        best = max(four, key=four.get)
        rows.append(["Liquid Ensemble: best tau of its four confidence measures >= 0.25",
                     f"{four[best]:.3f} ({best})", "yes" if four[best] >= 0.25 else "no"])
        rows.append(["Liquid Ensemble: tau of its predictive std (mixture of the experts' "
                     "Gaussians) >= 0.25", f"{taus['predictive_std']:.3f}",
                     "yes" if taus["predictive_std"] >= 0.25 else "no"])
    return rows
