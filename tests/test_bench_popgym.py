"""benchmarks/bench_popgym.py: the MMER's window, the run files kept between sittings and
the page rendered from them, and the SB3 agents' wrappers. The end-to-end tests skip
without popgym (and sb3-contrib where RecurrentPPO runs)."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import pytest


@pytest.fixture
def bench_popgym(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    import bench_popgym

    return bench_popgym


def test_mmer_takes_rllibs_window_at_every_point(bench_popgym, capsys):
    model = SimpleNamespace(ep_info_buffer=deque(maxlen=100), num_timesteps=0)
    episodes = bench_popgym.TrainingEpisodes(model, log_every=10, steps=45)

    def step(to, *returns):
        model.ep_info_buffer.extend({"r": r, "l": 1} for r in returns)
        model.num_timesteps = to
        return episodes.on_step({})

    step(5)
    step(10)          # no episode yet: no mean
    step(15, 0.5)
    step(20, -0.5)    # two since the last point, fewer than 100: the last 100 (both)
    step(30, 1.0)     # one since: the mean of the last 100 = (0.5 - 0.5 + 1) / 3
    for to in range(31, 39):  # 152 since (the buffer keeps 100): those alone
        step(to, *[0.2] * 19)
    assert step(40, 0.8)
    assert episodes.on_step({})  # each entry is read once
    assert not step(48)          # the budget reached: stop
    episodes.finish()            # the last point at the budget: the last 100
    assert episodes.curve == [[10, None, 0], [20, 0.0, 2], [30, pytest.approx(1 / 3), 1],
                              [40, pytest.approx((0.2 * 152 + 0.8) / 153), 153],
                              [45, pytest.approx((0.2 * 99 + 0.8) / 100), 0]]
    assert episodes.episodes == 156
    assert bench_popgym.mmer(episodes.curve) == pytest.approx(1 / 3)
    assert bench_popgym.normalised(-1.0) == 0.0 and bench_popgym.normalised(None) is None
    assert bench_popgym.mmer([[10, None]]) is None


def test_every_task_is_an_easy_popgym_id(bench_popgym):
    assert len(bench_popgym.TASKS) == 10
    assert bench_popgym.TASKS["RepeatPrevious"].env_id == "popgym:popgym-RepeatPreviousEasy-v0"
    assert {t.steps for t in bench_popgym.TASKS.values()} == {200_000}
    assert bench_popgym.settings("liquid_ppo", {"n_steps": 64}) == {
        "n_envs": 8, "normalize_observations": True, "n_steps": 64}
    assert bench_popgym.settings("neuroflow", None, {"batch_size": 64}) == {"batch_size": 64}


def test_the_gru_row_is_liquidppos_settings_with_the_gru_cell(bench_popgym):
    """The GRU baseline row changes the cell alone: LiquidPPO's suite settings and
    ``--liquid-settings`` with ``cell="gru"``, less the options a GRU refuses."""
    base = bench_popgym.settings("liquid_ppo")
    assert bench_popgym.settings("liquid_ppo_gru") == {**base, "cell": "gru"}
    liquid = {"n_steps": 64, "actor_dense_recurrence": True, "actor_mixed_memory": False}
    assert bench_popgym.settings("liquid_ppo_gru", liquid) == {
        **base, "n_steps": 64, "actor_mixed_memory": False, "cell": "gru"}
    # one class, one defaults line for both LiquidPPO rows
    today = bench_popgym.defaults("liquid_ppo")
    assert bench_popgym.defaults("liquid_ppo_gru") == today
    lines = bench_popgym.defaults_lines({"liquid_ppo": today, "liquid_ppo_gru": today,
                                         "neuroflow": bench_popgym.defaults("neuroflow")})
    assert [line.split(":")[0] for line in lines if line.startswith("- ")] == [
        "- LiquidPPO", "- NeuroFlow"]


def test_sb3_agents_get_the_flattened_observations_they_need(bench_popgym):
    pytest.importorskip("popgym")
    sb3_contrib = pytest.importorskip("sb3_contrib")
    import gymnasium as gym

    flat = ["gymnasium.wrappers.FlattenObservation"]
    for task, wrappers in (("CountRecall", flat), ("Autoencode", flat), ("RepeatFirst", []),
                           ("Battleship", [])):
        env_id = bench_popgym.TASKS[task].env_id
        assert bench_popgym.sb3_wrappers(gym.make(env_id).observation_space) == wrappers
        env = bench_popgym.make_sb3_env(env_id)
        assert isinstance(env.observation_space, gym.spaces.Box) == bool(wrappers)
    # RecurrentPPO builds on MultiDiscrete (CountRecall) and Tuple (Autoencode) tasks
    for task in ("CountRecall", "Autoencode"):
        model, make_eval, wrappers = bench_popgym.build(
            "recurrent_ppo", bench_popgym.TASKS[task].env_id, 0, {"n_envs": 2, "n_steps": 8,
                                                                   "batch_size": 16})
        assert isinstance(model, sb3_contrib.RecurrentPPO) and wrappers == flat
        make_eval().close()


def test_runs_are_kept_skipped_and_rendered(bench_popgym, tmp_path, capsys):
    pytest.importorskip("popgym")
    out = tmp_path / "popgym"
    common = ["--steps", "256", "--log-every", "128", "--seeds", "0", "--jobs", "1",
              "--out", str(out)]
    argv = ["--tasks", "PositionOnlyCartPole", "Autoencode", "--algos", "ppo", *common]
    assert bench_popgym.main(argv) == 0
    runs = sorted(p.name for p in (out / bench_popgym.RUNS).iterdir())
    assert runs == ["Autoencode-ppo-0.json", "PositionOnlyCartPole-ppo-0.json"]
    run = json.loads((out / bench_popgym.RUNS / "Autoencode-ppo-0.json").read_text())
    assert run["sb3_wrappers"] == ["gymnasium.wrappers.FlattenObservation"]
    # 8 copies: PPO stops at the budget within its first rollout (1,024 steps)
    assert [s for s, _ in run["curve"]] == [128, 256] and run["trained_steps"] == 256
    assert run["mmer"] is None  # Autoencode's episodes are longer than 32 steps
    run = json.loads((out / bench_popgym.RUNS / "PositionOnlyCartPole-ppo-0.json").read_text())
    assert run["normalised_mmer"] == pytest.approx(0.5 * run["mmer"] + 0.5)
    assert run["parameters"] > 0 and run["steps_per_second"] > 0
    page = (out / "popgym.md").read_text()
    assert "2 of 2 runs on file" in page and "| Autoencode | SB3 PPO" in page
    assert "The SB3 agents see the observations of Autoencode through" in page
    assert (out / "popgym.png").stat().st_size > 0
    # a second sitting skips the runs on file; the page names the cells not run
    before = {p: p.stat().st_mtime_ns for p in (out / bench_popgym.RUNS).iterdir()}
    capsys.readouterr()
    argv = ["--tasks", "PositionOnlyCartPole", "Autoencode", "--algos", "ppo", "neuroflow",
            *common, "--render-only"]
    assert bench_popgym.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / bench_popgym.RUNS).iterdir()} == before
    page = (out / "popgym.md").read_text()
    assert "| Autoencode | NeuroFlow | not run |" in page and "2 of 4 runs on file" in page
    report = json.loads((out / "popgym.json").read_text())
    assert report["summary"]["suite"]["neuroflow"]["tasks"] == []
    assert report["summary"]["suite"]["ppo"]["tasks"] == ["PositionOnlyCartPole"]  # an MMER
    assert "| Autoencode | SB3 PPO (MlpPolicy, no memory) | 0 | no episode ended |" in page
    assert "\n".join(bench_popgym.page(report)) == page
    # run files of another budget are not mixed in: an error to train, left out to render
    with pytest.raises(SystemExit) as exit_:
        bench_popgym.main(["--tasks", "Autoencode", "--algos", "ppo", "--steps", "512",
                           "--seeds", "0", "--out", str(out)])
    assert exit_.value.code == 2 and "--force" in capsys.readouterr().err
    assert bench_popgym.main(["--tasks", "Autoencode", "--algos", "ppo", "--steps", "512",
                              "--seeds", "0", "--out", str(out), "--render-only"]) == 0
    assert "Autoencode-ppo-0 (steps 256 instead of 512)" in (out / "popgym.md").read_text()


def test_our_agents_run_by_id(bench_popgym, tmp_path):
    pytest.importorskip("popgym")
    out = tmp_path / "ours"
    argv = ["--tasks", "PositionOnlyCartPole", "--algos", "liquid_ppo", "liquid_ppo_gru",
            "neuroflow",
            "--steps", "128", "--log-every", "64", "--seeds", "0", "--jobs", "1",
            "--liquid-settings", '{"n_envs": 2, "n_steps": 32, "batch_size": 32}',
            "--neuroflow-settings", '{"learning_starts": 32, "batch_size": 16}',
            "--out", str(out)]
    assert bench_popgym.main(argv) == 0
    report = json.loads((out / "popgym.json").read_text())
    assert {r["algo"] for r in report["runs"]} == {"liquid_ppo", "liquid_ppo_gru", "neuroflow"}
    for r in report["runs"]:
        assert r["sb3_wrappers"] == [] and r["parameters"] > 0
        assert r["settings"] == bench_popgym.settings(
            r["algo"], {"n_envs": 2, "n_steps": 32, "batch_size": 32},
            {"learning_starts": 32, "batch_size": 16})
    gru = next(r for r in report["runs"] if r["algo"] == "liquid_ppo_gru")
    assert gru["settings"]["cell"] == "gru"
    page = (out / "popgym.md").read_text()
    assert '| PositionOnlyCartPole | LiquidPPO with cell="gru" (a baseline) | 0 |' in page
    assert "--neuroflow-settings" in report["command"]


def test_a_run_on_other_agent_defaults_is_stale(bench_popgym):
    """A run file keeps the settings given over the agent's defaults and the defaults
    themselves: when a default changes, the run no longer holds "the agent on its
    defaults" and is run again (or left off the page)."""
    import inspect

    from agents import LiquidPPO

    args = SimpleNamespace(steps=1000, log_every=100, liquid_settings={},
                           neuroflow_settings={})
    today = bench_popgym.defaults("liquid_ppo")
    signature = inspect.signature(LiquidPPO.__init__).parameters
    assert today["actor_dense_recurrence"] == signature["actor_dense_recurrence"].default
    assert today["actor_head"] == list(signature["actor_head"].default)  # as JSON holds it
    assert "seed" not in today and "env" not in today
    run = {"algo": "liquid_ppo", "steps": 1000, "log_every": 100,
           "settings": bench_popgym.settings("liquid_ppo"), "defaults": today}
    assert bench_popgym.stale(run, args) is None
    older = {**today, "actor_neurons": 7}
    assert bench_popgym.stale({**run, "defaults": older}, args) == \
        f"agent defaults actor_neurons 7 -> {today['actor_neurons']!r}"
    assert bench_popgym.stale({k: v for k, v in run.items() if k != "defaults"}, args) == \
        "no agent defaults recorded"
    # an option added since the run (at a default that keeps the old behaviour) leaves
    # it current; one the agent no longer has does not
    before_option = {k: v for k, v in today.items() if k != "actor_cfc_mode"}
    assert bench_popgym.stale({**run, "defaults": before_option}, args) is None
    assert bench_popgym.stale({**run, "defaults": {**today, "actor_gone": 1}}, args) == \
        "agent defaults actor_gone 1 -> '(none)'"
    # the page names the defaults that shape memory, lists and all, and what None means
    line = bench_popgym.defaults_lines({"liquid_ppo": today})[2]
    assert line.startswith("- LiquidPPO: `cell='cfc'`") and "`actor_head=[]`" in line
    assert ("`actor_dense_recurrence=None` (on for the liquid cells" in line) == (
        today["actor_dense_recurrence"] is None)
    # the SB3 agents' runs record none and need none
    sb3 = {"algo": "ppo", "steps": 1000, "log_every": 100,
           "settings": bench_popgym.settings("ppo")}
    assert bench_popgym.stale(sb3, args) is None and bench_popgym.defaults("ppo") is None


