"""The velora-ens command line and the demo it runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from velora_ens.cli import main
from velora_ens.demo import WARMUP_STEPS, make_oscillation_data, run_demo


def test_oscillation_data_is_a_sine_sampled_at_the_given_gaps():
    gen = torch.Generator().manual_seed(3)
    x, dt, y = make_oscillation_data(5, 12, gen, noise=0.0)
    assert x.shape == (5, 12, 2) and dt.shape == (5, 12, 1) and y.shape == (5, 12, 1)
    # Without noise the observation at step k+1 is the target of step k.
    torch.testing.assert_close(x[:, 1:, 0], y[:, :-1, 0])
    # The second input feature is the gap to the next sample, also given as dt.
    torch.testing.assert_close(x[..., 1:], dt)
    assert bool((dt >= 0.05).all()) and bool((dt <= 0.30).all())


def test_demo_learns_and_is_deterministic():
    a = run_demo(150, seed=1)
    b = run_demo(150, seed=1)
    assert a.test_mse == b.test_mse and a.untrained_mse == b.untrained_mse
    # Training must beat the untrained network by a wide margin.
    assert a.test_mse < 0.25 * a.untrained_mse
    # The persistence baseline is computed independently here.
    gen = torch.Generator().manual_seed(1)
    make_oscillation_data(2048, 40, gen)
    tx, _, ty = make_oscillation_data(512, 40, gen)
    expected = float(((tx[..., :1] - ty)[:, WARMUP_STEPS:] ** 2).mean())
    assert a.persistence_mse == pytest.approx(expected)


def test_cli_demo_prints_json_metrics(capsys):
    assert main(["demo", "--steps", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["train_steps"] == 3 and out["cell"] == "cfc"
    assert out["test_mse"] > 0


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["demo", "--steps", "0"], "--steps must be >= 1, got 0"),
        (["demo", "--cell", "gru"], "invalid choice: 'gru'"),
        (["demo", "--steps", "many"], "invalid int value: 'many'"),
        (["launch"], "invalid choice: 'launch'"),
    ],
)
def test_cli_user_mistakes_exit_2_with_one_line(argv, fragment):
    proc = subprocess.run([sys.executable, "-m", "velora_ens", *argv],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def _subcommands(parser):
    """Every (sub)command's argv prefix, found by walking the parser."""
    import argparse

    found = [[]]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [[name, *rest] for rest in _subcommands(sub)]
    return found


def test_help_of_every_subcommand_works(capsys):
    from velora_ens.cli import _build_parser

    commands = _subcommands(_build_parser())
    assert ["bench", "synthetic"] in commands and ["train"] in commands
    for argv in commands:
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--help"])
        assert exit_.value.code == 0, argv
        assert capsys.readouterr().out.startswith("usage: velora-ens"), argv


@pytest.mark.parametrize("liquid, baseline, words", [
    (0.1765, 0.0796, "2.2x higher than persistence"),
    (0.02, 0.08, "4.0x lower than persistence"),
    (0.05, 0.05, "equal to persistence"),
])
def test_demo_wording_follows_the_numbers(liquid, baseline, words):
    from velora_ens.demo import DemoResult

    result = DemoResult("cfc", 1, 0, 1, liquid, 1.0, baseline, 0.0)
    assert result.versus_persistence() == words


def test_cli_demo_line_follows_the_numbers(capsys):
    assert main(["demo", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    liquid = float(out.split("test MSE (liquid)")[1].split()[0])
    persistence = float(out.split("test MSE (persistence)")[1].split()[0])
    assert ("higher" in out) == (liquid > persistence)  # 2 steps: worse than persistence


def test_command_line_modules_import_without_a_circle():
    """agent_cli takes its helpers from cli_options, not from cli: importing it alone
    loads neither cli nor the agents."""
    code = ("import sys, velora_ens.agent_cli; "
            "print(sorted(m for m in sys.modules if m == 'velora_ens.cli' "
            "or m.split('.')[0] in ('agents', 'envs')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_integer_option_names_the_option():
    import argparse

    from velora_ens.cli_options import integer_option

    seed = integer_option("--seed", 0)
    assert seed("0") == 0 and seed("12") == 12
    with pytest.raises(argparse.ArgumentTypeError, match=r"^--seed must be an integer, got 'x'$"):
        seed("x")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^--seed must be >= 0, got -1$"):
        seed("-1")
