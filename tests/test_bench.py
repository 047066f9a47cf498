"""velora_ens.bench: the heads as regression / image models, predictive quantiles, and
the three benchmarks end to end on tiny data (through the command line)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from velora_ens.bench.classifiers import ImageClassifier, SmallCNN
from velora_ens.bench.heads import (
    HEADS,
    BatchEnsembleRegressor,
    build_regressor,
    gaussian_nll_mixture,
)
from velora_ens.bench.scoring import confidence_taus, mixture_quantiles
from velora_ens.cli import main
from velora_ens.ensembles import Prediction
from velora_ens.metrics import kendall_tau


@pytest.mark.parametrize("head", HEADS)
def test_every_regression_head_follows_the_trainer_contract(head):
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    model = build_regressor(head, 3, 16, hidden=8, depth=1)
    loss = model(x, y)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with torch.no_grad():
        pred = model.predict(x)
    assert isinstance(pred, Prediction) and pred.mean.shape == (16, 1)
    assert bool((pred.total > 0).all())
    if head == "liquid":
        assert set(pred.confidences) == {"power_entropy", "delegation_entropy",
                                         "self_delegation", "disagreement"}


def test_mixture_nll_of_one_member_is_the_gaussian_nll():
    mean, var, y = torch.randn(1, 5, 1), torch.rand(1, 5, 1) + 0.1, torch.randn(5, 1)
    expected = 0.5 * (var[0].log() + (y - mean[0]).pow(2) / var[0]).mean()
    torch.testing.assert_close(gaussian_nll_mixture(mean, var, y), expected)
    # two members with weights (1, 0): only the first counts
    two_m = torch.cat([mean, mean + 3]), torch.cat([var, var * 2])
    w = torch.tensor([[1.0, 0.0]]).expand(5, 2)
    torch.testing.assert_close(gaussian_nll_mixture(*two_m, y, w), expected)


def test_batchensemble_regressor_loss_is_the_mean_member_nll():
    torch.manual_seed(0)
    model = BatchEnsembleRegressor(2, hidden=6, depth=1, num_members=3)
    x, y = torch.randn(7, 2), torch.randn(7, 1)
    mean, var = model.member_outputs(x)
    assert mean.shape == (3, 7, 1)
    per_member = [0.5 * (var[k].log() + (y - mean[k]).pow(2) / var[k]).mean() for k in range(3)]
    torch.testing.assert_close(model(x, y), torch.stack(per_member).mean())


def test_mixture_quantiles_worked_examples():
    g = torch.Generator().manual_seed(0)
    # one standard normal member: the 10% / 90% quantiles are -+1.2816
    pred = Prediction.from_gaussians(torch.zeros(1, 3, 1), torch.ones(1, 3, 1))
    q = mixture_quantiles(pred, (0.1, 0.9), num_samples=40000, generator=g)
    torch.testing.assert_close(q[:, :, 0], torch.tensor([[-1.2816] * 3, [1.2816] * 3]),
                               atol=0.04, rtol=0)
    # two point masses at -1 and +1, equal weight: the quantiles are the points
    means = torch.tensor([-1.0, 1.0]).view(2, 1, 1)
    pred = Prediction.from_gaussians(means, torch.zeros_like(means))
    q = mixture_quantiles(pred, (0.1, 0.9), num_samples=2000, generator=g)
    assert q.flatten().tolist() == [-1.0, 1.0]
    # weights 0.9 / 0.1 on 0 and 10: the median is 0, the 95% quantile 10
    means = torch.tensor([0.0, 10.0]).view(2, 1, 1)
    pred = Prediction.from_gaussians(means, torch.zeros_like(means),
                                     weights=torch.tensor([[0.9, 0.1]]))
    q = mixture_quantiles(pred, (0.5, 0.95), num_samples=4000, generator=g)
    assert q.flatten().tolist() == [0.0, 10.0]


def test_confidence_taus_use_minus_the_confidence():
    err = torch.tensor([0.1, 0.5, 0.2, 0.9])
    conf = {"c": torch.tensor([4.0, 1.0, 3.0, 0.5])}  # perfectly inverse to the error
    assert confidence_taus(err, conf) == {"c": pytest.approx(1.0)}
    assert confidence_taus(err, conf)["c"] == pytest.approx(kendall_tau(err, -conf["c"]))


@pytest.mark.parametrize("head", ["single", "deep", "batch", "liquid", "moe"])
def test_image_classifier_heads(head):
    torch.manual_seed(0)
    model = ImageClassifier(SmallCNN(4), head, members=3, num_train=8)
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (5,))
    loss = model(x, y)
    assert loss.dim() == 0 and torch.isfinite(loss)
    with torch.no_grad():
        pred = model.predict(x)
    torch.testing.assert_close(pred.probs.sum(-1), torch.ones(5))
    expected_members = {"single": 1, "deep": 3, "batch": 3, "liquid": 3, "moe": 16}[head]
    assert pred.members.shape == (expected_members, 5, 10)


# --- the benchmarks end to end ------------------------------------------------------------
def test_bench_synthetic_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "syn"
    args = ["bench", "synthetic", "--seeds", "2", "--steps", "20", "--n-train", "24",
            "--n-test", "40", "--no-plots", "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["command"] == "velora-ens " + " ".join(args)
    assert set(report["results"]) == set(HEADS)
    for runs in report["results"].values():
        assert [r["seed"] for r in runs] == [0, 1]
        for r in runs:
            assert 0.0 <= r["coverage80"] <= 1.0 and r["mse"] > 0
    page = (out / "index.md").read_text()
    moe = report["results"]["moe"]
    cov = sum(r["coverage80"] for r in moe) / 2
    # the page's target row shows the JSON's mean
    assert f"| MoE 80% band covers 75-85% of held-out points | {cov:.3f} |" in page
    assert "velora-ens bench synthetic" in page


def test_bench_synthetic_is_repeatable(tmp_path):
    res = []
    for k in range(2):
        main(["bench", "synthetic", "--heads", "deep,moe", "--seeds", "1", "--steps", "15",
              "--n-train", "16", "--n-test", "30", "--no-plots", "--out", str(tmp_path / str(k))])
        r = json.loads((tmp_path / str(k) / "results.json").read_text())["results"]
        res.append({h: (v[0]["coverage80"], v[0]["mse"]) for h, v in r.items()})
    assert res[0] == res[1]


def write_csv(folder, n=120):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 9))
    y = 5 + 2 * X[:, 0] + np.abs(X[:, 1]) * rng.normal(size=n)
    (folder / "protein").mkdir(parents=True)
    lines = ["RMSD,F1,F2,F3,F4,F5,F6,F7,F8,F9"] + [
        ",".join(f"{v:.5f}" for v in [y[i], *X[i]]) for i in range(n)]
    (folder / "protein" / "CASP.csv").write_text("\r\n".join(lines) + "\r\n")


def test_bench_protein_end_to_end(tmp_path):
    write_csv(tmp_path / "data")
    out = tmp_path / "out"
    assert main(["bench", "protein", "--data-root", str(tmp_path / "data"), "--splits", "2",
                 "--epochs", "2", "--batch-size", "32", "--hidden", "8", "--depth", "1",
                 "--heads", "single,deep,liquid", "--out", str(out), "--no-plots"]) == 0
    report = json.loads((out / "results.json").read_text())
    deep = report["results"]["deep"]
    assert [r["split"] for r in deep] == [0, 1]
    assert all(r["rmse"] > 0 and math.isfinite(r["nll"]) for r in deep)
    # 108 training rows, batch 32: 3 steps per epoch
    assert deep[0]["steps"] == 6
    liquid_taus = report["results"]["liquid"][0]["kendall_tau"]
    assert set(liquid_taus) == {"predictive_std", "power_entropy", "delegation_entropy",
                                "self_delegation", "disagreement"}
    page = (out / "index.md").read_text()
    mean_rmse = sum(r["rmse"] for r in deep) / 2
    assert f"| Deep Ensemble RMSE < 4.36 | {mean_rmse:.3f} |" in page


def test_bench_cifar10_on_tiny_images(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for c in range(10):
            folder = tmp_path / "data" / "cifar10" / split / f"class{c}"
            folder.mkdir(parents=True)
            for k in range(n):
                arr = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                Image.fromarray(arr).save(folder / f"{k}.png")
    out = tmp_path / "out"
    assert main(["bench", "cifar10", "--data-root", str(tmp_path / "data"), "--cache-dir",
                 str(tmp_path / "cache"), "--epochs", "1", "--batch-size", "8", "--width", "4",
                 "--train-size", "0", "--test-size", "0", "--members", "2",
                 "--timing-rounds", "2", "--timing-steps", "1", "--out", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    res = report["results"]
    assert report["settings"]["train_size"] == 40 and report["settings"]["test_size"] == 20
    assert res["single"]["train_cost_vs_single"] == 1.0
    assert res["deep"]["parameters"] == 2 * res["single"]["parameters"]
    assert res["single"]["parameters"] < res["batch"]["parameters"] < res["deep"]["parameters"]
    assert res["batch_passes"]["parameters"] == res["batch"]["parameters"]
    for head, r in res.items():  # the paper recipe: batch // members images a step
        assert 0.0 <= r["accuracy"] <= 1.0
        assert r["steps"] == (40 // 4 if head == "batch_paper" else 40 // 8)
        assert r["batch_size"] == (4 if head == "batch_paper" else 8)
        assert len(r["step_seconds"]) == 2 and r["step_seconds_median"] > 0
        ratios = [a / b for a, b in zip(r["step_seconds"], res["single"]["step_seconds"],
                                        strict=True)]
        assert r["step_cost_vs_single"] == pytest.approx(sum(ratios) / 2)
    assert res["batch_passes"]["members_per_pass"] == 1
    page = (out / "index.md").read_text()
    for name in ("BatchEnsemble, full batch tiled", "BatchEnsemble, full batch member by member",
                 "BatchEnsemble, paper recipe"):
        assert f"| {name} |" in page
    assert "| train cost | eval cost | step (ms) | step cost |" in page
    assert "2 rounds of 1 steps of every head in turn" in page
    paper = res["batch_paper"]["step_cost_vs_single"]
    assert (f"| BatchEnsemble, paper recipe: at most 1.6x | {paper:.2f}x | "
            f"{'yes' if paper <= 1.6 else 'no'} |") in page
    assert "| BatchEnsemble, full batch tiled: at most the Deep Ensemble's" in page
    assert res["single"]["step_cost_vs_single"] == 1.0
    assert main(["bench", "cifar10", "--data-root", str(tmp_path / "data"), "--cache-dir",
                 str(tmp_path / "cache"), "--epochs", "1", "--batch-size", "8", "--width", "4",
                 "--train-size", "0", "--test-size", "0", "--heads", "single,batch_paper",
                 "--members", "2", "--timing-rounds", "0", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())["results"]
    assert "step_cost_vs_single" not in res["batch_paper"]
    assert "| n/a | n/a |" in (out / "index.md").read_text()


def test_bench_cifar10_batch_heads_train_the_same_function():
    """batch_passes differs from batch only in how the members are run."""
    torch.manual_seed(0)
    tiled = ImageClassifier(SmallCNN(4), "batch", members=3)
    torch.manual_seed(0)
    passes = ImageClassifier(SmallCNN(4), "batch", members=3, members_per_pass=1)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (4,))
    torch.testing.assert_close(passes(x, y), tiled(x, y))
    with pytest.raises(ValueError, match="members_per_pass is an option of head='batch'"):
        ImageClassifier(SmallCNN(4), "deep", members=3, members_per_pass=1)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["bench", "protein", "--data-root", "/nonexistent/x"],
         "protein data not found; looked for /nonexistent/x/protein/CASP.csv"),
        (["bench", "synthetic", "--seeds", "0"], "--seeds must be >= 1, got 0"),
        (["bench", "synthetic", "--heads", "deep,forest"], "--heads must be a comma-separated"),
        (["bench", "cifar10", "--data-root", "/nonexistent/x"], "CIFAR-10 not found"),
        (["bench", "cifar10", "--heads", "batch_paper", "--batch-size", "3"],
         "--batch-size must be >= --members (4) for the batch_paper head"),
        (["bench", "cifar10", "--timing-rounds", "-1"], "--timing-rounds must be >= 0, got -1"),
        (["bench", "mnist"], "invalid choice: 'mnist'"),
    ],
)
def test_cli_bench_mistakes_exit_2_with_one_line(argv, fragment, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, err


def test_cli_bench_error_from_a_fresh_process():
    proc = subprocess.run([sys.executable, "-m", "velora_ens", "bench", "synthetic",
                           "--steps", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "velora-ens: error: --steps must be >= 1, got 0"


def test_liquid_expert_loss_adds_each_experts_own_nll():
    from velora_ens.bench.heads import LiquidRegressor

    torch.manual_seed(0)
    plain = LiquidRegressor(2, hidden=8, depth=1, num_experts=3)
    extra = LiquidRegressor(2, hidden=8, depth=1, num_experts=3, expert_loss=0.5)
    extra.load_state_dict(plain.state_dict())
    x, y = torch.randn(6, 2), torch.randn(6, 1)
    _, _, _, mean, var = plain._parts(x)  # (N, B, 1) each
    own = torch.stack([0.5 * (var[k].log() + (y - mean[k]).pow(2) / var[k]).mean()
                       for k in range(3)]).mean()
    torch.testing.assert_close(extra(x, y), plain(x, y) + 0.5 * own)


# --- benchmarks/bench_ppo.py: LiquidPPO against RecurrentPPO and frame-stacked PPO ---------
@pytest.fixture
def bench_ppo(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    import bench_ppo

    return bench_ppo


def ppo_run(algo, seed, curve, threshold=475.0, sps=100.0, params=10):
    from bench_ppo import steps_to_threshold

    return {"algo": algo, "seed": seed, "curve": curve, "steps_per_second": sps,
            "parameters": params, "steps_to_threshold": steps_to_threshold(curve, threshold)}


def test_bench_ppo_steps_to_threshold_and_targets(bench_ppo):
    assert bench_ppo.steps_to_threshold([(10, 400.0), (20, 475.0), (30, 500.0)], 475) == 20
    assert bench_ppo.steps_to_threshold([(10, 400.0)], 475) is None
    assert bench_ppo.steps_to_threshold([(10, -300.0), (20, -210.0)], -218) == 20
    ours = bench_ppo.summarize([ppo_run("liquid_ppo", 0, [(10, 480.0), (20, 500.0)]),
                                ppo_run("liquid_ppo", 1, [(10, 300.0), (20, 490.0)])])
    assert ours["finals"] == [500.0, 490.0] and ours["mean"] == 495.0 and ours["std"] == 5.0
    assert (ours["reached"], ours["seeds"], ours["mean_steps"]) == (2, 2, 15.0)
    theirs = bench_ppo.summarize([ppo_run("recurrent_ppo", 0, [(10, 100.0), (20, 476.0)]),
                                  ppo_run("recurrent_ppo", 1, [(10, 100.0), (20, 200.0)])])
    assert (theirs["reached"], theirs["mean_steps"]) == (1, 20.0)
    assert bench_ppo.reach_text(theirs) == "20 (1/2 seeds)"
    assert bench_ppo.faster(ours, theirs) and not bench_ppo.faster(theirs, ours)
    never = bench_ppo.summarize([ppo_run("ppo_stacked", 0, [(10, 9.0), (20, 20.0)])])
    assert bench_ppo.reach_text(never) == "never (0/1 seeds)"
    assert bench_ppo.faster(theirs, never) and not bench_ppo.faster(never, never)
    # fewer steps but in fewer seeds is not faster
    one = bench_ppo.summarize([ppo_run("liquid_ppo", 0, [(10, 480.0)]),
                               ppo_run("liquid_ppo", 1, [(10, 100.0)])])
    both = bench_ppo.summarize([ppo_run("recurrent_ppo", s, [(20, 480.0)]) for s in (0, 1)])
    assert not bench_ppo.faster(one, both)

    cartpole, pendulum = bench_ppo.TASKS["cartpole-novel"], bench_ppo.TASKS["pendulum-novel"]
    checks = bench_ppo.targets(cartpole, {"liquid_ppo": ours, "recurrent_ppo": theirs})
    assert [met for _, met in checks] == [True, True]
    assert "**met** (495.0)" in checks[0][0]
    assert "(15 (2/2 seeds) against 20 (1/2 seeds))" in checks[1][0]
    assert bench_ppo.targets(cartpole, {"recurrent_ppo": theirs}) == []
    low = bench_ppo.summarize([ppo_run("liquid_ppo", 0, [(10, -200.0)], threshold=-218.0)])
    checks = bench_ppo.targets(pendulum, {"liquid_ppo": low})
    assert [met for _, met in checks] == [True, False]
    assert checks[1][0].startswith("stretch, LiquidPPO final return >= -175: **not met**")

    lines = bench_ppo.table({"liquid_ppo": ours, "ppo_stacked": never}, 475.0)
    assert lines[2] == "| LiquidPPO | 495.0 ± 5.0 | 500.0, 490.0 | 15 (2/2 seeds) | 100 | 10 |"
    assert lines[3].startswith("| SB3 PPO (MlpPolicy, 4 stacked frames) | 20.0 ± 0.0 | 20.0 |")


def test_bench_ppo_settings_follow_rl_zoo(bench_ppo):
    task = bench_ppo.TASKS["cartpole-novel"]
    kwargs = bench_ppo.sb3_kwargs(bench_ppo.settings("recurrent_ppo", task))
    assert kwargs["learning_rate"](0.5) == pytest.approx(5e-4)
    assert kwargs["clip_range"](1.0) == pytest.approx(0.2)
    assert kwargs["policy_kwargs"]["activation_fn"] is torch.nn.ReLU
    assert "n_envs" not in kwargs and "normalize" not in kwargs
    stacked = bench_ppo.settings("ppo_stacked", bench_ppo.TASKS["pendulum-novel"])
    assert stacked["frame_stack"] == 4 and stacked["use_sde"] and "batch_size" not in stacked


def test_bench_ppo_throughput_runs_rl_zoos_updates(bench_ppo):
    # the throughput comparison must not inherit the tuned early stop or epoch count: both
    # agents run RL Zoo's rollouts and epochs, LiquidPPO with its tuned networks' sizes
    from agents.common.hyperparams import tuned_hyperparams

    zoo = bench_ppo.PPO_LSTM_YML["CartPoleNoVel-v1"]
    ours = bench_ppo.throughput_settings()
    for key in ("n_envs", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda",
                "ent_coef", "learning_rate", "clip_range"):
        assert ours[key] == zoo[key], key
    assert "target_kl" not in ours
    assert ours["normalize_observations"] and ours["normalize_rewards"]
    tuned = tuned_hyperparams("LiquidPPO", "CartPoleNoVel-v1")
    assert ours["actor_neurons"] == tuned["actor_neurons"]
    assert ours["critic_neurons"] == tuned["critic_neurons"]


def test_bench_ppo_baselines_end_to_end(bench_ppo, tmp_path):
    pytest.importorskip("sb3_contrib")
    out = tmp_path / "ppo"
    argv = ["cartpole-novel", "--steps", "256", "--eval-every", "128", "--seeds", "0",
            "--jobs", "1", "--algos", "recurrent_ppo", "ppo_stacked", "--out", str(out)]
    assert bench_ppo.main(argv) == 0
    report = json.loads((out / "ppo-cartpole-novel.json").read_text())
    assert report["command"] == "python benchmarks/bench_ppo.py " + " ".join(
        argv[:1] + ["--seeds", "0", "--jobs", "1", "--algos", "recurrent_ppo", "ppo_stacked",
                    "--steps", "256", "--eval-every", "128", "--out", str(out)])
    runs = {r["algo"]: r for r in report["results"]}
    assert set(runs) == {"recurrent_ppo", "ppo_stacked"}
    for r in runs.values():  # 8 envs: an evaluation at 128 steps, the final one at 256
        assert [step for step, _ in r["curve"]] == [128, 256] and r["steps"] == 256
        assert r["steps_per_second"] > 0 and r["parameters"] > 0
    page = (out / "ppo-cartpole-novel.md").read_text()
    stacked = runs["ppo_stacked"]
    assert (f"| SB3 PPO (MlpPolicy, 4 stacked frames) | {stacked['curve'][-1][1]:.1f} ± 0.0 |"
            in page)
    assert report["command"] in page and (out / "ppo-cartpole-novel.png").stat().st_size > 0


@pytest.mark.parametrize("argv, fragment", [
    (["mountaincar"], "invalid choice: 'mountaincar'"),
    (["cartpole-novel", "--steps", "0"], "--steps must be >= 1, got 0"),
    (["cartpole-novel", "--algos", "dqn"], "invalid choice: 'dqn'"),
    (["cartpole-novel"], "agents.LiquidPPO is not available"),
    (["throughput"], "agents.LiquidPPO is not available"),
])
def test_bench_ppo_mistakes_exit_2(bench_ppo, monkeypatch, capsys, argv, fragment):
    import agents

    monkeypatch.delattr(agents, "LiquidPPO", raising=False)
    with pytest.raises(SystemExit) as exit_:
        bench_ppo.main(argv)
    assert exit_.value.code == 2
    assert fragment in capsys.readouterr().err


def test_bench_ppo_liquid_settings_reach_the_model(bench_ppo, tmp_path):
    # The run (in a worker process) must build LiquidPPO with the overrides: its parameter
    # count is that of a LiquidPPO built here with them, not that of the tuned sizes.
    from agents import LiquidPPO
    from agents.common.hyperparams import TUNED_PPO_HYPERPARAMS

    out = tmp_path / "trial"
    argv = ["cartpole-novel", "--steps", "64", "--eval-every", "64", "--seeds", "0",
            "--jobs", "1", "--algos", "liquid_ppo", "--liquid-settings",
            '{"actor_neurons": 24, "critic_neurons": 20}', "--out", str(out)]
    bench_ppo.main(argv)
    report = json.loads((out / "ppo-cartpole-novel.json").read_text())
    tuned = TUNED_PPO_HYPERPARAMS["CartPoleNoVel-v1"]
    trial = {**tuned, "actor_neurons": 24, "critic_neurons": 20}
    assert report["settings"]["liquid_ppo"] == trial
    expected = bench_ppo.parameter_count(LiquidPPO("CartPoleNoVel-v1", seed=0, **trial))
    default = bench_ppo.parameter_count(LiquidPPO("CartPoleNoVel-v1", seed=0, **tuned))
    assert report["results"][0]["parameters"] == expected != default
    assert ("--liquid-settings '{\"actor_neurons\": 24, \"critic_neurons\": 20}'"
            in report["command"])
    page = (out / "ppo-cartpole-novel.md").read_text()
    assert "with `--liquid-settings` {'actor_neurons': 24, 'critic_neurons': 20}" in page


def test_bench_ppo_untuned_runs_liquidppo_on_its_defaults(bench_ppo, tmp_path):
    """``--untuned``: LiquidPPO on its defaults with ``--liquid-settings`` over them (a
    task without tuned settings), not on the task's tuned settings."""
    from agents import LiquidPPO

    out = tmp_path / "untuned"
    argv = ["cartpole-novel", "--steps", "64", "--eval-every", "64", "--seeds", "0",
            "--jobs", "1", "--algos", "liquid_ppo", "--untuned", "--liquid-settings",
            '{"n_envs": 2, "n_steps": 32, "batch_size": 32}', "--out", str(out)]
    bench_ppo.main(argv)
    report = json.loads((out / "ppo-cartpole-novel.json").read_text())
    trial = {"n_envs": 2, "n_steps": 32, "batch_size": 32}
    assert report["settings"]["liquid_ppo"] == trial
    assert report["results"][0]["parameters"] == bench_ppo.parameter_count(
        LiquidPPO("CartPoleNoVel-v1", seed=0, **trial))
    assert " --untuned " in report["command"]
    assert "LiquidPPO: its defaults (no tuned settings)" in (
        out / "ppo-cartpole-novel.md").read_text()


