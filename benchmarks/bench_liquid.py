"""Speed of velora_ens' liquid network against ncps and torch's LSTM, in one run.

Training step = forward + backward + Adam step on a (64, 32, 32) batch of sequences
with an MSE loss on every step's output; single-step inference = one step at batch 1
under ``torch.inference_mode`` with the state carried over. Models:

* ``LiquidNCPNetwork(32, 19, 1)``: ours, CfC command cell (and the same with the fused
  scan turned off, with mixed memory, fused and not, and with the LTC cell);
* ncps ``CfC(32, AutoNCP(20, 1))`` (and with ``mixed_memory=True``) and
  ``LTC(32, AutoNCP(20, 1))`` (20 neurons = 19 inter + command + 1 motor, the same wiring
  sizes as ours);
* ``torch.nn.LSTM(32, 20)`` with a ``Linear(20, 1)`` read-out.

Measurements are interleaved (round robin) and reported as medians over rounds, so a
slow spell of a shared machine hits every model alike; ratios are taken within the run.

    python benchmarks/bench_liquid.py                     # print the table
    python benchmarks/bench_liquid.py --markdown docs/benchmarks/liquid-core.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from report import machine, write_atomic
from torch import nn

from velora_ens.cli_options import integer_option
from velora_ens.models import GatedNetwork, LiquidNCPNetwork

BATCH, LENGTH, FEATURES = 64, 32, 32
TARGETS = {
    "train_vs_ncps_cfc": 3.0,  # at least 3x faster than ncps' wired CfC
    "train_vs_lstm": 2.0,  # within 2x of the LSTM
    "infer_us": 100.0,  # single-step inference under 100 us
}


@dataclass
class Case:
    name: str
    model: nn.Module
    sequence: Callable[[torch.Tensor], torch.Tensor]  # (B, L, F) -> (B, L, 1)
    step: Callable[[torch.Tensor, object], tuple[torch.Tensor, object]]  # (1, F), state
    train_reps: int


class LSTMRegressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(FEATURES, 20, batch_first=True)
        self.head = nn.Linear(20, 1)

    def forward(self, x, state=None):
        out, state = self.lstm(x, state)
        return self.head(out), state


def build_cases(include_ncps: bool) -> list[Case]:
    ours = LiquidNCPNetwork(FEATURES, 19, 1, seed=0)
    unfused = LiquidNCPNetwork(FEATURES, 19, 1, seed=0)
    unfused.command.fused = False
    ours_ltc = LiquidNCPNetwork(FEATURES, 19, 1, seed=0, cell="ltc")
    mixed = LiquidNCPNetwork(FEATURES, 19, 1, seed=0, mixed_memory=True)
    mixed_unfused = LiquidNCPNetwork(FEATURES, 19, 1, seed=0, mixed_memory=True)
    mixed_unfused.command.fused = False
    gated = {}
    for kind in ("gru", "lstm"):
        for fused in (True, False):
            net = GatedNetwork(FEATURES, 20, 1, cell=kind, seed=0)
            net.fused = fused
            gated[kind, fused] = net
    lstm = LSTMRegressor()

    def liquid_step(net):
        return lambda x, h: net(x, h)

    cases = [
        Case("velora_ens LiquidNCPNetwork (CfC)", ours, lambda x: ours(x)[0],
             liquid_step(ours), 20),
        Case("velora_ens LiquidNCPNetwork (CfC, unfused autograd loop)", unfused,
             lambda x: unfused(x)[0], liquid_step(unfused), 20),
        Case("velora_ens LiquidNCPNetwork (CfC, mixed memory)", mixed,
             lambda x: mixed(x)[0], liquid_step(mixed), 10),
        Case("velora_ens LiquidNCPNetwork (CfC, mixed memory, unfused autograd loop)",
             mixed_unfused, lambda x: mixed_unfused(x)[0], liquid_step(mixed_unfused), 5),
        Case("velora_ens LiquidNCPNetwork (LTC, 6 unfolds)", ours_ltc,
             lambda x: ours_ltc(x)[0], liquid_step(ours_ltc), 3),
        Case("torch.nn.LSTM(32, 20) + Linear", lstm, lambda x: lstm(x)[0],
             lambda x, s: lstm(x.unsqueeze(1), s), 20),
        *(Case(f"velora_ens GatedNetwork(32, 20, 1, cell={kind!r})"
               + ("" if fused else ", unfused autograd loop"), net,
               (lambda n: lambda x: n(x)[0])(net), liquid_step(net), 10 if fused else 5)
          for (kind, fused), net in gated.items()),
    ]
    if include_ncps:
        from ncps.torch import LTC, CfC
        from ncps.wirings import AutoNCP

        cfc = CfC(FEATURES, AutoNCP(20, 1, seed=0), batch_first=True)
        ltc = LTC(FEATURES, AutoNCP(20, 1, seed=0), batch_first=True)
        cfc_mixed = CfC(FEATURES, AutoNCP(20, 1, seed=0), batch_first=True, mixed_memory=True)
        cases += [
            Case("ncps CfC(32, AutoNCP(20, 1))", cfc, lambda x: cfc(x)[0],
                 lambda x, h: cfc(x.unsqueeze(1), h), 3),
            Case("ncps CfC(32, AutoNCP(20, 1), mixed_memory=True)", cfc_mixed,
                 lambda x: cfc_mixed(x)[0], lambda x, h: cfc_mixed(x.unsqueeze(1), h), 2),
            Case("ncps LTC(32, AutoNCP(20, 1))", ltc, lambda x: ltc(x)[0],
                 lambda x, h: ltc(x.unsqueeze(1), h), 1),
        ]
    return cases


def time_training(case: Case, x, target, opt, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(case.sequence(x), target)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / reps


def time_inference(case: Case, x1, reps: int) -> float:
    with torch.inference_mode():
        state = None
        _, state = case.step(x1, state)
        start = time.perf_counter()
        for _ in range(reps):
            _, state = case.step(x1, state)
        return (time.perf_counter() - start) / reps


def run(rounds: int, include_ncps: bool, batch: int = BATCH, length: int = LENGTH
        ) -> tuple[dict[str, float], dict[str, float]]:
    torch.manual_seed(0)
    cases = build_cases(include_ncps)
    x = torch.randn(batch, length, FEATURES)
    target = torch.randn(batch, length, 1)
    x1 = torch.randn(1, FEATURES)
    opts = {c.name: torch.optim.Adam(c.model.parameters(), lr=1e-3) for c in cases}
    train: dict[str, list[float]] = {c.name: [] for c in cases}
    infer: dict[str, list[float]] = {c.name: [] for c in cases}
    for c in cases:  # warm-up
        time_training(c, x, target, opts[c.name], 2)
        time_inference(c, x1, 20)
    for r in range(rounds):
        for c in cases:
            train[c.name].append(time_training(c, x, target, opts[c.name], c.train_reps))
            infer[c.name].append(time_inference(c, x1, 200))
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return ({k: statistics.median(v) for k, v in train.items()},
            {k: statistics.median(v) for k, v in infer.items()})


def report(train: dict[str, float], infer: dict[str, float], rounds: int, batch: int = BATCH,
           length: int = LENGTH) -> tuple[str, bool]:
    ours = "velora_ens LiquidNCPNetwork (CfC)"
    lstm = "torch.nn.LSTM(32, 20) + Linear"
    ncps_cfc = "ncps CfC(32, AutoNCP(20, 1))"
    lines = [
        f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} thread; "
        f"{rounds} interleaved rounds, medians; "
        f"{dt.date.today().isoformat()}.",
        "",
        f"Training step: forward + backward + Adam, batch {batch}, sequence length {length}, "
        f"{FEATURES} inputs. Inference: one step at batch 1, `torch.inference_mode`, state "
        "carried over.",
        "",
        "| model | train step (ms) | ours is faster by | single step (us) |",
        "|---|---:|---:|---:|",
    ]
    for name in train:
        speedup = train[name] / train[ours]
        lines.append(f"| {name} | {train[name] * 1e3:.2f} | {speedup:.2f}x | "
                     f"{infer[name] * 1e6:.1f} |")
    if (batch, length) != (BATCH, LENGTH):  # the targets are set at the page's shape
        lines += ["", f"The targets are judged at batch {BATCH} and {LENGTH} steps only."]
        return "\n".join(lines), True
    lines += ["", "| target | measured | met |", "|---|---:|:---:|"]
    ok = True
    if ncps_cfc in train:
        r = train[ncps_cfc] / train[ours]
        met = r >= TARGETS["train_vs_ncps_cfc"]
        ok &= met
        lines.append(f"| training step at least 3x faster than ncps' wired CfC | {r:.2f}x | "
                     f"{'yes' if met else 'no'} |")
    r = train[ours] / train[lstm]
    met = r <= TARGETS["train_vs_lstm"]
    ok &= met
    lines.append(f"| training step within 2x of the LSTM | {r:.2f}x the LSTM's time | "
                 f"{'yes' if met else 'no'} |")
    us = infer[ours] * 1e6
    met = us < TARGETS["infer_us"]
    ok &= met
    lines.append(f"| single-step inference under 100 us | {us:.1f} us | {'yes' if met else 'no'} |")
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-ncps", action="store_true", help="skip the ncps models")
    parser.add_argument("--batch", type=integer_option("--batch", 1), default=BATCH,
                        help=f"sequences per training step (default {BATCH}; LiquidPPO's "
                             "update trains on 1 of 128 steps)")
    parser.add_argument("--length", type=integer_option("--length", 1), default=LENGTH,
                        help=f"steps per training sequence (default {LENGTH})")
    parser.add_argument("--markdown", help="also write the results as a Markdown page here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    include_ncps = not args.no_ncps
    if include_ncps:
        try:
            import ncps  # noqa: F401
        except ImportError:
            print("ncps is not installed: pip install -e '.[bench]' (or pass --no-ncps)",
                  file=sys.stderr)
            return 2
    train, infer = run(args.rounds, include_ncps, args.batch, args.length)
    table, ok = report(train, infer, args.rounds, args.batch, args.length)
    print(table)
    if args.markdown:
        page = (
            "# Liquid core speed\n\n"
            "Generated by `python benchmarks/bench_liquid.py "
            + "".join(f"--{k} {v} " for k, v in (("batch", args.batch), ("length", args.length))
                      if v != {"batch": BATCH, "length": LENGTH}[k])
            + f"--markdown {args.markdown}` (install with `pip install -e '.[bench]'`).\n\n"
            + table + "\n"
        )
        write_atomic(args.markdown, page)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