@pytest.mark.parametrize("argv, fragment", [
    (["--tasks", "Concentration"], "invalid choice: 'Concentration'"),
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--algos", "ppo", "--liquid-settings", '{"n_steps": 16}'],
     "--liquid-settings needs liquid_ppo or liquid_ppo_gru among --algos"),
    (["--neuroflow-settings", '{"n_stepz": 3}'],
     "--neuroflow-settings: 'n_stepz' not NeuroFlow keyword argument(s)"),
    (["--neuroflow-settings", "[3]"], "--neuroflow-settings must be a JSON object"),
])
def test_mistakes_exit_2(bench_popgym, capsys, argv, fragment):
    with pytest.raises(SystemExit) as exit_:
        bench_popgym.main(argv)
    assert exit_.value.code == 2
    assert fragment in capsys.readouterr().err


def test_an_agent_not_run_yet_does_not_empty_the_common_column(bench_popgym):
    """The column over the tasks every agent ran leaves out an agent with no runs (a new
    row before its runs) and, once some agent has run the whole suite, an agent part way
    through it: the others keep their common tasks."""
    def run(task, algo, value):
        return {"task": task, "algo": algo, "seed": 0, "mmer": value, "final_eval": value,
                "steps_per_second": 100.0, "parameters": 10, "sb3_wrappers": [],
                "curve": [[10, value]]}

    algos = ["liquid_ppo", "liquid_ppo_gru", "ppo"]
    # no agent has run the whole suite: the tasks every agent with runs ran
    runs = [run("A", "liquid_ppo", 0.5), run("A", "ppo", 0.0)]
    summary = bench_popgym.summarize(runs, ["A", "B"], algos)
    assert summary["common_tasks"] == ["A"]
    assert summary["suite"]["liquid_ppo"]["normalised_mmer_common"] == pytest.approx(0.75)
    assert summary["suite"]["liquid_ppo_gru"]["normalised_mmer_common"] is None
    # LiquidPPO has run the whole suite, PPO and the GRU row part of it: the column stays
    # over every task, and theirs is empty
    runs += [run("B", "liquid_ppo", -0.5), run("A", "liquid_ppo_gru", 0.9)]
    summary = bench_popgym.summarize(runs, ["A", "B"], algos)
    suite = summary["suite"]
    assert summary["common_tasks"] == ["A", "B"]
    assert suite["liquid_ppo"]["normalised_mmer_common"] == pytest.approx(0.5)  # 0.75, 0.25
    assert suite["ppo"]["normalised_mmer_common"] is None
    assert suite["liquid_ppo_gru"]["normalised_mmer"] == pytest.approx(0.95)
    assert suite["liquid_ppo_gru"]["normalised_mmer_common"] is None
    assert suite["liquid_ppo_gru"]["tasks"] == ["A"]


