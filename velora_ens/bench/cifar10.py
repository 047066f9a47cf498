"""CIFAR-10 benchmark: one network with each ensemble head.

``velora-ens bench cifar10``: accuracy, NLL, ECE, training and evaluation images per
second, and each head's training cost relative to the single model measured in the same
run. On a CPU the default is a short smoke run of a small CNN on a subset; on a GPU,
``--model resnet18`` with the full data is the real benchmark (see the docs page for the
command).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from velora_ens.bench.classifiers import ImageClassifier, build_network
from velora_ens.bench.report import (
    Timer,
    environment,
    markdown_table,
    mean_std,
    write_atomic,
    write_json,
)
from velora_ens.metrics import accuracy, classification_nll, expected_calibration_error

__all__ = ["BENCH_HEADS", "add_arguments", "run"]

#: benchmark head -> (``ImageClassifier`` head, its ``members_per_pass``, whether each step
#: takes ``batch_size // members`` images: the BatchEnsemble paper's recipe, which tiles
#: them so that a step processes as many rows as the single model's)
BENCH_HEADS: dict[str, tuple[str, int | None, bool]] = {
    "single": ("single", None, False),
    "deep": ("deep", None, False),
    "batch": ("batch", None, False),
    "batch_passes": ("batch", 1, False),
    "batch_paper": ("batch", None, True),
    "liquid": ("liquid", None, False),
    "moe": ("moe", None, False),
}

NAMES = {"single": "single model", "deep": "Deep Ensemble",
         "batch": "BatchEnsemble, full batch tiled",
         "batch_passes": "BatchEnsemble, full batch member by member",
         "batch_paper": "BatchEnsemble, paper recipe", "liquid": "Liquid Ensemble",
         "moe": "stochastic MoE"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--heads", default=None,
                   help=f"comma-separated heads among {', '.join(BENCH_HEADS)}; default all "
                        "(without batch_passes for resnet18, whose BatchNorm needs the "
                        "members in one pass). batch: the full batch tiled per member in one "
                        "pass; batch_passes: the same function run one member at a time "
                        "(members_per_pass=1); batch_paper: batch-size // members images a "
                        "step, tiled, as in the BatchEnsemble paper")
    p.add_argument("--model", choices=("cnn", "resnet18"), default="cnn",
                   help="network: a small CNN (default) or a pre-activation ResNet-18")
    p.add_argument("--width", type=int, default=None,
                   help="channels of the first stage (default 16 for cnn, 64 for resnet18)")
    p.add_argument("--members", type=int, default=4, help="ensemble size (default 4)")
    p.add_argument("--epochs", type=int, default=5, help="epochs (default 5)")
    p.add_argument("--train-size", type=int, default=10000,
                   help="training images, a seeded subset; 0 = all 50000 (default 10000)")
    p.add_argument("--test-size", type=int, default=2000,
                   help="test images, a seeded subset; 0 = all 10000 (default 2000)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw",
                   help="adamw (default) or sgd (Nesterov momentum 0.9)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="default 5e-4")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="default 0")
    p.add_argument("--warmup-steps", type=int, default=100, help="default 100")
    p.add_argument("--cache-dir", default=None,
                   help="decoded-image cache (default $VELORA_ENS_CACHE or ~/.cache/velora_ens)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--timing-rounds", type=int, default=15,
                   help="rounds of interleaved training steps (each head in turn, "
                        "--timing-steps each) for the step cost column, after training; "
                        "0: none (default 15)")
    p.add_argument("--timing-steps", type=int, default=3,
                   help="training steps per head per timing round (default 3)")
    p.add_argument("--default-malloc", action="store_true",
                   help="train with retain_cpu_memory=False: glibc's malloc returns large "
                        "freed blocks to the system (default: the Trainer keeps them)")


def _load_average() -> float | None:
    """The machine's 1-minute load average (other jobs on a shared machine), if known."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
              amp_dtype) -> tuple[dict[str, float], float]:
    model.eval()
    probs = []
    if device.type == "cuda":
        torch.cuda.synchronize()
    with Timer() as t, torch.no_grad():
        for start in range(0, len(x), 500):
            xb = x[start:start + 500].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                probs.append(model.predict(xb).probs.float().cpu())
    p = torch.cat(probs)
    return {"accuracy": accuracy(p, y), "nll": classification_nll(p, y),
            "ece": expected_calibration_error(p, y)}, len(x) / t.seconds


