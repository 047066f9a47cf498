"""Training-step speed of velora_ens' ensemble heads, in one run.

For every head, a training step (forward + loss + backward + Adam step) at 4 or 5
members is timed against **one** model of a member's size and against the same number
of **separate** models trained in a Python loop (one forward and loss per model, one
backward, one Adam step over all of them). The Liquid Ensemble's delegation solvers are
timed alone at B=1024, N=8. Models (all on 1 CPU thread):

* MLP / BatchEnsemble: an MLP 64 -> 256 -> 256 -> 10 with cross-entropy. BatchEnsemble
  follows the usual recipe (``per_core_batch // E`` examples tiled E times, so a step
  processes as many rows as the single model's); tiling the full batch is also shown.
* Deep Ensemble: ``DeepEnsemble(8, 1, hidden_dim=100, depth=3)`` (Gaussian NLL, no
  FGSM), batch 100, 5 members vectorised vs five plain ``nn.Linear``/``nn.RMSNorm``
  members of the same architecture.
* Liquid Ensemble: 4 experts 16 -> 64 -> 1 with delegation heads (``sink_one``),
  batch 256, auxiliary loss on: the vectorised expert bank and the seed's list of
  ``MLPExperts(16, 1, 4)`` modules (stacked into one batched call), against the same four
  seed experts looped with their outputs averaged (delegation heads evaluated, not
  solved: the cost of the experts alone).
* Stochastic MoE: ``StochasticModel`` of a ``MixtureOfExperts`` of 4 functional tanh MLP
  experts (width 32) and a ReLU gate, Gaussian parameters, 16 draws, batch 256; the
  experts run side by side as one network (the default), folded into the draw axis,
  and called one by one; the same at 8 draws, batch 64, width 16, where per-call
  overhead weighs more. The arithmetic floor:
  one stochastic MLP as wide as the four experts together (4 x 32 hidden units), and as
  wide as the experts and the gate (5 x 32), each a single network call with no mixture;
  a mixture that evaluates every expert at every draw (each draw a full MoE prediction,
  as in pypolymix) cannot cost less than the first.

The process keeps freed memory in its heap (``retain_freed_cpu_memory``, as the
``Trainer`` does on the CPU) unless ``--default-malloc`` is given.

Measurements are interleaved (round robin, each block of steps after one untimed step);
times are medians over rounds and ratios medians of the per-round ratios, so a slow
spell of a shared machine hits both sides of a ratio alike.
With one thread the clock is the thread's CPU time (``time.thread_time``: on a shared
machine, time spent waiting for a core is not counted); with more, wall time.

    python benchmarks/bench_ensembles.py
    python benchmarks/bench_ensembles.py --markdown docs/benchmarks/ensembles.md
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
from torch.nn import functional as F

from velora_ens.ensembles import (
    DeepEnsemble,
    DelegatingMLPExperts,
    LiquidEnsembleLayer,
    batchensemble,
    gaussian_nll_loss,
    solve_delegation_many_sinks,
    solve_delegation_one_sink,
)
from velora_ens.ensembles.moe import (
    GatingNetwork,
    IIDGaussianGroup,
    MixtureOfExperts,
    NeuralNetwork,
    StochasticModel,
)
from velora_ens.training import retain_freed_cpu_memory

TARGETS = {"be_vs_single": 1.6, "de_loop_vs_vectorised": 2.0, "solve_ms": 1.0,
           "le_list_vs_seed_loop": 1.3, "le_bank_vs_seed_loop": 1.0, "moe_vs_single": 2.0}


@dataclass
class Case:
    group: str
    name: str
    step: Callable[[], None]
    reps: int
    baseline: bool = False  # a second reference: the group gets an "x baseline" column


def _trainer(params, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    opt = torch.optim.Adam(list(params), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()
    return step


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def batch_cases(members: int = 4, batch: int = 256) -> list[Case]:
    x, y = torch.randn(batch, 64), torch.randint(0, 10, (batch,))
    xs, ys = x[: batch // members], y[: batch // members]
    single = mlp()
    be = batchensemble(mlp(), members)
    loop = [mlp() for _ in range(members)]

    def be_loss(xb, yb):
        out = be(xb)  # (E, b, 10)
        return F.cross_entropy(out.reshape(-1, 10), yb.repeat(members))

    g = f"BatchEnsemble ({members})"
    return [
        Case(g, f"single MLP, batch {batch}",
             _trainer(single.parameters(), lambda: F.cross_entropy(single(x), y)), 20),
        Case(g, f"BatchEnsemble({members}), {batch // members} per member tiled to {batch} rows",
             _trainer(be.parameters(), lambda: be_loss(xs, ys)), 20),
        Case(g, f"BatchEnsemble({members}), {batch} per member ({members * batch} rows)",
             _trainer(be.parameters(), lambda: be_loss(x, y)), 5),
        Case(g, f"{members} separate MLPs in a Python loop, batch {batch} each",
             _trainer([p for m in loop for p in m.parameters()],
                      lambda: sum(F.cross_entropy(m(x), y) for m in loop)), 5),
    ]


def plain_member() -> nn.Module:
    """One deep-ensemble member built from plain modules (the looped reference)."""
    layers: list[nn.Module] = []
    width = 8
    for _ in range(3):
        layers += [nn.Linear(width, 100), nn.RMSNorm(100, eps=1e-6), nn.SiLU()]
        width = 100
    return nn.Sequential(*layers, nn.Linear(100, 2))


def deep_cases(members: int = 5, batch: int = 100) -> list[Case]:
    x, y = torch.randn(batch, 8), torch.randn(batch, 1)
    kw = {"hidden_dim": 100, "depth": 3, "use_adversarial_training": False}
    single = DeepEnsemble(8, 1, num_members=1, **kw)
    vec = DeepEnsemble(8, 1, num_members=members, **kw)
    loop = [plain_member() for _ in range(members)]

    def member_loss(m):
        mean, raw = m(x).split(1, -1)
        return gaussian_nll_loss(mean, F.softplus(raw) + 1e-6, y)

    g = f"Deep Ensemble ({members})"
    return [
        Case(g, "single member", _trainer(single.parameters(), lambda: single(x, y)), 20),
        Case(g, f"DeepEnsemble({members}), vectorised",
             _trainer(vec.parameters(), lambda: vec(x, y)), 20),
        Case(g, f"{members} separate members (nn.Linear/nn.RMSNorm MLPs) in a Python loop",
             _trainer([p for m in loop for p in m.parameters()],
                      lambda: sum(member_loss(m) for m in loop) / members), 5),
    ]


class SeedExpert(nn.Module):
    """The seed-000 quickstart's ``MLPExperts(16, 1, n)``: a predictor MLP and a softmax
    router, both 16 -> 64 -> out."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.predictor = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1))
        self.router = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, n),
                                    nn.Softmax(dim=-1))

    def forward(self, x):
        return self.predictor(x), self.router(x)


