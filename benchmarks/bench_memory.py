"""How far back can each network remember? Supervised memory probes, no RL.

Tasks (sequences of length 64, batch 64, a fresh batch each Adam step):

* ``delay-K``: each step shows one of 4 symbols (one-hot); the target is the symbol shown
  ``K`` steps ago (scored on steps ``t >= K``; chance 0.25). Sequences are ``2 K`` steps
  long where that is longer than 64 (K = 64), so that ``K`` steps are scored.
* ``count``: each step shows a bit (one-hot); the target is the sign of (ones - zeros) so
  far: fewer, as many or more ones (chance about 0.4). It needs an exact running count.

Networks (``--models``; the liquid ones are ``LiquidNCPNetwork(4, 32, 4)``, the network an
agent's actor builds for 4 observations and 4 outputs, so the state is its 12 command
neurons):

* ``liquid-agent``: the actor network ``agents.LiquidPPO`` builds on its defaults for 4
  observations and 4 discrete actions (2 and 3 for the counting task), whatever those
  defaults are; ``liquid-agent-mixed``: the same with ``actor_mixed_memory=True``;
  ``liquid-agent-carry``: with ``actor_cfc_mode="carry"``;
* ``liquid``: its defaults; ``liquid-dense``: ``dense_recurrence=True``;
  ``liquid-self``: ``self_synapse_init=0.5`` (each neuron's synapse onto itself starts at
  0.5); ``liquid-dense-self``: both; ``liquid-mixed``: ``mixed_memory=True`` (an LSTM
  memory cell beside the CfC cell); ``liquid-carry``: ``mode="carry"`` (the CfC state
  carried through the time gate, ``h' = h (1 - g) + g ff2``); ``liquid-dense-carry``: with
  ``dense_recurrence``; ``ltc``, ``ltc-mixed``: the LTC cell, without and with mixed
  memory;
* ``gru``, ``lstm``: torch's, with the liquid network's state width (12) and a linear
  read-out; ``gru-params``, ``lstm-params``: with about the liquid network's parameter
  count; ``gru-agent``: torch's GRU with ``liquid-agent``'s state width.

Each (task, network, seed) trains for at most ``--steps`` Adam steps (learning rate
``--lr``) and is scored every 250 steps on 512 held-out sequences; it stops early once
its accuracy reaches 0.99 ("solved"). A network solves a task when its mean accuracy over
the seeds is at least 0.99. For each network and seed the delays run in increasing
order, and once two delays in a row are not solved the longer ones are not run (they
count as not solved). The training-step time is the median over the run (forward,
backward and Adam step), one thread per run.

    python benchmarks/bench_memory.py                    # the page (docs/benchmarks/memory.md)
    python benchmarks/bench_memory.py --models liquid gru --tasks 4 16 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import torch
from report import machine, run_line, write_page, write_report
from torch import nn
from torch.nn import functional as F

from velora_ens.models import LiquidNCPNetwork

ROOT = Path(__file__).resolve().parents[1]
BATCH, LENGTH, SYMBOLS, NEURONS = 64, 64, 4, 32
DELAYS = (1, 2, 4, 8, 16, 32, 64)
EVAL_EVERY, EVAL_BATCH, SOLVED = 250, 512, 0.99
SELF = 0.5  # self_synapse_init, chosen on seed 0 at K = 8 and 16 with 1500 steps
LIQUID = {"liquid": {}, "liquid-dense": {"dense_recurrence": True},
          "liquid-self": {"self_synapse_init": SELF},
          "liquid-dense-self": {"dense_recurrence": True, "self_synapse_init": SELF},
          "liquid-mixed": {"mixed_memory": True},
          "liquid-carry": {"mode": "carry"},
          "liquid-dense-carry": {"dense_recurrence": True, "mode": "carry"},
          "ltc": {"cell": "ltc"},
          "ltc-mixed": {"cell": "ltc", "mixed_memory": True}}
GATED = {"gru": nn.GRU, "lstm": nn.LSTM}
AGENT = "liquid-agent"  # LiquidPPO's actor network on its defaults
AGENT_OPTIONS = {AGENT: {}, "liquid-agent-mixed": {"actor_mixed_memory": True},
                 "liquid-agent-carry": {"actor_cfc_mode": "carry"}}
MODELS = (*AGENT_OPTIONS, *LIQUID, "gru", "lstm", "gru-params", "lstm-params", "gru-agent")


# ------------------------------------------------------------------ tasks
def task_batch(task: str, n: int, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Inputs ``(n, L, in)``, targets ``(n, L)`` and the first scored step."""
    if task == "count":
        bits = torch.randint(0, 2, (n, LENGTH), generator=generator)
        balance = torch.cumsum(2 * bits - 1, dim=1)
        return F.one_hot(bits, 2).float(), torch.sign(balance) + 1, 0
    delay = int(task)
    # at least K scored steps: 64 steps, 128 for K = 64
    symbols = torch.randint(0, SYMBOLS, (n, max(LENGTH, 2 * delay)), generator=generator)
    target = torch.roll(symbols, delay, dims=1)  # target[t] = symbols[t - K] for t >= K
    return F.one_hot(symbols, SYMBOLS).float(), target, delay


