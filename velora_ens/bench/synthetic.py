"""Synthetic two-regime regression benchmark (``y = sin(pi x) + sign(x) + N(0, 0.05^2)``).

``velora-ens bench synthetic``: every head on fresh data per seed; the 80% band is the
10%-90% quantile range of the predictive mixture (parameter draws or members, plus
their predicted noise), scored by its coverage of held-out points; the mean by its
per-point squared error against the held-out targets.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch

from velora_ens.bench.heads import HEADS, LiquidRegressor, build_regressor
from velora_ens.bench.protein import HEAD_NAMES, _heads, _mean
from velora_ens.bench.report import (
    Timer,
    environment,
    markdown_table,
    mean_std,
    write_atomic,
    write_json,
)
from velora_ens.bench.scoring import mixture_quantiles

__all__ = ["add_arguments", "run"]

NOISE_STD = 0.05
NAMES = {**HEAD_NAMES, "moe": "stochastic MoE (2)"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--heads", default=",".join(HEADS),
                   help=f"comma-separated heads among {', '.join(HEADS)} (default: all)")
    p.add_argument("--seeds", type=int, default=5, help="seeds (default 5)")
    p.add_argument("--n-train", type=int, default=200, help="training points (default 200)")
    p.add_argument("--n-test", type=int, default=2000, help="held-out points (default 2000)")
    p.add_argument("--steps", type=int, default=3000, help="full-batch steps (default 3000)")


def _model(head: str, n_train: int) -> tuple[torch.nn.Module, float]:
    if head == "moe":  # the seed-003 setting: two polynomial experts and a tanh gate
        return build_regressor("moe", 1, n_train, members=2, expert="pce", degree=5,
                               num_samples=32, init_std=0.05, balance=1.0,
                               deterministic_gate=True, gate_prior_std=10.0), 1e-2
    if head == "liquid":  # each expert also fits the data: calibrated bands on 200 points
        return LiquidRegressor(1, hidden=64, depth=2, num_experts=6, expert_loss=1.0), 3e-3
    return build_regressor(head, 1, n_train, hidden=64, depth=2), 3e-3


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by ``args`` and write its JSON, Markdown and PNG."""
    from velora_ens.data import two_regime
    from velora_ens.training import TensorDataset, Trainer

    heads = _heads(args.heads)
    for name in ("seeds", "n_train", "n_test", "steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    out = Path(args.out)
    results: dict[str, list[dict[str, Any]]] = {h: [] for h in heads}
    curves, train0 = {}, None
    device = "cpu"
    grid = torch.linspace(-1, 1, 401)[:, None]
    for seed in range(args.seeds):
        x, y = two_regime(args.n_train, NOISE_STD, seed=2 * seed)
        xt, yt = two_regime(args.n_test, NOISE_STD, seed=2 * seed + 1)
        if seed == 0:
            train0 = (x.squeeze(1), y.squeeze(1))
        for head in heads:
            torch.manual_seed(seed)
            model, lr = _model(head, args.n_train)
            with tempfile.TemporaryDirectory() as tmp:
                trainer = Trainer(model, TensorDataset(x, y), train_batch_size=args.n_train,
                                  train_lr=lr, train_num_steps=args.steps, ema_decay=None,
                                  warmup_steps=100, results_folder=tmp, save_every=0,
                                  progress_bar=False, seed=seed, device=args.device)
                device = str(trainer.device)
                with Timer() as t:
                    trainer.train()
            model = model.cpu().eval()
            g = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                pred = _predict(model, xt)
                lo, hi = mixture_quantiles(pred, (0.1, 0.9), generator=g)
            inside = ((yt >= lo) & (yt <= hi)).double().mean()
            r = {"seed": seed, "coverage80": float(inside),
                 "mse": float((pred.mean - yt).pow(2).mean()),
                 "band_width": float((hi - lo).mean()), "train_seconds": t.seconds}
            results[head].append(r)
            print(f"seed {seed} {head:7s} coverage80 {r['coverage80']:.3f} mse {r['mse']:.4f} "
                  f"({t.seconds:.1f} s)", flush=True)
            if seed == 0:
                with torch.no_grad():
                    pg = _predict(model, grid)
                    qlo, qhi = mixture_quantiles(pg, (0.1, 0.9), generator=g)
                curves[NAMES[head]] = (grid.squeeze(1), pg.mean.squeeze(1),
                                            qlo.squeeze(1), qhi.squeeze(1))
    env = environment(device)
    report = {"benchmark": "synthetic", "command": args.command_line, "environment": env,
              "settings": {k: getattr(args, k) for k in ("seeds", "n_train", "n_test",
                                                          "steps")},
              "noise_std": NOISE_STD, "results": results}
    write_json(out / "results.json", report)
    pngs = []
    if not args.no_plots:
        from velora_ens.bench.plots import have_matplotlib, plot_bands

        if have_matplotlib():
            plot_bands(out / "two_regime_bands.png", *train0, curves,
                       "two-regime data, seed 0: predictive mean and 80% band")
            pngs.append("two_regime_bands.png")
    write_atomic(out / "index.md", _markdown(report, pngs))
    return report


def _predict(model: torch.nn.Module, x: torch.Tensor):
    if hasattr(model, "log_noise"):  # the MoE: many parameter draws for smooth quantiles
        return model.predict(x, num_samples=500)
    return model.predict(x)


def _markdown(report: dict[str, Any], pngs: list[str]) -> str:
    env, s, res = report["environment"], report["settings"], report["results"]
    lines = [
        "# Synthetic two-regime regression", "",
        f"Generated by `{report['command']}`.", "",
        f"Machine: {env['machine']}; device {env['device']}; torch {env['torch']}, "
        f"{env['threads']} thread(s); {env['date']}.", "",
        f"Data: `y = sin(pi x) + sign(x) + eps`, `x ~ U(-1, 1)`, `eps ~ N(0, "
        f"{report['noise_std']}^2)` (noise variance {report['noise_std'] ** 2:.4f}); per "
        f"seed {s['n_train']} training and {s['n_test']} held-out points drawn afresh "
        f"(`velora_ens.data.two_regime`), {s['seeds']} seeds, mean ± std over seeds. "
        f"Every head trains full-batch for {s['steps']} steps (AdamW, 100 warm-up steps, "
        "cosine decay) with the Gaussian NLL in one `Trainer`. The MoE is the seed-003 model "
        "(two degree-5 polynomial-chaos experts and a tanh gate of width 16, all parameters "
        "Gaussian, 32 draws per step, per-point ELBO with a learned noise level, lr 1e-2); "
        "the other heads use members of 2 x 64 `Linear -> RMSNorm -> SiLU` blocks, lr 3e-3; "
        "the Liquid Ensemble (6 experts, `sink_many`) adds each expert's own NLL to the "
        "mixture's (`LiquidRegressor(expert_loss=1.0)`). "
        "The 80% band is the 10%-90% quantile range of 4000 draws from each point's "
        "predictive mixture (the MoE: 500 parameter draws plus the learned noise).", "",
    ]
    rows = [[NAMES[h], mean_std([r["coverage80"] for r in runs]),
             mean_std([r["mse"] for r in runs], 4), mean_std([r["band_width"] for r in runs]),
             mean_std([r["train_seconds"] for r in runs], 1)] for h, runs in res.items()]
    lines.append(markdown_table(["head", "80% band coverage", "mean sq. error",
                                 "band width", "train time (s)"], rows))
    for png in pngs:
        lines += ["", f"![{png}]({png})"]
    if "moe" in res:
        cov = _mean([r["coverage80"] for r in res["moe"]])
        mse = _mean([r["mse"] for r in res["moe"]])
        lines += ["", "## Targets", "", markdown_table(["target", "measured", "met"], [
            ["MoE 80% band covers 75-85% of held-out points", f"{cov:.3f}",
             "yes" if 0.75 <= cov <= 0.85 else "no"],
            ["MoE mean's per-point squared error <= 0.03", f"{mse:.4f}",
             "yes" if mse <= 0.03 else "no"]], align="lrl")]
    return "\n".join(lines) + "\n"
