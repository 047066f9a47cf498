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