def test_one_seed_shows_no_spread(bench_popgym):
    assert bench_popgym.mean_std([0.25]) == "0.250"
    # population std, as numpy's default: values 0 and 1 -> mean 0.5, std 0.5
    assert bench_popgym.mean_std([0.0, 1.0]) == "0.500 ± 0.500"


def test_the_rl_overview_quotes_the_popgym_page(bench_popgym):
    """The POPGym numbers of docs/benchmarks/rl/index.md are those of popgym.json."""
    import re

    docs = Path(__file__).parents[1] / "docs" / "benchmarks" / "rl"
    report = json.loads((docs / "popgym.json").read_text())
    suite, cells = report["summary"]["suite"], report["summary"]["cells"]
    section = (docs / "index.md").read_text().split("## POPGym")[1].split("\n## ")[0]
    names = {"liquid_ppo": "| LiquidPPO (", "ppo": "| SB3 PPO (",
             "recurrent_ppo": "| sb3-contrib RecurrentPPO (", "neuroflow": "| NeuroFlow ("}
    rows = {a: next(line for line in section.splitlines() if line.startswith(start))
            for a, start in names.items()}
    for algo, row in rows.items():
        *_, over_its, over_common, speed, _ = [c.strip() for c in row.split("|")]
        assert over_its == f"{suite[algo]['normalised_mmer']:.3f}", row
        assert over_common == f"{suite[algo]['normalised_mmer_common']:.3f}", row
        assert speed == f"{suite[algo]['steps_per_second']:,.0f}", row
    assert f"over the {len(report['summary']['common_tasks'])} tasks every agent ran" in section
    floor, recurrent = section.replace("\n", " ").split("RecurrentPPO (a 256-wide")
    # "<Task> (<LiquidPPO> against <PPO>)", normalised MMER
    pairs = re.findall(r"(\w+) \((\d\.\d{3}) against (\d\.\d{3})\)", floor)
    assert len(pairs) >= 2
    for task, ours, theirs in pairs:
        assert ours == f"{cells[task]['liquid_ppo']['normalised_mmer_mean']:.3f}", task
        assert theirs == f"{cells[task]['ppo']['normalised_mmer_mean']:.3f}", task
    # "ahead of it on <Task> (<LiquidPPO> against <RecurrentPPO>), ...; behind it on ...;
    # level ...": each task in the list its numbers put it in
    ahead, behind = recurrent.split("ahead of it on")[1].split("behind it on")
    for text, better in ((ahead, True), (behind.split("level")[0], False)):
        pairs = re.findall(r"(\w+) \((\d\.\d{3}) against (\d\.\d{3})\)", text)
        assert pairs, text
        for task, ours, theirs in pairs:
            assert ours == f"{cells[task]['liquid_ppo']['normalised_mmer_mean']:.3f}", task
            assert theirs == f"{cells[task]['recurrent_ppo']['normalised_mmer_mean']:.3f}", task
            assert (float(ours) > float(theirs)) == better, task


