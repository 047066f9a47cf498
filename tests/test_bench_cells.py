"""benchmarks/bench_cells.py: each cell builds the network it names, the settings per task
are bench_ppo's and bench_popgym's plus the cell (the liquid-only options left out where
LiquidPPO refuses them), the run files kept and skipped between sittings, and the page
rendered from hand-made run files. The end-to-end test skips without popgym."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    import bench_cells

    return bench_cells


def networks(model) -> list:
    """The recurrent cores of a LiquidPPO: the actor's and the critic's."""
    return [model.actor.net, model.value.net]


@pytest.mark.parametrize("task", ["CartPoleNoVel", "PendulumNoVel"])
def test_each_cell_builds_the_network_it_names(bench, task):
    import bench_ppo
    from torch import nn

    from velora_ens.models import GatedNetwork, LiquidNCPNetwork
    from velora_ens.models.lnn.cell import NCPLiquidCell
    from velora_ens.models.lnn.ltc import LTCCell

    kinds = {"cfc": NCPLiquidCell, "ltc": LTCCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell}
    for cell, kind in kinds.items():
        config, _ = bench.settings(task, cell)
        model, make_eval = bench_ppo.build("liquid_ppo", bench.task_of(task), 0, config)
        for net in networks(model):
            if cell in ("cfc", "ltc"):
                assert isinstance(net, LiquidNCPNetwork) and type(net.command) is kind
            else:
                assert isinstance(net, GatedNetwork) and type(net.cell) is kind
        make_eval().close()


def test_each_cell_builds_on_popgym(bench):
    pytest.importorskip("popgym")
    import bench_popgym

    types = set()
    for cell in bench.CELLS:
        config, _ = bench.settings("CountRecall", cell)
        model, make_eval, _ = bench_popgym.build("liquid_ppo", bench.task_of("CountRecall")
                                                 .env_id, 0, config)
        net = model.actor.net
        types.add((type(net).__name__, getattr(net, "cell_type", None)))
        assert net.cell_type == cell and model.value.net.cell_type == cell
        make_eval().close()
    assert len(types) == 4


def test_the_settings_are_the_scripts_own_plus_the_cell(bench):
    from agents.common.hyperparams import TUNED_PPO_HYPERPARAMS

    cartpole = TUNED_PPO_HYPERPARAMS["CartPoleNoVel-v1"]
    pendulum = TUNED_PPO_HYPERPARAMS["PendulumNoVel-v1"]
    assert pendulum["actor_dense_recurrence"] is True  # what the gated cells must leave out
    for cell in bench.CELLS:
        assert bench.settings("CartPoleNoVel", cell) == ({**cartpole, "cell": cell}, [])
        for task in bench.POPGYM:
            assert bench.settings(task, cell) == (
                {"n_envs": 8, "normalize_observations": True, "cell": cell}, [])
    for cell in ("cfc", "ltc"):
        assert bench.settings("PendulumNoVel", cell) == ({**pendulum, "cell": cell}, [])
    for cell in ("gru", "lstm"):
        config, dropped = bench.settings("PendulumNoVel", cell)
        assert dropped == ["actor_dense_recurrence"]
        assert config == {**{k: v for k, v in pendulum.items()
                             if k != "actor_dense_recurrence"}, "cell": cell}
    # --liquid-settings go over every task's settings, for every cell that takes them
    extra = {"n_steps": 64, "actor_self_synapse_init": 0.0, "actor_mixed_memory": True}
    config, dropped = bench.settings("RepeatPrevious", "cfc", extra)
    assert config == {"n_envs": 8, "normalize_observations": True, **extra, "cell": "cfc"}
    assert dropped == []
    assert bench.settings("RepeatPrevious", "ltc", extra)[1] == ["actor_self_synapse_init"]
    config, dropped = bench.settings("RepeatPrevious", "gru", extra)
    assert dropped == ["actor_mixed_memory", "actor_self_synapse_init"]
    assert config == {"n_envs": 8, "normalize_observations": True, "n_steps": 64,
                      "cell": "gru"}
    assert {bench.budget(t, None) for t in bench.NOVEL} == {100_000}
    assert {bench.budget(t, None) for t in bench.POPGYM} == {200_000}
    assert {bench.budget(t, 2000) for t in bench.TASK_NAMES} == {2000}
    assert bench.task_of("Autoencode").env_id == "popgym:popgym-AutoencodeEasy-v0"
    assert bench.task_of("PendulumNoVel").env_id == "PendulumNoVel-v1"


def test_liquidppo_refuses_what_the_script_leaves_out(bench):
    """Dropping is needed: with the dropped options LiquidPPO fails; without them it builds."""
    from tasks import LIQUID_ONLY

    from agents import LiquidPPO

    small = {"n_steps": 8, "batch_size": 8, "actor_neurons": 8, "critic_neurons": 8}
    for cell, options in LIQUID_ONLY.items():
        for name in options:
            value = 0.5 if name == "actor_self_synapse_init" else True
            with pytest.raises(ValueError):
                LiquidPPO("CartPoleNoVel-v1", cell=cell, seed=0, **small, **{name: value})
    LiquidPPO("CartPoleNoVel-v1", cell="cfc", seed=0, **small, actor_self_synapse_init=0.5,
              actor_dense_recurrence=True, actor_mixed_memory=True)


def fake_run(bench, task: str, cell: str, seed: int, final: float, mmer: float | None,
             steps_per_second: float, parameters: int, steps: int | None = None,
             liquid: dict | None = None) -> dict:
    config, dropped = bench.settings(task, cell, liquid)
    curve = [[5, final / 2], [10, final]]
    return {"task": task, "env_id": bench.task_of(task).env_id, "cell": cell, "seed": seed,
            "steps": steps or bench.budget(task, None), "interval": bench.interval(task),
            "settings": config, "defaults": bench.bench_popgym.defaults("liquid_ppo"),
            "dropped": dropped, "curve": curve,
            "curve_kind": "evaluation" if task in bench.NOVEL else "training",
            "mmer": mmer, "normalised_mmer": None if mmer is None else 0.5 * mmer + 0.5,
            "final_eval": final, "eval_episodes": 20, "trained_steps": 10,
            "train_seconds": 60.0, "steps_per_second": steps_per_second,
            "parameters": parameters, "machine": "test box", "torch": "2.x", "jobs": 2,
            "date": "2026-01-02"}


def write_runs(bench, out: Path, runs: list[dict]) -> None:
    for run in runs:
        path = bench.run_path(out, run["task"], run["cell"], run["seed"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(run))


def row(page: str, label: str, heading: str) -> list[str]:
    """The entries of ``label``'s row in the table under ``heading``."""
    section = page.split(heading)[1].split("\n### ")[0]
    line = next(line for line in section.splitlines() if line.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def test_the_page_puts_each_number_in_its_cell(bench, tmp_path):
    out = tmp_path / "rl"
    finals = {"cfc": [480.0, 500.0, 430.0], "gru": [120.0, 300.0, 200.0]}
    recall = {"cfc": [0.2, -0.1, 0.4], "gru": [-0.5, -0.3, -0.4]}
    sizes = {"cfc": 1003, "gru": 1500}
    runs = [fake_run(bench, "CartPoleNoVel", c, s, finals[c][s], None, 900.0 + s, sizes[c])
            for c in finals for s in range(3)]
    runs += [fake_run(bench, "CountRecall", c, s, recall[c][s] / 2, recall[c][s],
                      {"cfc": 400.0, "gru": 100.0}[c] + 10 * s, 2 * sizes[c])
             for c in recall for s in range(3)]
    runs.append(fake_run(bench, "CountRecall", "ltc", 1, 0.25, 0.5, 50.0, 3000))  # one seed
    runs.append(fake_run(bench, "CountRecall", "lstm", 0, 0.1, 0.2, 60.0, 4000, steps=999))
    write_runs(bench, out, runs)
    args = bench.parse(["--tasks", "CartPoleNoVel", "CountRecall", "--out", str(out),
                        "--render-only"])
    report = bench.render(args)
    page = (out / "cells.md").read_text()

    def spread(values, digits):  # independent of the script: statistics' population std
        return f"{statistics.fmean(values):.{digits}f} ± {statistics.pstdev(values):.{digits}f}"

    final = "### Final deterministic return"
    assert row(page, "CfC", final) == [spread(finals["cfc"], 1),
                                       spread([v / 2 for v in recall["cfc"]], 3)]
    assert row(page, "GRU", final) == [spread(finals["gru"], 1),
                                       spread([v / 2 for v in recall["gru"]], 3)]
    assert row(page, "LTC", final) == ["not run", "0.250 (seed 1)"]
    assert row(page, "LSTM", final) == ["not run", "not run"]  # its run file is another budget
    norm = "### Normalised MMER"
    assert row(page, "CfC", norm) == [spread([0.5 * v + 0.5 for v in recall["cfc"]], 3)]
    assert row(page, "GRU", norm) == [spread([0.5 * v + 0.5 for v in recall["gru"]], 3)]
    assert row(page, "LTC", norm) == ["0.750 (seed 1)"]
    speed = "### Training steps per second"
    assert row(page, "CfC", speed) == ["901", "410"]
    assert row(page, "GRU", speed) == ["901", "110"]
    params = "### Parameters"
    assert row(page, "CfC", params) == ["1,003", "2,006"]
    assert row(page, "GRU", params) == ["1,500", "3,000"]
    assert row(page, "LTC", params) == ["not run", "3,000"]
    assert "| cell | CartPoleNoVel | CountRecall |" in page
    assert "13 of 24 runs on file" in page
    assert "CountRecall-lstm-0 (steps 999 instead of 200000)" in page
    assert "test box (13 runs); torch 2.x; 2026-01-02." in page
    assert "\n".join(bench.page(report)) == page
    assert report["summary"]["CountRecall"]["gru"]["final_eval_mean"] == pytest.approx(-0.2)
    assert (out / "cells.png").stat().st_size > 0
    # without a POPGym task there is no MMER table
    args = bench.parse(["--tasks", "PendulumNoVel", "--out", str(out), "--render-only"])
    bench.render(args)
    page = (out / "cells.md").read_text()
    assert "Normalised MMER" not in page and "| GRU | not run |" in page
    assert "- GRU on PendulumNoVel: `actor_dense_recurrence`" in page


def test_runs_on_file_are_skipped_and_others_refused(bench, tmp_path, capsys):
    out = tmp_path / "rl"
    write_runs(bench, out, [fake_run(bench, "RepeatPrevious", "gru", 0, 0.1, 0.2, 1.0, 1,
                                     steps=2000)])
    argv = ["--tasks", "RepeatPrevious", "CartPoleNoVel", "--cells", "gru", "ltc",
            "--seeds", "0", "--out", str(out), "--steps", "2000"]
    args = bench.parse(argv)
    planned = [(t, c, s, steps) for t, c, s, steps, *_ in args.work]
    # the run on file is skipped; LTC's runs go first
    assert planned == [("CartPoleNoVel", "ltc", 0, 2000), ("RepeatPrevious", "ltc", 0, 2000),
                       ("CartPoleNoVel", "gru", 0, 2000)]
    job = args.work[-1]
    assert job[4] == bench.settings("CartPoleNoVel", "gru")[0]
    assert job[6] == str(bench.run_path(out, "CartPoleNoVel", "gru", 0))
    assert len(bench.parse([*argv, "--force"]).work) == 4
    # another budget or other settings: an error, unless --force
    for other in (["--steps", "4000"], ["--liquid-settings", '{"n_steps": 64}']):
        with pytest.raises(SystemExit) as exit_:
            bench.parse([*argv, *other])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "--force" in err and "RepeatPrevious-gru-0" in err
        assert len(bench.parse([*argv, *other, "--force"]).work) == 4
    run = json.loads(bench.run_path(out, "RepeatPrevious", "gru", 0).read_text())
    assert bench.stale(run, args) is None
    assert bench.stale({**run, "interval": 5}, args) == "interval 5 instead of 10000"
    assert bench.stale(run, bench.parse([*argv, "--render-only", "--steps", "10"])) == \
        "steps 2000 instead of 10"


@pytest.mark.parametrize("argv, fragment", [
    (["--tasks", "Concentration"], "invalid choice: 'Concentration'"),
    (["--cells", "rnn"], "invalid choice: 'rnn'"),
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--liquid-settings", '{"cell": "gru"}'], "'cell' is set by --cells"),
    (["--liquid-settings", '{"n_stepz": 3}'],
     "--liquid-settings: 'n_stepz' not LiquidPPO keyword argument(s)"),
    (["--liquid-settings", "[3]"], "--liquid-settings must be a JSON object"),
])
def test_mistakes_exit_2(bench, capsys, argv, fragment):
    with pytest.raises(SystemExit) as exit_:
        bench.parse([*argv, "--render-only"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("error:") == 1


def test_the_command_names_what_differs_from_the_defaults(bench, tmp_path):
    args = bench.parse(["--render-only"])
    assert bench.command_of(args) == "python benchmarks/bench_cells.py"
    args = bench.parse(["--cells", "gru", "cfc", "--steps", "2000", "--seeds", "0",
                        "--out", str(tmp_path), "--render-only"])
    assert bench.command_of(args) == (f"python benchmarks/bench_cells.py --cells cfc gru "
                                      f"--seeds 0 --steps 2000 --out {tmp_path}")


def test_a_tiny_run_end_to_end_then_skipped(bench, tmp_path):
    pytest.importorskip("popgym")
    out = tmp_path / "smoke"
    argv = ["--tasks", "RepeatPrevious", "--cells", "gru", "--seeds", "0", "--steps", "64",
            "--jobs", "1", "--out", str(out), "--liquid-settings",
            '{"n_envs": 2, "n_steps": 32, "batch_size": 32}']
    assert bench.main(argv) == 0
    path = bench.run_path(out, "RepeatPrevious", "gru", 0)
    run = json.loads(path.read_text())
    assert run["settings"]["cell"] == "gru" and run["trained_steps"] == 64
    assert run["curve"][-1][0] == 64 and run["parameters"] > 0
    page = (out / "cells.md").read_text()
    assert "1 of 1 runs on file" in page
    assert row(page, "GRU", "### Final deterministic return") == [f"{run['final_eval']:.3f}"]
    before = path.stat().st_mtime_ns
    assert bench.parse(argv).work == []
    assert bench.main(argv) == 0 and path.stat().st_mtime_ns == before