@pytest.mark.parametrize("argv, fragment", [
    (["cartpole-novel", "--liquid-settings", "{n_steps: 16}"],
     "--liquid-settings must be a JSON object of LiquidPPO keyword arguments, got '{n_steps"),
    (["cartpole-novel", "--liquid-settings", "[16]"], "got '[16]'"),
    (["cartpole-novel", "--liquid-settings", '{"n_step": 16}'],
     "--liquid-settings: 'n_step' not LiquidPPO keyword argument(s); expected some of"),
    (["cartpole-novel", "--liquid-settings", '{"policy": "MlpPolicy", "seed": 3}'],
     "--liquid-settings: 'policy', 'seed' not LiquidPPO keyword argument(s)"),
    (["cartpole-novel", "--algos", "recurrent_ppo", "--liquid-settings", '{"n_steps": 16}'],
     "--liquid-settings needs liquid_ppo among --algos"),
])
def test_bench_ppo_bad_liquid_settings_exit_2(bench_ppo, capsys, argv, fragment):
    with pytest.raises(SystemExit) as exit_:
        bench_ppo.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


# --- benchmarks/bench_irregular.py: the elapsed time in the cells, in the observation, or not -
@pytest.fixture
def bench_irregular(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    import bench_irregular

    return bench_irregular


def irregular_run(variant, seed, final, sps=50.0, params=7):
    return {"variant": variant, "seed": seed, "curve": [(5, 0.0), (10, final)],
            "steps_per_second": sps, "parameters": params}


def test_bench_irregular_targets_and_tables(bench_irregular):
    bi = bench_irregular
    summary = {v: bi.summarize([irregular_run(v, s, f) for s, f in zip((1, 0), finals,
                                                                       strict=True)])
               for v, finals in (("cells", (30.0, 10.0)), ("obs", (20.0, 20.0)),
                                 ("none", (10.0, 30.0)), ("recurrent_ppo", (5.0, 5.0)))}
    cells = summary["cells"]  # sorted by seed: seed 0 got 10, seed 1 got 30
    assert cells["seeds"] == [0, 1] and cells["finals"] == [10.0, 30.0]
    assert cells["mean"] == 20.0 and cells["std"] == 10.0
    assert bi.paired(cells, summary["none"]) == [-20.0, 20.0]
    checks = bi.targets(summary)
    assert [met for _, met in checks] == [True, False]  # 20 >= 20; 20 > 20 is not
    assert checks[0][0] == ("cells >= obs (mean final return): **met** (20.0 against 20.0; "
                            "cells >= obs in 1/2 seeds)")
    assert checks[1][0].startswith("cells > none (mean final return): **not met** (20.0 "
                                   "against 20.0; cells > none in 1/2 seeds)")
    assert bi.targets({"obs": summary["obs"], "none": summary["none"]}) == []
    assert [t for t, _ in bi.targets({"cells": cells, "none": summary["none"]})] == [
        checks[1][0]]
    lines = bi.table(summary)
    assert lines[2] == ("| NeuroFlow, elapsed time to the cells (`cells`) | 20.0 ± 10.0 | "
                        "10.0, 30.0 | 50 | 7 |")
    diffs = bi.differences(bi.FAMILIES["neuroflow"], summary)
    assert diffs[0].startswith("Final return of `cells` minus each other variant")
    assert "| `none` | +0.0 | -20.0, +20.0 |" in diffs
    assert "| `recurrent_ppo` | +15.0 | +5.0, +25.0 |" in diffs
    assert bi.differences(bi.FAMILIES["neuroflow"], {"cells": cells}) == []


def test_bench_irregular_variants_are_built_as_the_issue_says(bench_irregular):
    import gymnasium as gym

    import envs

    bi = bench_irregular
    for name, task in bi.TASKS.items():
        assert gym.make(task.env_id).get_wrapper_attr("nominal_dt") == task.nominal_dt, name
        assert envs.IRREGULAR_IDS[task.env_id] == envs.NOVEL_IDS[task.base_id]
    task = bi.TASKS["cartpole"]
    models = {v: bi.build(v, task, 0, bi.settings(v, task)) for v in bi.NEUROFLOW}
    cells, obs, none = (models[v][0] for v in ("cells", "obs", "none"))
    assert cells.elapsed_time_key == "elapsed_time" and cells.elapsed.unit == 0.02
    assert obs.elapsed_time_key is None and none.elapsed_time_key is None
    assert cells.observation_space.shape == none.observation_space.shape == (4,)
    assert obs.observation_space.shape == (5,)
    # cells' evaluation hands predict the elapsed time of every observation, obs' does not
    for variant, model in (("cells", cells), ("obs", obs)):
        calls, predict = [], model.predict

        def spy(*args, _calls=calls, _predict=predict, **kwargs):
            _calls.append((kwargs.get("elapsed_time"), kwargs["episode_start"][0]))
            return _predict(*args, **kwargs)

        model.predict = spy
        assert np.isfinite(models[variant][1](2))
        if variant == "obs":
            assert {dt for dt, _ in calls} == {None}
            continue
        assert [dt for dt, start in calls if start] == [0.02, 0.02]  # the resets
        assert {round(dt / 0.02) for dt, _ in calls} <= {1, 2, 3, 4}
        assert len({dt for dt, _ in calls}) > 1


def test_bench_irregular_recurrent_ppo_sees_the_time_in_its_observation(bench_irregular):
    pytest.importorskip("sb3_contrib")
    bi = bench_irregular
    task = bi.TASKS["cartpole"]
    lstm, evaluate = bi.build("recurrent_ppo", task, 0, bi.settings("recurrent_ppo", task))
    assert lstm.observation_space.shape == (5,) and lstm.get_vec_normalize_env() is not None
    assert lstm.n_envs == 8 and lstm.gamma == 0.98
    assert np.isfinite(evaluate(1))


def cells_of(summary, variants):
    return " | ".join(f"{summary[v]['mean']:.1f} ± {summary[v]['std']:.1f}" for v in variants)


def test_the_rl_overview_quotes_the_irregular_pages():
    """The irregular-time tables of docs/benchmarks/rl/index.md (NeuroFlow's and LiquidPPO's)
    and of docs/agents/ppo.md hold the means and spreads of the pages' JSON, and the
    overview their verdicts."""
    from pathlib import Path

    docs = Path(__file__).parents[1] / "docs/benchmarks/rl"
    section = (docs / "index.md").read_text().split("## Irregular time")[1].split("\n## ")[0]
    families = (("cells", "obs", "none", "recurrent_ppo"),
                ("ppo-cells", "ppo-obs", "ppo-none", "ppo-gru-obs"))
    for name, env_id in (("cartpole", "CartPoleNoVelIrregular-v1"),
                         ("pendulum", "PendulumNoVelIrregular-v1")):
        report = json.loads((docs / f"irregular-{name}.json").read_text())
        summary = report["summary"]
        rows = [line for line in section.splitlines() if line.startswith(f"| [{env_id}]")]
        for variants in families:
            if not all(v in summary for v in variants):
                continue
            cells = cells_of(summary, variants)
            row = [line for line in rows if cells in line]
            assert len(row) == 1, (name, variants, cells)
            for target in report["targets"]:
                if target["target"].startswith(variants[0] + " "):
                    verdict = "**met**" if target["met"] else "**not met**"
                    claim = target["target"].split(" (")[0]
                    assert f"{claim}: {verdict}" in row[0], (name, claim)
        # LiquidPPO's page quotes its family's row
        ppo = (docs.parents[1] / "agents/ppo.md").read_text()
        if all(v in summary for v in families[1]):
            assert f"| {env_id} | {cells_of(summary, families[1])} |" in ppo, name


@pytest.mark.parametrize("task, steps", [("cartpole", 100_000), ("pendulum", 30_000)])
def test_bench_irregular_default_budget_is_the_tasks(bench_irregular, monkeypatch, task,
                                                     steps):
    seen = []
    monkeypatch.setattr(bench_irregular, "learning", lambda args: seen.append(args) or 0)
    nf = ["--variants", "cells", "obs", "none"]  # no sb3-contrib needed
    assert bench_irregular.main([task, *nf]) == 0
    assert seen[0].steps == steps and seen[0].ppo_steps == 100_000  # LiquidPPO: 100k on both
    assert [bench_irregular.budget(v, seen[0]) for v in ("cells", "recurrent_ppo",
                                                         "ppo-cells")] == [steps, steps, 100_000]
    # the page's command leaves the defaults out and names any other budget
    assert "steps" not in bench_irregular.command_of(seen[0])
    bench_irregular.main([task, *nf, "--steps", "5000", "--ppo-steps", "2000"])
    assert bench_irregular.command_of(seen[1]) == (f"python benchmarks/bench_irregular.py {task} "
                                                   "--variants cells obs none --steps 5000 "
                                                   "--ppo-steps 2000")
    assert bench_irregular.budget("ppo-gru-obs", seen[1]) == 2000
    # all eight variants by default (main would need sb3-contrib for recurrent_ppo)
    assert bench_irregular.DEFAULTS["--variants"] == list(bench_irregular.VARIANTS)
    assert len(bench_irregular.VARIANTS) == 8


def test_bench_irregular_end_to_end(bench_irregular, tmp_path):
    pytest.importorskip("sb3_contrib")
    out = tmp_path / "irregular"
    argv = ["cartpole", "--steps", "120", "--ppo-steps", "256", "--eval-every", "60",
            "--seeds", "0", "--jobs", "1", "--out", str(out)]
    code = bench_irregular.main(argv)
    report = json.loads((out / "irregular-cartpole.json").read_text())
    assert report["command"] == ("python benchmarks/bench_irregular.py cartpole --seeds 0 "
                                 f"--jobs 1 --steps 120 --ppo-steps 256 --eval-every 60 "
                                 f"--out {out}")
    assert report["variants"] == ["cells", "obs", "none", "recurrent_ppo", "ppo-cells",
                                  "ppo-obs", "ppo-none", "ppo-gru-obs"]
    assert report["threads_per_run"] == [1] and report["machine"]
    assert code == (0 if all(t["met"] for t in report["targets"]) else 1)
    assert len(report["targets"]) == 4
    runs = {r["variant"]: r for r in report["results"]}
    for variant in ("cells", "obs", "none"):
        assert [step for step, _ in runs[variant]["curve"]] == [60, 120]
    # RecurrentPPO: 8 copies of 32 steps a rollout
    assert [step for step, _ in runs["recurrent_ppo"]["curve"]] == [64, 256]
    for variant in bench_irregular.LIQUID_PPO:  # the --ppo-steps budget
        assert runs[variant]["budget"] == 256 and runs[variant]["curve"][-1][0] >= 256
    assert sorted(p.name for p in (out / "irregular-runs").iterdir()) == sorted(
        f"cartpole-{v}-0.json" for v in report["variants"])
    page = (out / "irregular-cartpole.md").read_text()
    assert report["command"] in page and "Machine: " in page
    for variant, row in report["summary"].items():
        assert (f"(`{variant}`) | {row['mean']:.1f} ± {row['std']:.1f} | "
                f"{row['finals'][0]:.1f} |") in page
    for target in report["targets"]:
        assert f"Target: {target['target']}." in page
    assert (out / "irregular-cartpole.png").stat().st_size > 0


@pytest.mark.parametrize("argv, fragment", [
    (["mountaincar"], "argument task: invalid choice: 'mountaincar'"),
    (["cartpole", "--steps", "0"], "--steps must be >= 1, got 0"),
    (["cartpole", "--eval-every", "often"], "--eval-every must be an integer, got 'often'"),
    (["cartpole", "--jobs", "0"], "--jobs must be >= 1, got 0"),
    (["cartpole", "--ppo-steps", "0"], "--ppo-steps must be >= 1, got 0"),
    (["cartpole", "--variants", "ppo-lstm"], "invalid choice: 'ppo-lstm'"),
    (["cartpole", "--seeds", "0", "-1"], "--seeds must be >= 0, got -1"),
    (["pendulum", "--variants", "cells", "lstm"], "invalid choice: 'lstm'"),
    (["pendulum", "--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_bench_irregular_mistakes_exit_2_with_one_line(bench_irregular, capsys, argv,
                                                       fragment):
    with pytest.raises(SystemExit) as exit_:
        bench_irregular.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, err


def test_bench_irregular_refuses_a_file_as_out(bench_irregular, capsys, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit_:
        bench_irregular.main(["cartpole", "--out", str(tmp_path / "file")])
    assert exit_.value.code == 2
    assert "--out must be a folder" in capsys.readouterr().err


def test_bench_irregular_error_from_a_fresh_process():
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "bench_irregular.py"
    proc = subprocess.run([sys.executable, str(script), "cartpole", "--seeds", "x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "bench_irregular.py: error: --seeds must be an integer, got 'x'"


def test_bench_irregular_liquid_ppo_targets_and_tables(bench_irregular):
    bi = bench_irregular
    summary = {v: bi.summarize([irregular_run(v, s, f) for s, f in zip((1, 0), finals,
                                                                       strict=True)])
               for v, finals in (("ppo-cells", (30.0, 10.0)), ("ppo-obs", (20.0, 20.0)),
                                 ("ppo-none", (40.0, 40.0)), ("ppo-gru-obs", (25.0, 16.0)))}
    checks = bi.targets(summary)
    # ppo-cells 20 >= ppo-obs 20 (met); ppo-cells 20 >= ppo-gru-obs 20.5 (missed); no target
    # on ppo-none, however far ahead it is
    assert checks == [
        ("ppo-cells >= ppo-obs (mean final return): **met** (20.0 against 20.0; ppo-cells >= "
         "ppo-obs in 1/2 seeds)", True),
        ("ppo-cells >= ppo-gru-obs (mean final return): **not met** (20.0 against 20.5; "
         "ppo-cells >= ppo-gru-obs in 1/2 seeds)", False)]
    assert bi.targets({v: summary[v] for v in ("ppo-obs", "ppo-gru-obs")}) == []
    # with the NeuroFlow family's rows too: its targets first, then LiquidPPO's
    both = {**{v: bi.summarize([irregular_run(v, 0, f)])
               for v, f in (("cells", 5.0), ("obs", 4.0), ("none", 3.0))}, **summary}
    assert [text.split(" (")[0] for text, _ in bi.targets(both)] == [
        "cells >= obs", "cells > none", "ppo-cells >= ppo-obs", "ppo-cells >= ppo-gru-obs"]
    lines = bi.table(summary)
    assert lines[2] == ("| LiquidPPO, elapsed time to the cells (`ppo-cells`) | 20.0 ± 10.0 | "
                        "10.0, 30.0 | 50 | 7 |")
    assert lines[5].startswith("| LiquidPPO with a GRU core (`cell=\"gru\"`), elapsed time "
                               "appended to the observation (`ppo-gru-obs`) | 20.5 ± 4.5 |")
    diffs = bi.differences(bi.FAMILIES["liquid_ppo"], both)  # the family's variants only
    assert diffs[0].startswith("Final return of `ppo-cells` minus each other variant")
    assert diffs[4:] == ["| `ppo-obs` | +0.0 | -10.0, +10.0 |",
                         "| `ppo-none` | -20.0 | -30.0, -10.0 |",
                         "| `ppo-gru-obs` | -0.5 | -6.0, +5.0 |"]
    assert bi.differences(bi.FAMILIES["liquid_ppo"], {"ppo-cells": summary["ppo-cells"]}) == []


@pytest.mark.parametrize("name", ["cartpole", "pendulum"])
def test_bench_irregular_liquid_ppo_variants_are_built_as_the_issue_says(bench_irregular,
                                                                         name):
    from agents import LiquidPPO
    from agents.common.hyperparams import tuned_hyperparams
    from velora_ens.models import GatedNetwork

    bi = bench_irregular
    task = bi.TASKS[name]
    tuned = tuned_hyperparams("LiquidPPO", task.base_id)
    assert tuned["n_envs"] > 1  # the NoVel task's tuned settings, n_envs included
    config = {v: bi.settings(v, task) for v in bi.LIQUID_PPO}
    assert config["ppo-cells"] == {**tuned, "elapsed_time_key": "elapsed_time",
                                   "elapsed_time_unit": task.nominal_dt}
    assert config["ppo-obs"] == config["ppo-none"] == tuned
    # the GRU takes none of the options that only the liquid cells take (PendulumNoVel's
    # dense recurrence), everything else as tuned
    from tasks import LIQUID_ONLY

    liquid_only = {k: v for k, v in tuned.items()  # those set: False and None are not
                   if k in LIQUID_ONLY["gru"] and v is not False and v is not None}
    assert (name == "pendulum") == bool(liquid_only)
    assert config["ppo-gru-obs"] == {**{k: v for k, v in tuned.items()
                                        if k not in liquid_only}, "cell": "gru"}
    models = {v: bi.build(v, task, 0, config[v]) for v in bi.LIQUID_PPO}
    for variant, (model, _) in models.items():
        assert type(model) is LiquidPPO and model.n_envs == tuned["n_envs"], variant
        assert model.gamma == tuned["gamma"] and model.n_steps == tuned["n_steps"]
        appended = variant in ("ppo-obs", "ppo-gru-obs")
        base_dim = models["ppo-none"][0].observation_space.shape[0]
        assert model.observation_space.shape == (base_dim + appended,), variant
        assert isinstance(model.actor.net, GatedNetwork) == (variant == "ppo-gru-obs")
        assert model.elapsed_time_key == ("elapsed_time" if variant == "ppo-cells" else None)
    assert models["ppo-cells"][0].elapsed.unit == task.nominal_dt
    assert models["ppo-gru-obs"][0].actor.net.cell_type == "gru"
    if name == "pendulum":
        return  # the evaluation's elapsed time: CartPole's episodes are the short ones
    # ppo-cells' evaluation hands predict the elapsed time of every observation, ppo-obs'
    # does not (it is in the observation)
    for variant in ("ppo-cells", "ppo-obs"):
        model, evaluate = models[variant]
        calls, predict = [], model.predict

        def spy(*args, _calls=calls, _predict=predict, **kwargs):
            _calls.append((kwargs.get("elapsed_time"), kwargs["episode_start"][0]))
            return _predict(*args, **kwargs)

        model.predict = spy
        assert np.isfinite(evaluate(2))
        if variant == "ppo-obs":
            assert {dt for dt, _ in calls} == {None}
            continue
        assert [dt for dt, start in calls if start] == [0.02, 0.02]  # the resets
        assert {round(dt / 0.02) for dt, _ in calls} <= {1, 2, 3, 4}
        assert len({dt for dt, _ in calls}) > 1


def irregular_file_run(bi, task, variant, seed, final, budget, eval_every=5_000, **extra):
    """A run file's content as ``run_one`` writes it, without training."""
    return {"task": task, "env_id": bi.TASKS[task].env_id, "variant": variant, "seed": seed,
            "budget": budget, "eval_every": eval_every,
            "settings": bi.settings(variant, bi.TASKS[task]),
            "curve": [[eval_every, 0.0], [budget, final]], "steps": budget,
            "train_seconds": 60.0, "eval_seconds": 0.0, "steps_per_second": 50.0,
            "threads": 1, "parameters": 7, "command": "python benchmarks/bench_irregular.py",
            "jobs": 2, "machine": "test machine", "torch": "2.x", "date": "2026-12-05", **extra}


@pytest.fixture
def fake_irregular_runs(bench_irregular, monkeypatch):
    """``run_all`` replaced by one that writes each job's run file as ``run_one`` would
    (final return: ``FINALS[variant] + seed``), recording the jobs it was given."""
    from pathlib import Path

    from report import write_report

    bi = bench_irregular
    jobs: list[list[tuple]] = []

    def run_all(run_one, work, n_jobs):
        assert run_one is bi.run_one
        jobs.append(list(work))
        for task, variant, seed, steps, eval_every, path, sitting in work:
            write_report(Path(path), irregular_file_run(
                bi, task, variant, seed, IRREGULAR_FINALS[variant] + seed, steps, eval_every,
                **sitting))
        return [], 0.0

    monkeypatch.setattr(bi, "run_all", run_all)
    return jobs


IRREGULAR_FINALS = {"cells": 30.0, "obs": 20.0, "none": 10.0, "recurrent_ppo": 40.0,
                    "ppo-cells": 50.0, "ppo-obs": 40.0, "ppo-none": 30.0, "ppo-gru-obs": 60.0}


def test_bench_irregular_skips_the_runs_on_file_of_this_budget_and_settings(
        bench_irregular, fake_irregular_runs, tmp_path, capsys):
    from report import write_report

    bi = bench_irregular
    out = tmp_path / "irregular"
    argv = ["cartpole", "--variants", "ppo-cells", "ppo-obs", "--ppo-steps", "2000",
            "--seeds", "0", "1", "--out", str(out)]
    bi.main(argv)
    assert [(v, s, steps) for _, v, s, steps, *_ in fake_irregular_runs[0]] == [
        ("ppo-cells", 0, 2000), ("ppo-obs", 0, 2000), ("ppo-cells", 1, 2000),
        ("ppo-obs", 1, 2000)]
    first = json.loads(bi.run_path(out, "cartpole", "ppo-obs", 1).read_text())
    assert first["command"].endswith("--ppo-steps 2000 --out " + str(out))
    # the same command again: every run is on file, nothing runs
    bi.main(argv)
    assert len(fake_irregular_runs) == 1
    assert "ppo-obs seed 1: on file, skipped" in capsys.readouterr().err
    # files of another budget, evaluation interval or settings are run again, and only they
    path = bi.run_path(out, "cartpole", "ppo-cells", 0)
    write_report(path, irregular_file_run(bi, "cartpole", "ppo-cells", 0, 1.0, 4000))
    path = bi.run_path(out, "cartpole", "ppo-obs", 0)
    write_report(path, irregular_file_run(bi, "cartpole", "ppo-obs", 0, 1.0, 2000, 1000))
    path = bi.run_path(out, "cartpole", "ppo-cells", 1)
    run = irregular_file_run(bi, "cartpole", "ppo-cells", 1, 1.0, 2000)
    run["settings"] = bi.settings("ppo-obs", bi.TASKS["cartpole"])  # no elapsed_time_key
    write_report(path, run)
    bi.main(argv)
    assert [(v, s) for _, v, s, *_ in fake_irregular_runs[1]] == [
        ("ppo-cells", 0), ("ppo-obs", 0), ("ppo-cells", 1)]
    err = capsys.readouterr().err
    assert "ppo-cells seed 0: on file with budget 4000 instead of 2000, run again" in err
    assert "ppo-obs seed 0: on file with eval-every 1000 instead of 5000, run again" in err
    assert "ppo-cells seed 1: on file with settings" in err
    assert json.loads(bi.run_path(out, "cartpole", "ppo-cells", 0).read_text())["budget"] == 2000
    # --force runs the matching ones again too
    bi.main([*argv, "--force"])
    assert len(fake_irregular_runs[2]) == 4


def test_bench_irregular_page_keeps_the_other_familys_rows(bench_irregular,
                                                          fake_irregular_runs, tmp_path):
    bi = bench_irregular
    out = tmp_path / "irregular"
    nf = ["--variants", "cells", "obs", "none", "--steps", "3000", "--seeds", "0", "1"]
    assert bi.main(["pendulum", *nf, "--out", str(out)]) == 0  # cells ahead of obs and none
    page = (out / "irregular-pendulum.md").read_text()
    assert "### LiquidPPO, 100,000 steps\n\nNot run yet: `python benchmarks/bench_irregular.py "\
           "pendulum --variants ppo-cells ppo-obs ppo-none ppo-gru-obs`." in page
    ppo = ["--variants", *bi.LIQUID_PPO, "--steps", "3000", "--ppo-steps", "2000", "--seeds",
           "0", "1", "--out", str(out)]
    # the LiquidPPO rows join the NeuroFlow ones; ppo-gru-obs (60) beats ppo-cells (50)
    assert bi.main(["pendulum", *ppo]) == 1
    assert [v for _, v, *_ in fake_irregular_runs[1]] == list(bi.LIQUID_PPO) * 2
    report = json.loads((out / "irregular-pendulum.json").read_text())
    assert report["variants"] == [*bi.NEUROFLOW, *bi.LIQUID_PPO]
    assert [t["met"] for t in report["targets"]] == [True, True, True, False]
    page = (out / "irregular-pendulum.md").read_text()
    for heading in ("### NeuroFlow and RecurrentPPO, 3,000 steps, seeds [0, 1]",
                    "### LiquidPPO, 2,000 steps, seeds [0, 1]"):
        assert heading in page
    assert page.index("(`cells`) | 30.5 ± 0.5 | 30.0, 31.0 |") < page.index(
        "### LiquidPPO") < page.index("(`ppo-cells`) | 50.5 ± 0.5 | 50.0, 51.0 |")
    assert "Target: ppo-cells >= ppo-gru-obs (mean final return): **not met**" in page
    assert "| `ppo-gru-obs` | -10.0 | -10.0, -10.0 |" in page
    assert "Not run yet" not in page
    # the commands of both sittings, each in its family
    assert page.count("Command: `python benchmarks/bench_irregular.py pendulum --seeds 0 1 "
                      "--variants ") == 2
    # --render-only renders the same page from the run files, training nothing
    (out / "irregular-pendulum.md").unlink()
    assert bi.main(["pendulum", "--render-only", *ppo[len(bi.LIQUID_PPO) + 1:]]) == 1
    assert (out / "irregular-pendulum.md").read_text() == page
    assert len(fake_irregular_runs) == 2
    # asked for another NeuroFlow budget, the page leaves those runs out and says so
    assert bi.main(["pendulum", "--render-only", "--ppo-steps", "2000", "--seeds", "0",
                    "--out", str(out)]) == 1
    page = (out / "irregular-pendulum.md").read_text()
    assert "(`cells`)" not in page and "(`ppo-cells`) | 50.5 ± 0.5 |" in page
    assert "Run files left out (another budget, evaluation interval or settings): cells seed " \
           "0 (budget 3000 instead of 30000)" in page


def test_bench_irregular_imports_a_page_written_before_the_run_files(bench_irregular,
                                                                    tmp_path):
    bi = bench_irregular
    task = bi.TASKS["cartpole"]
    results = [{k: v for k, v in irregular_file_run(bi, "cartpole", v, s, f, 100_000).items()
                if k in ("variant", "seed", "curve", "steps", "train_seconds", "eval_seconds",
                         "steps_per_second", "threads", "parameters")}
               for v, s, f in (("cells", 0, 300.0), ("obs", 0, 200.0))]
    old = {"task": "cartpole", "env_id": task.env_id, "steps": 100_000, "eval_every": 5_000,
           "command": "python benchmarks/bench_irregular.py cartpole --seeds 0 --jobs 2 "
                      "--out /tmp/irr100k", "machine": "old machine", "torch": "2.13",
           "jobs": 2, "date": "2026-12-02",
           "settings": {v: bi.settings(v, task) for v in ("cells", "obs")}, "results": results}
    (tmp_path / "old.json").write_text(json.dumps(old))
    paths = bi.import_page(tmp_path / "old.json", tmp_path)
    assert paths == [bi.run_path(tmp_path, "cartpole", v, 0) for v in ("cells", "obs")]
    run = json.loads(paths[0].read_text())
    assert run["budget"] == 100_000 and run["settings"] == old["settings"]["cells"]
    assert run["curve"] == results[0]["curve"] and run["date"] == "2026-12-02"
    assert run["command"] == "python benchmarks/bench_irregular.py cartpole --seeds 0 --jobs 2"
    assert run["copied_from"] == "/tmp/irr100k"
    assert bi.main(["cartpole", "--render-only", "--out", str(tmp_path)]) == 0
    page = (tmp_path / "irregular-cartpole.md").read_text()
    assert ("Command: `python benchmarks/bench_irregular.py cartpole --seeds 0 --jobs 2` (run "
            "with `--out /tmp/irr100k`, then copied here). Machine: old machine; torch 2.13, 1 "
            "torch thread(s) per run, 2 run(s) at a time; 2026-12-02; 2 run(s)") in page
    assert "Target: cells >= obs (mean final return): **met** (300.0 against 200.0" in page


def test_bench_irregular_committed_pages_render_from_their_run_files(bench_irregular):
    # the pages are what --render-only writes from the run files beside them
    from pathlib import Path

    bi = bench_irregular
    docs = Path(__file__).parents[1] / "docs" / "benchmarks" / "rl"
    for name in bi.TASKS:
        report = json.loads((docs / f"irregular-{name}.json").read_text())
        assert "\n".join(bi.page(report)) == (docs / f"irregular-{name}.md").read_text()
        runs = bi.read_runs(docs, name)
        assert runs == report["results"] and len(runs) >= 20, name
        assert {r["variant"] for r in runs} >= set(bi.FAMILIES["neuroflow"].variants)


# --- benchmarks/tasks.py: the interleaved timing every throughput page uses ---------------
def test_interleaved_rates_alternate_the_learners_and_take_medians(tasks, monkeypatch):
    clock = iter(range(100))  # one tick per perf_counter call
    monkeypatch.setattr(tasks.time, "perf_counter", lambda: float(next(clock)))
    calls: list[str] = []
    durations = {"a": iter([1, 3, 2]), "b": iter([4, 4, 8])}  # seconds each call takes

    def learner(name):
        def learn():
            calls.append(name)
            for _ in range(next(durations[name]) - 1):  # the clock advances that far
                next(clock)
        return learn

    rates = tasks.interleaved_rates({"a": learner("a"), "b": learner("b")}, 3, 60)
    assert calls == ["a", "b"] * 3
    assert rates == {"a": 60 / 2, "b": 60 / 4}  # medians of 60/1, 60/3, 60/2 and 60/4, 60/4, 60/8
    # a learner that says how many steps it trained (a PPO rollout past the chunk)
    clock = iter(range(100))
    assert tasks.interleaved_rates({"c": lambda: 90}, 1, 60) == {"c": 90.0}


# --- benchmarks/tasks.py and report.py: what the RL scripts share ---------------------------
@pytest.fixture
def tasks(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    import tasks

    return tasks


def test_command_names_the_options_that_differ_from_their_defaults(tasks):
    from pathlib import Path

    defaults = {"--seeds": [0, 1, 2, 3, 4], "--jobs": 2, "--algos": ["a", "b"],
                "--liquid-settings": {}, "--out": Path("docs/benchmarks/rl")}
    options = {"--seeds": [0], "--jobs": 2, "--algos": ["b"], "--steps": 4096,
               "--liquid-settings": {"n_steps": 16, "gamma": 0.9}, "--reuse-baseline": True,
               "--tag": None, "--render-only": False, "--out": Path("/tmp/a trial")}
    assert tasks.command("bench_ppo.py", "cartpole-novel", options, defaults) == (
        "python benchmarks/bench_ppo.py cartpole-novel --seeds 0 --algos b --steps 4096 "
        "--liquid-settings '{\"n_steps\": 16, \"gamma\": 0.9}' --reuse-baseline "
        "--out '/tmp/a trial'")
    # all at their defaults: the script and the subcommand alone
    assert tasks.command("bench_rl.py", "pendulum", {"--seeds": [0, 1, 2], "--jobs": 2},
                         {"--seeds": [0, 1, 2], "--jobs": 2}) == (
        "python benchmarks/bench_rl.py pendulum")


def test_every_rl_script_uses_the_one_task_and_command(tasks):
    import argparse

    import bench_exploration
    import bench_irregular
    import bench_ppo
    import bench_rl

    for script in (bench_rl, bench_ppo, bench_exploration, bench_irregular):
        assert all(type(t) is tasks.Task for t in script.TASKS.values()), script.__name__
        assert script.command is tasks.command and script.OUT == tasks.OUT
    task = bench_rl.TASKS["cartpole-novel"]
    assert (task.env_id, task.steps, task.eval_every, task.target) == (
        "CartPoleNoVel-v1", 50_000, 5_000, 475.0)
    assert [a.algo for a in task.arms] == ["NeuroFlow", "DQN"] and task.arm("DQN").main
    assert task.base_id == "" and task.episodes is None and task.per_seed  # the defaults
    with pytest.raises(AttributeError):
        task.steps = 10  # frozen
    assert bench_irregular.TASKS["pendulum"].eval_every == bench_irregular.EVAL_EVERY
    args = argparse.Namespace(task="deepsea", arms=["thompson"], seeds=[0, 1, 2, 3, 4],
                              screen_seeds=[0, 1, 2, 3, 4], override={"target_q": "min"},
                              tag="shared-target", jobs=2, out=tasks.OUT)
    assert bench_exploration.command_of(args) == (
        "python benchmarks/bench_exploration.py deepsea --arms thompson --override "
        "'{\"target_q\": \"min\"}' --tag shared-target")
    args = argparse.Namespace(task="cartpole-novel", seeds=[0], jobs=1, reuse_baseline=True,
                              out=tasks.OUT)
    assert bench_rl.command_of(args) == ("python benchmarks/bench_rl.py cartpole-novel "
                                         "--seeds 0 --jobs 1 --reuse-baseline")


class Ramp(gym.Env):
    """Observation [o + t], reward (o + t + 1) / 3 + action, three steps an episode; a seeded
    reset sets o = seed % 5 (an unseeded one keeps it)."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-100.0, 100.0, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.offset, self.t = 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.offset = seed % 5
        self.t = 0
        return np.array([self.offset], np.float32), {}

    def step(self, action):
        self.t += 1
        reward = (self.offset + self.t) / 3 + float(action[0])
        return np.array([self.offset + self.t], np.float32), reward, False, self.t == 3, {}


class Recorder:
    """A deterministic 'model' with SB3's predict: action 0.5, the state a step count; it
    records what it was given."""

    def __init__(self):
        self.seen = []

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        self.seen.append((np.array(obs), state, bool(episode_start[0]), deterministic))
        return np.array([0.5], np.float32), (0 if state is None else state) + 1


def test_vec_env_as_env_evaluates_a_hand_computed_episode(tasks):
    # frames stacked and a frozen VecNormalize, as bench_ppo's stacked PPO is evaluated
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecNormalize

    def make():
        venv = VecNormalize(VecFrameStack(DummyVecEnv([Ramp]), n_stack=2), training=False,
                            norm_reward=False, clip_obs=10.0)
        venv.obs_rms.mean, venv.obs_rms.var = np.array([1.0, 1.0]), np.array([4.0, 4.0])
        return tasks.VecEnvAsEnv(venv)

    model = Recorder()
    mean = tasks.evaluate(model, make, 2, seed=0)  # episodes seeded 10000, 10001: o = 0, 1
    assert tasks.episode_seeds(0, 2) == [10_000, 10_001]
    returns = [sum(float(np.float32((o + t) / 3 + 0.5)) for t in (1, 2, 3)) for o in (0, 1)]
    assert mean == np.mean(returns)  # the rewards as the VecEnv buffers them: float32
    std = np.sqrt(4.0 + 1e-8)
    expected = [np.array([prev - 1.0, cur - 1.0]) / std  # [previous frame, this frame]
                for o in (0, 1) for prev, cur in ((0, o), (o, o + 1), (o + 1, o + 2))]
    for (obs, _, _, _), want in zip(model.seen, expected, strict=True):
        np.testing.assert_allclose(obs, want, rtol=1e-6)
    assert [(state, start, det) for _, state, start, det in model.seen] == [
        (None, True, True), (1, False, True), (2, False, True)] * 2


@pytest.mark.parametrize("algo, task", [("recurrent_ppo", "pendulum-novel"),
                                        ("ppo_stacked", "pendulum-novel"),
                                        ("liquid_ppo", "cartpole-novel")])
def test_vec_env_as_env_gives_the_returns_of_the_vec_env_loop(bench_ppo, tasks, algo, task):
    # the episode loop on the single-copy VecEnv that bench_ppo.py and bench_irregular.py ran
    # before they evaluated through agents.evaluate_policy, kept here as the reference
    if algo != "liquid_ppo":
        pytest.importorskip("sb3_contrib")

    def vec_env_loop(model, venv, episodes, seed):
        returns = []
        for ep in range(episodes):
            venv.seed(10_000 * (seed + 1) + ep)
            obs = venv.reset()
            state, start, done, total = None, np.ones(1, bool), False, 0.0
            while not done:
                action, state = model.predict(obs, state=state, episode_start=start,
                                              deterministic=True)
                obs, reward, dones, _ = venv.step(action)
                total += float(reward[0])
                start, done = np.zeros(1, bool), bool(dones[0])
            returns.append(total)
        venv.close()
        return float(np.mean(returns))

    config = bench_ppo.settings(algo, bench_ppo.TASKS[task])
    model, make_eval_env = bench_ppo.build(algo, bench_ppo.TASKS[task], 3, config)
    if algo != "liquid_ppo":  # training statistics other than the initial ones
        stats = model.get_vec_normalize_env().obs_rms
        stats.mean = np.linspace(-0.5, 0.5, stats.mean.size)
        stats.var = np.linspace(0.5, 2.0, stats.var.size)
    expected = vec_env_loop(model, make_eval_env().venv, 2, seed=3)
    assert tasks.evaluate(model, make_eval_env, 2, seed=3) == expected


def test_every_benchmark_evaluation_goes_through_agents_evaluate_policy(tasks, monkeypatch):
    import dataclasses
    import importlib.util

    import bench_exploration
    import bench_irregular
    import bench_ppo
    import bench_rl

    import agents

    calls, real = [], agents.evaluate_policy

    def spy(model, env, n_eval_episodes=10, deterministic=True, return_episode_rewards=False,
            seed=None):
        calls.append((type(model).__name__, n_eval_episodes, deterministic, seed))
        return real(model, env, n_eval_episodes, deterministic, return_episode_rewards, seed)

    def episodes(name, seed, counts):  # one seeded call per episode
        return [(name, 1, True, s) for n in counts for s in tasks.episode_seeds(seed, n)]

    monkeypatch.setattr(agents, "evaluate_policy", spy)
    # bench_rl: 10 episodes every eval_every steps, 20 at the last (DQN collects 256 steps
    # between its updates)
    task = bench_rl.TASKS["cartpole-novel"]
    monkeypatch.setitem(bench_rl.TASKS, "cartpole-novel",
                        dataclasses.replace(task, steps=256, eval_every=128))
    for algo in ("NeuroFlow", "DQN"):
        calls.clear()
        run = bench_rl.run_one(("cartpole-novel", algo, 1))
        assert [step for step, _ in run["curve"]] == [128, 256]
        assert calls == episodes(algo, 1, (10, 20))
    # bench_exploration: 5 episodes, 10 at the last
    task = bench_exploration.TASKS["pendulum"]
    monkeypatch.setitem(bench_exploration.TASKS, "pendulum", dataclasses.replace(
        task, env_id="CartPoleNoVel-v1", steps=40, eval_every=20))
    calls.clear()
    assert bench_exploration.run_one(("pendulum", 0, 2, None))["curve"][0][0] == 20
    assert calls == episodes("NeuroFlow", 2, (5, 10))
    # bench_ppo: 10 episodes every eval_every steps, 20 after training (8 copies x 32 steps)
    # sb3-contrib's RecurrentPPO comes with the bench extra, which CI does not install
    contrib = importlib.util.find_spec("sb3_contrib") is not None
    for algo, name in (("liquid_ppo", "LiquidPPO"), ("recurrent_ppo", "RecurrentPPO"),
                       ("ppo_stacked", "PPO")):
        if algo == "recurrent_ppo" and not contrib:
            continue
        calls.clear()
        run = bench_ppo.run_one(("cartpole-novel", algo, 0, 256, 256, None, False))
        assert [step for step, _ in run["curve"]][-1] >= 256
        assert calls == episodes(name, 0, (20,))
    # bench_irregular: every variant (cells is handed the elapsed time, tested above)
    for variant in bench_irregular.VARIANTS:
        if variant == "recurrent_ppo" and not contrib:
            continue
        task = bench_irregular.TASKS["cartpole"]
        model, evaluate = bench_irregular.build(variant, task, 4,
                                                bench_irregular.settings(variant, task))
        calls.clear()
        evaluate(3)
        assert calls == episodes(type(model).__name__, 4, (3,))


def test_rl_pages_render_from_their_json(tasks, tmp_path):
    # the committed pages are what the writers render from the JSON beside them
    import shutil
    from pathlib import Path

    import bench_exploration
    import bench_rl

    docs = Path(__file__).parents[1] / "docs" / "benchmarks" / "rl"
    for name in ("pendulum", "cartpole-novel", "pendulum-novel"):
        report = json.loads((docs / f"{name}.json").read_text())
        lines, met = bench_rl.page(report)
        assert "\n".join(lines) == (docs / f"{name}.md").read_text(), name
        assert met and lines[7].startswith(f"- SB3 {report['algos'][1]} (MLP): `")
        shutil.copy(docs / f"{name}.json", tmp_path)
        assert bench_rl.main([name, "--render-only", "--out", str(tmp_path)]) == 0
        assert (tmp_path / f"{name}.md").read_text() == "\n".join(lines)
    grid = json.loads((docs / "exploration-grid.json").read_text())
    assert "\n".join(bench_exploration.grid_page(grid)) == (
        docs / "exploration-grid.md").read_text()
    with pytest.raises(SystemExit):
        bench_rl.main(["throughput", "--render-only", "--out", str(tmp_path)])


def test_bench_rl_reuses_a_baseline_of_the_same_settings_only(tasks, tmp_path):
    from pathlib import Path

    import bench_rl

    report = json.loads((Path(__file__).parents[1] / "docs" / "benchmarks" / "rl"
                         / "pendulum.json").read_text())
    path = tmp_path / "pendulum.json"
    path.write_text(json.dumps(report))
    runs, date = bench_rl.reused_baseline(path, "pendulum", [2, 1, 0])
    assert [r["seed"] for r in runs] == [0, 1, 2] and {r["algo"] for r in runs} == {"SAC"}
    report["settings"]["SAC"] = {"learning_rate": 3e-4}
    path.write_text(json.dumps(report))
    with pytest.raises(SystemExit, match="another task, budget, seeds or baseline settings"):
        bench_rl.reused_baseline(path, "pendulum", [0, 1, 2])
    with pytest.raises(SystemExit, match="another task"):
        bench_rl.reused_baseline(path, "pendulum", [0, 1])


def test_bench_rl_throughput_page(tasks, tmp_path):
    # both agents timed on the steps each chunk trained; the page names both settings
    import bench_rl

    code = bench_rl.main(["throughput", "--rounds", "1", "--chunk", "20", "--out", str(tmp_path)])
    page = (tmp_path / "throughput.md").read_text()
    assert page.splitlines()[-1].endswith(f"(target >= 2x: {'not ' * code}met).")
    assert page.count("Command: `python benchmarks/bench_rl.py throughput --rounds 1 --chunk "
                      f"20 --out {tmp_path}`") == 1
    assert ("- SB3 SAC (MLP): `{'train_freq': 1, 'gradient_steps': 1, 'learning_rate': 0.001, "
            "'batch_size': 256, 'learning_starts': 100}`") in page
    sac = __import__("stable_baselines3").SAC("MlpPolicy", "Pendulum-v1", learning_starts=5)
    assert tasks.chunk_learner(sac, 7)() == 7 and sac.num_timesteps == 7