def test_liquidppos_page_quotes_the_runs_of_its_defaults(bench_popgym):
    """The POPGym table of docs/agents/ppo.md's defaults section: LiquidPPO's columns are
    the mean normalised MMER of its run files on today's defaults (seeds 0-2, the choice;
    3-5, the confirmation), RecurrentPPO's that of the POPGym page."""
    import statistics

    root = Path(__file__).parents[1]
    runs = [json.loads(p.read_text())
            for p in (root / "docs/benchmarks/rl" / bench_popgym.RUNS).glob("*.json")]
    today = bench_popgym.defaults("liquid_ppo")
    ours = [r for r in runs if r["algo"] == "liquid_ppo"
            and bench_popgym.changed_defaults(r.get("defaults"), today) is None
            and r["settings"] == bench_popgym.settings("liquid_ppo")]
    cells = json.loads((root / "docs/benchmarks/rl/popgym.json").read_text())["summary"]["cells"]
    page = (root / "docs/agents/ppo.md").read_text()
    section = page.split("## Defaults on a task without tuned settings")[1].split("\n## ")[0]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in section.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip() in bench_popgym.TASKS]
    assert len(rows) == len(bench_popgym.TASKS)

    def mean(task: str, seeds: tuple[int, ...]) -> str:
        values = [r["normalised_mmer"] for r in ours if r["task"] == task and r["seed"] in seeds]
        return f"{statistics.fmean(values):.3f}" if values else "-"

    for task, _before, chosen, confirmed, recurrent in rows:
        assert chosen == mean(task, (0, 1, 2)), task
        assert confirmed.split(" (")[0] == mean(task, (3, 4, 5)), task
        assert recurrent == f"{cells[task]['recurrent_ppo']['normalised_mmer_mean']:.3f}", task