def liquid_cases(members: int = 4, batch: int = 256) -> list[Case]:
    x, y = torch.randn(batch, 16), torch.randn(batch, 1)
    single = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1))
    bank = LiquidEnsembleLayer(DelegatingMLPExperts(16, 1, members, hidden=64), 0.1, 0.1)
    listed = LiquidEnsembleLayer([SeedExpert(members) for _ in range(members)], 0.1, 0.1)
    loop = [nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1))
            for _ in range(members)]
    seeds = [SeedExpert(members) for _ in range(members)]

    def le_loss(layer):
        return F.mse_loss(layer(x), y) + layer.auxiliary_loss()

    def seed_loop_loss():
        outs = [e(x) for e in seeds]  # the delegations are computed, then unused
        return F.mse_loss(torch.stack([o[0] for o in outs], 1).mean(1), y) + 0.0 * sum(
            o[1].sum() for o in outs)

    g = f"Liquid Ensemble ({members})"
    return [
        Case(g, "single MLP", _trainer(single.parameters(), lambda: F.mse_loss(single(x), y)),
             20),
        Case(g, f"LiquidEnsembleLayer, {members}-expert bank (vectorised), sink_one",
             _trainer(bank.parameters(), lambda: le_loss(bank)), 20),
        Case(g, f"LiquidEnsembleLayer, list of {members} seed expert modules, sink_one",
             _trainer(listed.parameters(), lambda: le_loss(listed)), 10),
        Case(g, f"{members} seed experts in a Python loop, outputs averaged (delegation heads "
                "evaluated, not solved)",
             _trainer([p for e in seeds for p in e.parameters()], seed_loop_loss), 10,
             baseline=True),
        Case(g, f"{members} separate MLPs in a Python loop (no delegation heads)",
             _trainer([p for m in loop for p in m.parameters()],
                      lambda: sum(F.mse_loss(m(x), y) for m in loop)), 10),
    ]