def task_sizes(task: str) -> tuple[int, int]:
    """(input features, classes)."""
    return (2, 3) if task == "count" else (SYMBOLS, SYMBOLS)


# ------------------------------------------------------------------ networks
class GatedReadout(nn.Module):
    """torch's GRU or LSTM over the sequence, then a linear read-out at every step."""

    def __init__(self, kind: str, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.rnn = GATED[kind](in_features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0])


class LiquidSequence(nn.Module):
    def __init__(self, in_features: int, out_features: int, seed: int, **options) -> None:
        super().__init__()
        self.net = LiquidNCPNetwork(in_features, NEURONS, out_features, seed=seed, **options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


class AgentSequence(nn.Module):
    """The actor network ``agents.LiquidPPO`` builds on its defaults (with ``options``, its
    keyword arguments, over them) for ``in_features`` observations and ``out_features``
    discrete actions (its logits read out at every step)."""

    def __init__(self, in_features: int, out_features: int, seed: int, **options: object
                 ) -> None:
        super().__init__()
        import gymnasium as gym

        from agents import LiquidPPO

        class Probe(gym.Env):
            observation_space = gym.spaces.Box(0.0, 1.0, (in_features,))
            action_space = gym.spaces.Discrete(out_features)

            def reset(self, *, seed=None, options=None):
                return self.observation_space.low, {}

            def step(self, action):
                return self.observation_space.low, 0.0, True, False, {}

        self.net = LiquidPPO("MlpPolicy", Probe(), seed=seed, **options).actor.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def liquid_width(in_features: int, out_features: int) -> tuple[int, int]:
    """(state width, parameters) of the default liquid network."""
    net = LiquidNCPNetwork(in_features, NEURONS, out_features, seed=0)
    return net.wiring.counts.command, parameters(net)


def build(model: str, task: str, seed: int) -> nn.Module:
    in_f, out_f = task_sizes(task)
    if model in AGENT_OPTIONS:
        return AgentSequence(in_f, out_f, seed, **AGENT_OPTIONS[model])
    if model in LIQUID:
        return LiquidSequence(in_f, out_f, seed, **LIQUID[model])
    kind, _, matched = model.partition("-")
    width, budget = liquid_width(in_f, out_f)
    if matched == "agent":  # the state width of the agents' default network
        width = AgentSequence(in_f, out_f, 0).net.hidden_size
    elif matched:  # the widest gated network within the liquid network's parameter count
        width = max(h for h in range(1, 256)
                    if parameters(GatedReadout(kind, in_f, h, out_f)) <= budget)
    return GatedReadout(kind, in_f, width, out_f)


def machines(report: dict) -> str:
    """The machine of a page made in one sitting, or each sitting's machine, date and
    networks."""
    sittings = report.get("sittings") or []
    if len({(s["machine"], s["date"]) for s in sittings}) <= 1:
        return report["machine"]
    return "; ".join(f"{s['machine']} ({s['date']}: {', '.join(s['models'])})"
                     for s in sittings)


def state_width(model: str, task: str) -> int:
    net = build(model, task, 0)
    if isinstance(net, LiquidSequence | AgentSequence):
        return net.net.hidden_size
    hidden = net.rnn.hidden_size
    return 2 * hidden if isinstance(net.rnn, nn.LSTM) else hidden


# ------------------------------------------------------------------ one run
def accuracy(net: nn.Module, task: str, generator: torch.Generator) -> float:
    x, y, first = task_batch(task, EVAL_BATCH, generator)
    with torch.no_grad():
        guess = net(x).argmax(-1)
    return float((guess[:, first:] == y[:, first:]).float().mean())


def run_chain(job: tuple[str, int, list[str], int, float]) -> list[dict]:
    """One network and seed over the tasks: the delays in increasing order until two in a
    row are not solved, then the counting task."""
    model, seed, tasks, steps, lr = job
    torch.set_num_threads(1)
    runs, missed = [], 0
    for task in sorted((t for t in tasks if t != "count"), key=int):
        if missed >= 2:
            break
        runs.append(run_one(task, model, seed, steps, lr))
        missed = 0 if runs[-1]["accuracy"] >= SOLVED else missed + 1
    if "count" in tasks:
        runs.append(run_one("count", model, seed, steps, lr))
    return runs


def run_one(task: str, model: str, seed: int, steps: int, lr: float) -> dict:
    torch.manual_seed(seed)
    net = build(model, task, seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    data = torch.Generator().manual_seed(10_000 + seed)
    held_out = torch.Generator()
    times, acc, step = [], 0.0, 0
    while step < steps:
        x, y, first = task_batch(task, BATCH, data)
        start = time.perf_counter()
        logits = net(x)[:, first:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[:, first:].reshape(-1))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        times.append(time.perf_counter() - start)
        step += 1
        if step % EVAL_EVERY == 0 or step == steps:
            acc = accuracy(net, task, held_out.manual_seed(seed))
            if acc >= SOLVED:
                break
    result = {"task": task, "model": model, "seed": seed, "accuracy": acc, "steps": step,
              "step_ms": 1e3 * statistics.median(times), "parameters": parameters(net),
              "state_width": state_width(model, task)}
    print(f"  {task:>5} {model:<12} seed {seed}  acc {acc:.3f} after {step} steps  "
          f"{result['step_ms']:.1f} ms/step", file=sys.stderr, flush=True)
    return result


# ------------------------------------------------------------------ page
def render(report: dict, path: Path) -> None:
    runs, tasks = report["runs"], report["tasks"]
    models = [m for m in MODELS if any(r["model"] == m for r in runs)]
    seeds = sorted({r["seed"] for r in runs})

    def cell(model: str, task: str) -> tuple[float, int] | None:
        acc = [r["accuracy"] for r in runs if r["model"] == model and r["task"] == task]
        return (statistics.fmean(acc), len(acc)) if acc else None

    def ran(model: str) -> list[int]:
        """The seeds a network has run (a chain not yet run leaves its seed out)."""
        return sorted({r["seed"] for r in runs if r["model"] == model})

    def solved(model: str, c: tuple[float, int] | None) -> bool:
        return c is not None and c[1] == len(ran(model)) and c[0] >= SOLVED

    def shown(model: str, c: tuple[float, int] | None) -> str:
        if c is None:
            return "-"
        text = f"**{c[0]:.2f}**" if solved(model, c) else f"{c[0]:.2f}"
        n = len(ran(model))
        return text if c[1] == n else f"{text} ({c[1]} of {n} seeds)"

    delays = [t for t in tasks if t != "count"]
    lines = ["# Memory of the networks", "",
             "How many steps back can each network remember? Supervised probes with no RL; "
             "see `benchmarks/bench_memory.py` for the tasks and networks.", "",
             run_line(report["command"], machines(report), report["torch"], report["date"],
                      report["jobs"], report["minutes"]), "",
             f"Budget: at most {report['steps']} Adam steps (learning rate {report['lr']}) at "
             f"batch {BATCH}, sequences of {LENGTH} steps (2 K for K = 64), seeds {seeds}; "
             "a run stops once "
             f"its held-out accuracy reaches {SOLVED}. Cells: mean held-out accuracy over the "
             "seeds (**bold**: solved, at least 0.99 over every seed; -: not run, after two "
             "shorter delays in a row were not solved).", "",
             "| network | state width | parameters | largest K solved | "
             + " | ".join(f"K={t}" for t in delays)
             + (" | count" if "count" in tasks else "") + " | ms per training step |",
             "|---|---|---|---|" + "---|" * (len(tasks) + 1)]
    largest: dict[str, int] = {}
    for m in models:
        mine = [r for r in runs if r["model"] == m]
        done = [int(t) for t in delays if solved(m, cell(m, t))]
        largest[m] = max(done, default=0)
        width = {r["state_width"] for r in mine if r["task"] != "count"}
        params = {r["parameters"] for r in mine if r["task"] != "count"}
        label = m if ran(m) == seeds else f"{m} (seeds {', '.join(map(str, ran(m)))} only)"
        lines.append(f"| {label} | {'/'.join(map(str, sorted(width)))} | "
                     f"{'/'.join(map(str, sorted(params)))} | "
                     f"{max(done) if done else 'none'} | "
                     + " | ".join(shown(m, cell(m, t)) for t in tasks)
                     + f" | {statistics.median(r['step_ms'] for r in mine):.1f} |")
    lines += ["", "The training-step time is the median over every run of the network "
              "(forward, backward and Adam step at batch 64, length 64, one thread); it varies "
              "between machines and with the load of a shared one, the ratios less.", ""]
    met = None
    widths = {m: {r["state_width"] for r in runs if r["model"] == m and r["task"] != "count"}
              for m in (AGENT, "gru", "gru-agent")}
    # the GRU of the agents' network's state width: gru-agent, or gru where they agree
    gru = next((g for g in ("gru-agent", "gru") if g in largest and widths[g] == widths[AGENT]),
               None)
    if AGENT in largest and gru is not None:
        met = largest[AGENT] >= largest[gru]
        lines += [f"Target: the liquid network as the agents build it by default (`{AGENT}`) "
                  f"solves at least the largest K that the GRU of the same state width "
                  f"(`{gru}`) solves: {largest[AGENT] or 'none'} against "
                  f"{largest[gru] or 'none'}, **{'met' if met else 'missed'}**.", ""]
    elif AGENT in largest and "gru" in largest:
        lines += [f"No target line: `{AGENT}`'s state width {widths[AGENT]} is not the GRU's "
                  f"{widths['gru']}; run `gru-agent`.", ""]
    elif AGENT not in largest:
        lines += [f"Target (the liquid network as the agents build it by default solves at "
                  f"least the largest K that the GRU of the same state width solves): not "
                  f"judged, `{AGENT}` has not run (`python benchmarks/bench_memory.py "
                  f"--models {AGENT} gru-agent`).", ""]
    report["target_met"] = met
    write_page(path, lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--tasks", nargs="+", choices=[*map(str, DELAYS), "count"],
                        default=[*map(str, DELAYS), "count"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/memory.json")
    parser.add_argument("--page", type=Path, default=ROOT / "docs/benchmarks/memory.md")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args(argv)
    if args.steps < EVAL_EVERY or args.jobs < 1:
        parser.error(f"--steps must be at least {EVAL_EVERY} and --jobs at least 1, got "
                     f"{args.steps} and {args.jobs}")
    if args.render_only:
        report = json.loads(args.out.read_text())
        render(report, args.page)
        return 1 if report.get("target_met") is False else 0
    start = time.time()
    # a chain (network, seed) already in --out with this budget and these tasks is kept,
    # so an interrupted run goes on where it stopped, and so does every other network's:
    # running some networks adds their rows to the page
    earlier = json.loads(args.out.read_text()) if args.out.exists() else {}
    same = all(earlier.get(k) == v for k, v in (("steps", args.steps), ("lr", args.lr),
                                               ("tasks", args.tasks)))
    runs = [r for r in earlier.get("runs", []) if same]
    done = {(r["model"], r["seed"]) for r in runs}
    # the command that makes the whole page: every network and seed on file or asked for
    models = [m for m in MODELS if m in args.models or any(r["model"] == m for r in runs)]
    seeds = sorted({*args.seeds, *(r["seed"] for r in runs)})
    command = "python benchmarks/bench_memory.py" + "".join(
        f" {flag} {' '.join(map(str, value))}" for flag, value, default in (
            ("--models", models, list(MODELS)),
            ("--tasks", args.tasks, [*map(str, DELAYS), "count"]),
            ("--seeds", seeds, [0, 1, 2]), ("--steps", [args.steps], [2000]),
            ("--lr", [args.lr], [3e-3])) if list(value) != default)
    # the slowest networks first, so that the pool ends together
    order = sorted(args.models, key=lambda m: (not m.startswith("ltc"), "mixed" not in m))
    jobs = [(m, s, args.tasks, args.steps, args.lr) for m in order for s in args.seeds
            if (m, s) not in done]
    print(f"{len(jobs)} network-seed chain(s) to run", file=sys.stderr)

    # where each sitting ran: the page names every machine that made its rows
    sittings = earlier.get("sittings") or ([{
        "machine": earlier["machine"], "date": earlier["date"],
        "models": sorted({r["model"] for r in runs})}] if runs else [])
    if jobs:
        sittings = [*sittings, {"machine": machine(), "date": time.strftime("%Y-%m-%d"),
                                "models": sorted({m for m, *_ in jobs})}]

    def report() -> dict:
        return {"command": command, "machine": machine(), "torch": torch.__version__,
                "date": time.strftime("%Y-%m-%d"), "jobs": args.jobs, "sittings": sittings,
                "minutes": earlier.get("minutes", 0.0) * bool(done)
                + (time.time() - start) / 60,
                "steps": args.steps, "lr": args.lr, "tasks": args.tasks, "runs": runs}

    with get_context("spawn").Pool(args.jobs) as pool:
        for chain in pool.imap_unordered(run_chain, jobs):
            runs.extend(chain)
            write_report(args.out, report())  # each finished chain is kept at once
    report = write_report(args.out, report())
    render(report, args.page)
    return 1 if report.get("target_met") is False else 0


if __name__ == "__main__":
    sys.exit(main())