def test_a_curve_still_rising_at_the_budget_is_named(bench_popgym):
    def run(*values):
        return {"curve": [[10 * (i + 1), v] for i, v in enumerate(values)]}

    rising = bench_popgym.still_rising
    # 8 points, quarters of 2: the last (-0.1, 0.0) mean -0.05 against (-0.2, -0.2): +0.15
    assert rising([run(-0.5, -0.5, -0.4, -0.3, -0.2, -0.2, -0.1, 0.0)])
    # a rise of 0.04 is under RISING (0.05)
    assert not rising([run(0, 0, 0, 0, 0.0, 0.0, 0.04, 0.04)])
    # the seeds' mean: one rising by 0.2, one falling by 0.2, flat on the whole
    assert not rising([run(0, 0, 0, 0, 0, 0, 0.2, 0.2), run(0, 0, 0, 0, 0, 0, -0.2, -0.2)])
    # near the ceiling of 1 a curve has little left to gain
    assert not rising([run(0, 0, 0, 0, 0.6, 0.6, 0.95, 0.95)])
    # a point with no episode ended is left out: the quarter before is (-0.4), not (-0.4, 0)
    assert rising([run(0, 0, 0, 0, -0.4, None, -0.3, -0.3)])
    assert not rising([run(0, 0, 0.5)])  # under 4 points there are no quarters

    cell = {"still_rising": True}
    summary = {"cells": {"A": {"ppo": cell, "liquid_ppo": None},
                         "B": {"ppo": {"still_rising": False}, "liquid_ppo": None}}}
    line = bench_popgym.rising_lines(summary, ["A", "B"], ["ppo", "liquid_ppo"], 1000)[0]
    assert line.startswith("Still rising at 1,000 steps") and "A: SB3 PPO" in line
    assert "B:" not in line
    summary["cells"]["A"]["ppo"] = {"still_rising": False}
    assert bench_popgym.rising_lines(summary, ["A", "B"], ["ppo", "liquid_ppo"], 1000)[0] \
        .startswith("No training curve is still rising")