def moe_cases(members: int = 4, batch: int = 256, draws: int = 16,
              width: int = 32) -> list[Case]:
    x, y = torch.rand(batch, 2) * 2 - 1, torch.randn(batch, 1)

    def stochastic(surrogate):
        return StochasticModel(surrogate, IIDGaussianGroup("all", surrogate.num_params()))

    def expert():
        return NeuralNetwork(2, 1, width=width, depth=1, activation=torch.tanh)

    def mixture(joint_limit=MixtureOfExperts.joint_limit, fold_limit=MixtureOfExperts.fold_limit):
        surrogate = MixtureOfExperts([expert() for _ in range(members)],
                                     GatingNetwork(2, members, width=width))
        surrogate.joint_limit, surrogate.fold_limit = joint_limit, fold_limit
        return stochastic(surrogate)

    single, moe = stochastic(expert()), mixture()
    folded, unfolded = mixture(joint_limit=0), mixture(joint_limit=0, fold_limit=0)
    loop = [stochastic(expert()) for _ in range(members)]
    wide = {k: stochastic(NeuralNetwork(2, 1, width=k * width, depth=1, activation=torch.tanh))
            for k in (members, members + 1)}

    def loss(model):
        return (F.mse_loss(model(x, num_samples=draws), y.expand(draws, -1, -1))
                + 1e-3 * model.distribution_loss())

    size = f"{draws} draws" + ("" if (batch, width) == (256, 32) else f", batch {batch}")
    g = f"Stochastic MoE ({members}), {draws} draws, batch {batch}, width {width}"
    return [
        Case(g, f"single stochastic MLP, {size}",
             _trainer(single.parameters(), lambda: loss(single)), 20),
        Case(g, f"MixtureOfExperts of {members} + gate, {size}",
             _trainer(moe.parameters(), lambda: loss(moe)), 10),
        Case(g, f"MixtureOfExperts of {members} + gate, {size}, experts folded into the draw "
                "axis (joint_limit=0)",
             _trainer(folded.parameters(), lambda: loss(folded)), 10),
        Case(g, f"MixtureOfExperts of {members} + gate, {size}, experts called one by one "
                "(joint_limit=0, fold_limit=0)",
             _trainer(unfolded.parameters(), lambda: loss(unfolded)), 10),
        Case(g, f"{members} separate stochastic MLPs in a Python loop, {size}",
             _trainer([p for m in loop for p in m.parameters()],
                      lambda: sum(loss(m) for m in loop)), 10),
        *(Case(g, f"floor: one stochastic MLP of width {k * width} ({what}), {size}",
               _trainer(wide[k].parameters(), lambda m=wide[k]: loss(m)), 10)
          for k, what in ((members, f"the {members} experts' hidden units"),
                          (members + 1, "the experts' and the gate's"))),
    ]


def solver_cases(batch: int = 1024, n: int = 8) -> list[Case]:
    D = torch.softmax(torch.randn(batch, n, n), -1)
    g = f"Liquid Ensemble solve (B={batch}, N={n}, forward)"
    return [
        Case(g, "solve_delegation_one_sink", lambda: solve_delegation_one_sink(D), 50),
        Case(g, "solve_delegation_many_sinks, closed form",
             lambda: solve_delegation_many_sinks(D, method="closed_form"), 50),
        Case(g, "solve_delegation_many_sinks, iterative",
             lambda: solve_delegation_many_sinks(D), 10),
    ]


def run(rounds: int) -> tuple[list[Case], dict[str, list[float]]]:
    torch.manual_seed(0)
    cases = (batch_cases() + deep_cases() + liquid_cases() + moe_cases()
             + moe_cases(batch=64, draws=8, width=16) + solver_cases())
    times: dict[str, list[float]] = {c.name: [] for c in cases}
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    for c in cases:  # warm-up
        for _ in range(2):
            c.step()
    for r in range(rounds):
        for c in cases:
            c.step()  # untimed: every block is timed warm, as in training, not after others
            start = clock()
            for _ in range(c.reps):
                c.step()
            times[c.name].append((clock() - start) / c.reps)
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return cases, times


