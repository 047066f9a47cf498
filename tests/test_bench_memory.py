"""benchmarks/bench_memory.py: the probes' targets against an independent computation, the
networks it compares, the chain that stops after two unsolved delays, resuming from the
file, and the page's verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    import bench_memory

    return bench_memory


def test_delay_targets_are_the_symbol_k_steps_back(bench):
    x, y, first = bench.task_batch("4", 8, torch.Generator().manual_seed(0))
    assert first == 4 and x.shape == (8, bench.LENGTH, 4)
    symbols = x.argmax(-1)
    for b in range(8):
        for t in range(4, bench.LENGTH):
            assert y[b, t] == symbols[b, t - 4]


def test_the_longest_delay_still_has_k_scored_steps(bench):
    """K = 64 on sequences of 64 steps would score no step (its accuracy came out NaN)."""
    x, target, first = bench.task_batch("64", 3, torch.Generator().manual_seed(0))
    assert first == 64 and x.shape[1] == 128 and target.shape[1] == 128
    symbols = x.argmax(-1)
    assert torch.equal(target[:, 64:], symbols[:, :64])
    assert bench.task_batch("32", 3, torch.Generator().manual_seed(0))[0].shape[1] == 64


def test_count_targets_are_the_sign_of_ones_minus_zeros_so_far(bench):
    x, y, first = bench.task_batch("count", 4, torch.Generator().manual_seed(1))
    assert first == 0
    bits = x.argmax(-1).tolist()
    for b in range(4):
        ones = zeros = 0
        for t, bit in enumerate(bits[b]):
            ones, zeros = ones + bit, zeros + (1 - bit)
            assert int(y[b, t]) == (0 if ones < zeros else 1 if ones == zeros else 2)


def test_the_networks_have_the_widths_and_parameter_budgets_the_page_names(bench):
    width, budget = bench.liquid_width(4, 4)
    assert width == 12
    gru = bench.build("gru", "8", 0)
    assert gru.rnn.hidden_size == width
    for kind in ("gru-params", "lstm-params"):
        net = bench.build(kind, "8", 0)
        hidden = net.rnn.hidden_size
        assert bench.parameters(net) <= budget < bench.parameters(
            bench.GatedReadout(kind.split("-")[0], 4, hidden + 1, 4))
    mixed = bench.build("liquid-mixed", "8", 0)
    assert mixed.net.mixed_memory and bench.state_width("liquid-mixed", "8") == 2 * width
    assert bench.build("liquid-dense-self", "8", 0).net.get_config()["self_synapse_init"] == 0.5
    # liquid-agent: the network LiquidPPO's actor is on its defaults, for these shapes
    import gymnasium as gym

    from agents import LiquidPPO

    class Probe(gym.Env):
        observation_space, action_space = gym.spaces.Box(0, 1, (4,)), gym.spaces.Discrete(4)

    agent = bench.build("liquid-agent", "8", 3).net
    actor = LiquidPPO("MlpPolicy", Probe(), seed=3).actor.net
    assert agent.get_config() == actor.get_config()
    assert all(torch.equal(a, b) for a, b in zip(agent.state_dict().values(),
                                                   actor.state_dict().values(), strict=True))
    assert bench.build("gru-agent", "8", 0).rnn.hidden_size == agent.hidden_size
    counting = bench.build("liquid-agent", "count", 0).net
    assert (counting.in_features, counting.out_features) == (2, 3)
    # liquid-agent-mixed: the same actor with actor_mixed_memory=True
    mixed_agent = bench.build("liquid-agent-mixed", "8", 3).net
    mixed_actor = LiquidPPO("MlpPolicy", Probe(), seed=3, actor_mixed_memory=True).actor.net
    assert mixed_agent.mixed_memory and mixed_agent.get_config() == mixed_actor.get_config()
    assert bench.state_width("liquid-agent-mixed", "8") == 2 * agent.hidden_size


def test_a_chain_stops_after_two_unsolved_delays_and_still_counts(bench, monkeypatch):
    solved_up_to = 2

    def fake(task, model, seed, steps, lr):
        ok = task != "count" and int(task) <= solved_up_to
        return {"task": task, "model": model, "seed": seed, "accuracy": 1.0 if ok else 0.3}

    monkeypatch.setattr(bench, "run_one", fake)
    runs = bench.run_chain(("gru", 0, ["count", "8", "1", "2", "4", "16", "32"], 250, 1e-3))
    assert [r["task"] for r in runs] == ["1", "2", "4", "8", "count"]


def test_resume_keeps_finished_chains_and_the_page_gives_the_verdict(bench, monkeypatch,
                                                                       tmp_path):
    calls = []

    def chain(job):
        model, seed, tasks, steps, lr = job
        calls.append((model, seed))
        solved = {"liquid-agent": 2, "gru": 4}[model]
        return [{"task": t, "model": model, "seed": seed, "steps": steps,
                 "accuracy": 1.0 if int(t) <= solved else 0.5, "step_ms": 1.0,
                 "parameters": 10, "state_width": 12} for t in tasks]

    class Pool:  # in-process, so the fake chain runs here
        def __init__(self, jobs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def imap_unordered(self, fn, jobs):
            return map(fn, jobs)

    monkeypatch.setattr(bench, "run_chain", chain)
    monkeypatch.setattr(bench, "get_context", lambda kind: type("C", (), {"Pool": Pool}))
    out, page = tmp_path / "m.json", tmp_path / "m.md"
    argv = ["--models", "liquid-agent", "--tasks", "1", "2", "4", "--seeds", "0", "1",
            "--out", str(out), "--page", str(page)]
    assert bench.main(argv) == 0  # no GRU on the page: no verdict
    argv[1:2] = ["liquid-agent", "gru"]
    assert bench.main(argv) == 1  # the GRU solves K=4, the liquid network K=2
    assert calls == [("liquid-agent", 0), ("liquid-agent", 1), ("gru", 0), ("gru", 1)]
    text = page.read_text()
    assert "| liquid-agent | 12 | 10 | 2 | **1.00** | **1.00** | 0.50 |" in text
    assert "2 against 4, **missed**" in text
    assert len(json.loads(out.read_text())["runs"]) == 12
    # running one network more keeps every other network's rows
    calls.clear()
    bench.main(["--models", "gru", *argv[3:]])
    assert calls == []  # its chains are on file
    assert "| liquid-agent | 12 | 10 | 2 |" in page.read_text()
    assert len(json.loads(out.read_text())["runs"]) == 12
    # the page's command makes the whole page: every network on file, not the last asked
    assert json.loads(out.read_text())["command"] == (
        "python benchmarks/bench_memory.py --models liquid-agent gru --tasks 1 2 4 --seeds 0 1")


def test_a_network_short_of_seeds_is_judged_on_its_own_and_labelled(bench, tmp_path):
    def run(model, seed, task, acc):
        return {"task": task, "model": model, "seed": seed, "accuracy": acc, "steps": 250,
                "step_ms": 1.0, "parameters": 10, "state_width": 12}

    runs = [run("liquid-agent", s, t, 1.0 if t == "1" else 0.5) for s in (0, 1)
            for t in ("1", "2")]
    runs += [run("gru", 0, t, 1.0) for t in ("1", "2")]
    report = {"command": "c", "machine": "m", "torch": "t", "date": "d", "jobs": 2,
              "minutes": 1.0, "steps": 250, "lr": 1e-3, "tasks": ["1", "2"], "runs": runs}
    bench.render(report, tmp_path / "m.md")
    text = (tmp_path / "m.md").read_text()
    assert "| gru (seeds 0 only) | 12 | 10 | 2 | **1.00** | **1.00** |" in text
    assert "| liquid-agent | 12 | 10 | 1 | **1.00** | 0.50 |" in text
    assert report["target_met"] is False
    # no verdict between networks of different state widths
    wider = [{**r, "state_width": 24} if r["model"] == "gru" else r for r in runs]
    report = {**report, "runs": wider}
    bench.render(report, tmp_path / "m.md")
    assert report["target_met"] is None
    assert "state width {12} is not the GRU's {24}; run `gru-agent`" in (
        tmp_path / "m.md").read_text()
    # a GRU of the agents' network's width settles it
    report = {**report, "runs": wider + [run("gru-agent", 0, t, 1.0) for t in ("1", "2")]}
    bench.render(report, tmp_path / "m.md")
    assert report["target_met"] is False
    assert "the same state width (`gru-agent`) solves: 1 against 2, **missed**" in (
        tmp_path / "m.md").read_text()


def test_the_liquid_networks_guide_quotes_the_memory_page(bench):
    """Each row of the guide's largest-K table against docs/benchmarks/memory.json."""
    import re

    root = Path(__file__).parents[1]
    report = json.loads((root / "docs/benchmarks/memory.json").read_text())
    runs = report["runs"]
    guide = (root / "docs/guide/liquid-networks.md").read_text()
    rows = re.findall(r"^\| `([a-z-]+)`: [^|]+\| (\d+) \| (\d+|none) \|$", guide, re.M)
    assert len(rows) >= 9
    for model, width, largest in rows:
        mine = [r for r in runs if r["model"] == model]
        seeds = {r["seed"] for r in mine}
        solved = [int(t) for t in {r["task"] for r in mine} - {"count"}
                  if sum(r["task"] == t for r in mine) == len(seeds)
                  and sum(r["accuracy"] for r in mine if r["task"] == t) / len(seeds)
                  >= bench.SOLVED]
        assert str(max(solved, default="none")) == largest, model
        assert {str(r["state_width"]) for r in mine if r["task"] != "count"} == {width}


def test_the_page_names_every_machine_that_made_its_rows(bench):
    one = {"machine": "M1", "date": "D1",
           "sittings": [{"machine": "M1", "date": "D1", "models": ["gru", "liquid"]}]}
    assert bench.machines(one) == "M1"
    assert bench.machines({"machine": "M0", "date": "D0"}) == "M0"  # a file from before
    two = {**one, "machine": "M2", "date": "D2",
           "sittings": [*one["sittings"], {"machine": "M2", "date": "D2",
                                           "models": ["liquid-carry"]}]}
    assert bench.machines(two) == "M1 (D1: gru, liquid); M2 (D2: liquid-carry)"