def _interleaved_step_seconds(trainers: dict[str, Any], images: torch.Tensor,
                              labels: torch.Tensor, rounds: int, steps: int) -> dict[str, list]:
    """Seconds per training step of every head, measured in ``rounds`` rounds that run
    ``steps`` steps of each head in turn (after one warm-up round, and one untimed step
    at each turn), so that every head meets the same load on a shared machine. A step is
    the trainer's: augmentation, forward under the trainer's autocast, backward,
    optimizer step."""
    from velora_ens.data import CropFlip

    crop = CropFlip()

    def step(tr, x: torch.Tensor, y: torch.Tensor) -> None:
        xb, yb = crop((x, y))
        with torch.autocast(tr.device.type, dtype=tr.amp_dtype,
                            enabled=tr.amp_dtype is not None):
            loss = tr.forward_model(xb, yb)
        loss.backward()
        tr.opt.step()
        tr.opt.zero_grad(set_to_none=True)

    feeds = {}
    for head, tr in trainers.items():
        n = tr.train_batch_size
        feeds[head] = (images[:n].to(tr.device), labels[:n].to(tr.device))
    seconds: dict[str, list] = {head: [] for head in trainers}
    for r in range(rounds + 1):
        for head, tr in trainers.items():
            x, y = feeds[head]
            tr.model.train()
            step(tr, x, y)  # untimed: the previous head left the allocator in its state
            if tr.device.type == "cuda":
                torch.cuda.synchronize(tr.device)
            with Timer() as t:
                for _ in range(steps):
                    step(tr, x, y)
                if tr.device.type == "cuda":
                    torch.cuda.synchronize(tr.device)
            if r > 0:  # round 0 warms up
                seconds[head].append(t.seconds / steps)
    return seconds


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by ``args`` and write its JSON and Markdown."""
    from velora_ens.data import CropFlip, load_cifar10
    from velora_ens.training import TensorDataset, Trainer

    if args.heads is None:
        heads = [h for h in BENCH_HEADS if not (h == "batch_passes" and args.model == "resnet18")]
    else:
        heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    if not heads or any(h not in BENCH_HEADS for h in heads):
        raise ValueError(f"--heads must be a comma-separated list of "
                         f"{', '.join(BENCH_HEADS)}, got {args.heads!r}")
    for name in ("members", "epochs", "batch_size", "timing_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.timing_rounds < 0:
        raise ValueError(f"--timing-rounds must be >= 0, got {args.timing_rounds}")
    if "batch_paper" in heads and args.batch_size < args.members:
        raise ValueError(f"--batch-size must be >= --members ({args.members}) for the "
                         f"batch_paper head (batch-size // members images a step), got "
                         f"{args.batch_size}")
    width = args.width or (16 if args.model == "cnn" else 64)
    with Timer() as load_t:
        data = load_cifar10(args.data_root, cache_dir=args.cache_dir)
    n_train = args.train_size or len(data.x_train)
    n_test = args.test_size or len(data.x_test)
    if not 0 < n_train <= len(data.x_train) or not 0 < n_test <= len(data.x_test):
        raise ValueError(f"--train-size must be in [0, {len(data.x_train)}] and --test-size "
                         f"in [0, {len(data.x_test)}], got {args.train_size} and "
                         f"{args.test_size}")
    g = torch.Generator().manual_seed(args.seed)
    sub = torch.randperm(len(data.x_train), generator=g)[:n_train]
    train = TensorDataset(data.x_train[sub], data.y_train[sub])
    pick = torch.randperm(len(data.x_test), generator=g)[:n_test]
    x_test, y_test = data.x_test[pick], data.y_test[pick]
    results: dict[str, dict[str, Any]] = {}
    device = "cpu"

    def make_trainer(head: str, folder: str) -> tuple[Any, int, int | None]:
        kind, members_per_pass, split_batch = BENCH_HEADS[head]
        batch_size = args.batch_size // args.members if split_batch else args.batch_size
        torch.manual_seed(args.seed)
        net = build_network(args.model, width)
        model = ImageClassifier(net, kind, members=args.members, num_train=n_train,
                                label_smoothing=args.label_smoothing,
                                members_per_pass=members_per_pass)
        trainer = Trainer(model, train, train_batch_size=batch_size,
                          train_lr=args.lr, epochs=args.epochs, ema_decay=None,
                          optimizer=args.optimizer, weight_decay=args.weight_decay,
                          warmup_steps=args.warmup_steps, batch_transform=CropFlip(),
                          results_folder=folder, save_every=0, progress_bar=False,
                          seed=args.seed, device=args.device, amp=args.amp,
                          compile=args.compile,
                          retain_cpu_memory=not args.default_malloc)
        return trainer, batch_size, members_per_pass

    load_before = _load_average()
    for head in heads:
        with tempfile.TemporaryDirectory() as tmp:
            trainer, batch_size, members_per_pass = make_trainer(head, tmp)
            model = trainer.model
            device = str(trainer.device)
            with Timer() as t:
                trainer.train()
        scores, eval_ips = _evaluate(model, x_test, y_test, trainer.device, trainer.amp_dtype)
        images = trainer.train_num_steps * trainer.global_batch
        results[head] = {**scores, "batch_size": batch_size,
                         "members_per_pass": members_per_pass, "train_seconds": t.seconds,
                         "seconds_per_step": t.seconds / trainer.train_num_steps,
                         "train_images_per_s": images / t.seconds,
                         "eval_images_per_s": eval_ips,
                         "parameters": sum(p.numel() for p in model.parameters()),
                         "steps": trainer.train_num_steps}
        print(f"{head:7s} acc {scores['accuracy']:.4f} nll {scores['nll']:.3f} "
              f"train {images / t.seconds:.0f} img/s eval {eval_ips:.0f} img/s "
              f"({t.seconds:.0f} s)", flush=True)
        model.cpu()
        del trainer, model
    if args.timing_rounds:
        with tempfile.TemporaryDirectory() as tmp:
            trainers = {h: make_trainer(h, tmp)[0] for h in heads}
            step_seconds = _interleaved_step_seconds(trainers, train.tensors[0],
                                                     train.tensors[1], args.timing_rounds,
                                                     args.timing_steps)
            del trainers
        for head, secs in step_seconds.items():
            results[head]["step_seconds"] = secs
            results[head]["step_seconds_median"] = statistics.median(secs)
    if "single" in results:
        ref = results["single"]["train_images_per_s"]
        ref_eval = results["single"]["eval_images_per_s"]
        for r in results.values():
            r["train_cost_vs_single"] = ref / r["train_images_per_s"]
            r["eval_cost_vs_single"] = ref_eval / r["eval_images_per_s"]
            if args.timing_rounds:  # median over rounds of the ratio within a round
                ref_steps = results["single"]["step_seconds"]
                r["step_cost_vs_single"] = statistics.median(
                    a / b for a, b in zip(r["step_seconds"], ref_steps, strict=True))
    env = environment(device)
    settings = {k: getattr(args, k) for k in ("model", "members", "epochs", "batch_size",
                                               "optimizer", "lr", "weight_decay",
                                               "label_smoothing", "seed", "amp")}
    settings.update({"width": width, "train_size": n_train, "test_size": n_test,
                     "timing_rounds": args.timing_rounds, "timing_steps": args.timing_steps,
                     "retain_cpu_memory": not args.default_malloc})
    env["load_average"] = [load_before, _load_average()]
    report = {"benchmark": "cifar10", "command": args.command_line, "environment": env,
              "settings": settings, "data_source": data.source,
              "load_seconds": load_t.seconds, "results": results}
    write_json(Path(args.out) / "results.json", report)
    write_atomic(Path(args.out) / "index.md", _markdown(report))
    return report


_RETAINED = ("Every trainer keeps freed CPU memory in the process's heap "
             "(`Trainer(retain_cpu_memory=True)`, the default), so that the large activations "
             "of the tiled full batch reuse their pages from step to step "
             "(`docs/guide/performance.md`).")
_DEFAULT_MALLOC = ("Measured with `--default-malloc` (`retain_cpu_memory=False`): the tiled "
                   "full batch ({rows} rows in every shared layer) pays for fresh memory "
                   "pages on its large activations at every step, which member-by-member "
                   "passes avoid (`docs/ensembles/batch.md`).")


def _markdown(report: dict[str, Any]) -> str:
    env, s, res = report["environment"], report["settings"], report["results"]
    m = s["members"]
    lines = [
        "# CIFAR-10", "",
        f"Generated by `{report['command']}`.", "",
        f"Machine: {env['machine']}; device {env['device']}"
        + (f" ({env['gpu']})" if env["gpu"] else "")
        + f"; torch {env['torch']}, {env['threads']} thread(s); {env['date']}.", "",
        f"Data: `{Path(report['data_source']).name}`, {s['train_size']} training images (a "
        f"seeded subset) and {s['test_size']} test images (another seeded subset). The JPEG "
        "copy's pixels differ slightly from the canonical binary batches, so accuracies are "
        "close to, not identical with, canonical CIFAR-10 numbers.", "",
        f"Network: `{s['model']}` (width {s['width']}); {s['epochs']} epochs of batch "
        f"{s['batch_size']}, random crop (padding 4) and horizontal flip, {s['optimizer']} "
        f"(peak lr {s['lr']}, weight decay {s['weight_decay']}, cosine decay), label "
        f"smoothing {s['label_smoothing']}, seed {s['seed']}, one `Trainer` per head. Heads "
        f"with {m} members: Deep Ensemble = {m} independent networks; BatchEnsemble = "
        f"`batchensemble(network, {m})`, trained in three ways: *full batch tiled*, every "
        f"member on the whole batch of {s['batch_size']}, tiled to {m * s['batch_size']} "
        f"rows in one pass; *full batch member by member*, the same function run one member "
        f"at a time (`members_per_pass=1`, {m} passes of {s['batch_size']} rows); *paper "
        f"recipe*, {s['batch_size'] // m} images a step tiled {m} times, so that a step has "
        f"as many rows as the single model's (the BatchEnsemble paper's and "
        f"uncertainty-baselines' setting), for the same epochs ({m} times as many steps); "
        f"Liquid Ensemble and MoE = {m} MLP experts on the network's pooled features.", "",
        "Images per second count input images (a full-batch BatchEnsemble step processes "
        f"each image {m} times). Train cost and eval cost: the single model's training "
        "(evaluation) images per second over the head's, from the training runs above, "
        "one head after the other. Step (ms) and step cost: seconds per optimisation step "
        f"(augmentation, forward, backward, optimizer step) measured after training in "
        f"{s.get('timing_rounds', 0)} rounds of {s.get('timing_steps', 0)} steps of every "
        "head in turn (after one untimed step at each turn); the step cost is the median "
        "over the rounds of the head's step time over the single model's in the same "
        "round, so that a change of load on a shared machine meets every head alike. The "
        "paper recipe's step has as many rows as the single model's. "
        + (_RETAINED if s.get("retain_cpu_memory") else _DEFAULT_MALLOC.format(
            rows=f"{m} x {s['batch_size']}")), "",
    ]
    load = env.get("load_average")
    if load:
        lines[6:6] = [f"Load average (1 min) at the start and the end: {load[0]} and "
                      f"{load[1]}.", ""]
    rows = []
    for head, r in res.items():
        step = r.get("step_seconds_median")
        rows.append([NAMES[head], r.get("batch_size", s["batch_size"]), f"{r['accuracy']:.4f}",
                     f"{r['nll']:.3f}", f"{r['ece']:.3f}", f"{r['parameters']:,}",
                     f"{r['train_images_per_s']:.0f}", f"{r['eval_images_per_s']:.0f}",
                     f"{r.get('train_cost_vs_single', float('nan')):.2f}x",
                     f"{r.get('eval_cost_vs_single', float('nan')):.2f}x",
                     "n/a" if step is None else f"{1e3 * step:.1f}",
                     (f"{r['step_cost_vs_single']:.2f}x" if "step_cost_vs_single" in r
                      else "n/a"),
                     mean_std([r["train_seconds"]], 0)])
    lines.append(markdown_table(["head", "images / step", "accuracy", "NLL", "ECE",
                                 "parameters", "train img/s", "eval img/s", "train cost",
                                 "eval cost", "step (ms)", "step cost", "train time (s)"],
                                rows))
    targets = _targets(res)
    if targets:
        lines += ["", "Targets (issue 13), on the step cost:", "",
                  markdown_table(["target", "measured", "met"], targets, align="lrl")]
    return "\n".join(lines) + "\n"


def _targets(res: dict[str, dict[str, Any]]) -> list[list[str]]:
    """The BatchEnsemble speed targets this run can judge: a full-batch step at most the
    Deep Ensemble's and at most 4.4x the single model's; a paper-recipe step at most
    1.6x."""
    cost = {h: r["step_cost_vs_single"] for h, r in res.items() if "step_cost_vs_single" in r}
    rows = []
    for head in ("batch", "batch_passes"):
        if head in cost and "deep" in cost:
            ok = cost[head] <= cost["deep"] and cost[head] <= 4.4
            rows.append([f"{NAMES[head]}: at most the Deep Ensemble's ({cost['deep']:.2f}x) "
                         "and at most 4.4x", f"{cost[head]:.2f}x", "yes" if ok else "no"])
    if "batch_paper" in cost:
        rows.append([f"{NAMES['batch_paper']}: at most 1.6x", f"{cost['batch_paper']:.2f}x",
                     "yes" if cost["batch_paper"] <= 1.6 else "no"])
    return rows