def report(cases: list[Case], times: dict[str, list[float]], rounds: int,
           retained: bool = False) -> tuple[str, bool]:
    t = {k: statistics.median(v) for k, v in times.items()}

    def ratio(a: str, b: str) -> float:
        """The median over rounds of a's time over b's in the same round."""
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    lines = [
        f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} thread(s) "
        f"({'thread CPU time' if torch.get_num_threads() == 1 else 'wall time'}); "
        f"{rounds} interleaved rounds, medians; freed memory "
        f"{'kept in the heap (retain_freed_cpu_memory)' if retained else 'as glibc defaults'}"
        f"; {dt.date.today().isoformat()}.",
        "",
        "Training step = forward + loss + backward + Adam step. In each group the first row "
        "is the reference (1.00x); a ratio is the median over rounds of the row's time over "
        "the reference's in the same round.",
    ]
    group = None
    for c in cases:
        if c.group != group:
            group, ref = c.group, c.name
            base = next((d for d in cases if d.group == group and d.baseline), None)
            extra = (" x looped seed experts |", "---:|") if base is not None else ("", "")
            lines += ["", f"**{group}**", "", f"| model | time (ms) | x first row |{extra[0]}",
                      f"|---|---:|---:|{extra[1]}"]
        row = f"| {c.name} | {t[c.name] * 1e3:.3f} | {ratio(c.name, ref):.2f}x |"
        if base is not None:
            row += f" {ratio(c.name, base.name):.2f}x |"
        lines.append(row)

    def find(prefix: str) -> str:
        return next(k for k in times if k.startswith(prefix))

    be = ratio(find("BatchEnsemble(4), 64 per member"), find("single MLP, batch"))
    de = ratio(find("5 separate members"), find("DeepEnsemble(5), vectorised"))
    solve_ms = t["solve_delegation_one_sink"] * 1e3
    seed_loop = find("4 seed experts in a Python loop")
    le_list = ratio(find("LiquidEnsembleLayer, list of 4"), seed_loop)
    le_bank = ratio(find("LiquidEnsembleLayer, 4-expert bank"), seed_loop)
    moe = ratio(find("MixtureOfExperts of 4"), find("single stochastic MLP"))
    moe_floor = ratio(find("floor: one stochastic MLP"), find("single stochastic MLP"))
    checks = [
        ("BatchEnsemble(4) training step at most 1.6x a single model (same rows per step)",
         f"{be:.2f}x", be <= TARGETS["be_vs_single"]),
        ("vectorised DeepEnsemble(5) at least 2x faster than five looped models",
         f"{de:.2f}x faster", de >= TARGETS["de_loop_vs_vectorised"]),
        ("Liquid Ensemble solve (sink_one) for B=1024, N=8 under 1 ms",
         f"{solve_ms:.3f} ms", solve_ms < TARGETS["solve_ms"]),
        ("LiquidEnsembleLayer over the seed's list of 4 expert modules at most 1.3x the "
         "same experts looped (outputs averaged, delegation heads not solved)",
         f"{le_list:.2f}x", le_list <= TARGETS["le_list_vs_seed_loop"]),
        ("LiquidEnsembleLayer over the vectorised 4-expert bank below the looped seed "
         "experts", f"{le_bank:.2f}x", le_bank < TARGETS["le_bank_vs_seed_loop"]),
        ("Stochastic MoE: MixtureOfExperts of 4 + gate at most 2x one stochastic expert "
         f"(16 draws); the floor (one MLP as wide as the 4 experts): {moe_floor:.2f}x",
         f"{moe:.2f}x", moe <= TARGETS["moe_vs_single"]),
    ]
    lines += ["", "| target | measured | met |", "|---|---:|:---:|"]
    ok = True
    for text, value, met in checks:
        ok &= met
        lines.append(f"| {text} | {value} | {'yes' if met else 'no'} |")
    return "\n".join(lines), ok


def _models_text() -> str:
    """The docstring's description of the cases, for the generated page."""
    text = __doc__.split("\n\n", 1)[1].split("\n\nMeasurements are")[0]
    return text.replace("Models (all on 1 CPU thread):", "Models (1 CPU thread):")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15,
                        help="interleaved rounds (default 15)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--markdown", help="also write the results as a Markdown page here")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc thresholds as they are (default: keep "
                             "freed memory in the heap, as the Trainer does on the CPU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    retained = False if args.default_malloc else retain_freed_cpu_memory()
    cases, times = run(args.rounds)
    table, ok = report(cases, times, args.rounds, retained)
    print(table)
    if args.markdown:
        page = (
            "# Ensemble heads speed\n\n"
            "Generated by `python benchmarks/bench_ensembles.py --markdown "
            f"{args.markdown}`.\n\n" + _models_text() + "\n\n" + table + "\n"
        )
        write_atomic(args.markdown, page)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
