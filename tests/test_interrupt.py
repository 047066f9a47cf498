"""Interrupted training keeps its work: Ctrl-C or SIGTERM stop learn at a step boundary,
the agent saved with its buffer resumes, and the resumed run equals the uninterrupted one
bit for bit (CPU, same seed): from Python, and through `velora-ens train --resume` in a
process that is really interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from agents import LiquidPPO, NeuroFlow
from agents.common.callbacks import BaseCallback, StopTrainingOnSignal
from velora_ens.cli import main

NF = dict(learning_rate="lin_1e-3", learning_starts=32, batch_size=16, seq_len=4, burn_in=2,
          actor_neurons=8, critic_hidden=(16,), seed=0)
PPO = dict(learning_rate="lin_1e-3", clip_range="lin_0.2", n_steps=16, batch_size=16,
           n_epochs=2, actor_neurons=8, critic_neurons=8, seed=0)


class SignalAt(BaseCallback):
    """Send the process ``signum`` at the ``at``-th step (as a user pressing Ctrl-C)."""

    def __init__(self, at: int, signum: int) -> None:
        super().__init__()
        self.at, self.signum = at, signum

    def _on_step(self) -> bool:
        if self.n_calls == self.at:
            os.kill(os.getpid(), self.signum)
        return True


def state(agent) -> list[torch.Tensor]:
    return [t.detach().clone() for m in agent._persistent_modules().values()
            for t in m.state_dict().values()]


@pytest.mark.parametrize(("make", "total", "at", "signum"), [
    (lambda: NeuroFlow("CartPole-v1", **NF), 300, 137, signal.SIGTERM),
    (lambda: LiquidPPO("Pendulum-v1", **PPO), 96, 48, signal.SIGINT),  # the rollout is full
    (lambda: LiquidPPO("CartPole-v1", **PPO), 96, 37, signal.SIGINT),  # mid-rollout
])
def test_a_signal_stops_learn_cleanly_and_the_resumed_run_is_the_uninterrupted_one(
        tmp_path, make, total, at, signum):
    before = signal.getsignal(signum)
    stop = StopTrainingOnSignal()
    agent = make()
    agent.learn(total, callback=[stop, SignalAt(at, signum)])
    assert stop.received == signum and agent.num_timesteps < total
    assert signal.getsignal(signum) is before  # the handlers are put back
    agent.save(tmp_path / "interrupted", include_buffer=True)
    resumed = type(agent).load(tmp_path / "interrupted")
    resumed.learn(total - resumed.num_timesteps)  # finishes the interrupted call
    uninterrupted = make().learn(total)
    assert resumed.num_timesteps == uninterrupted.num_timesteps == total
    for a, b in zip(state(resumed), state(uninterrupted), strict=True):
        assert torch.equal(a, b)
    assert resumed.last_losses == uninterrupted.last_losses


def test_a_learn_call_of_another_length_starts_its_own_schedule(tmp_path):
    stop = StopTrainingOnSignal()
    agent = LiquidPPO("CartPole-v1", **PPO)
    agent.learn(96, callback=[stop, SignalAt(40, signal.SIGINT)])
    agent.save(tmp_path / "interrupted", include_buffer=True)
    resumed = LiquidPPO.load(tmp_path / "interrupted")
    resumed.learn(96 - resumed.num_timesteps + 16)  # not the rest of the call
    assert resumed._unfinished_learn is None and resumed.num_timesteps == 112


# ------------------------------------------------------------------ the command line
ARGS = ["--algo", "ppo", "--env", "CartPoleNoVel-v1", "--timesteps", "6144", "--eval-freq",
        "1024", "--eval-episodes", "3", "--no-video", "--no-progress"]


def velora_ens(*args: str) -> list[str]:
    return [sys.executable, "-m", "velora_ens", *args]


def test_ctrl_c_in_velora_ens_train_saves_and_resume_finishes_the_same_run(tmp_path):
    full = subprocess.run(velora_ens("train", *ARGS, "--log-dir", str(tmp_path / "full")),
                          capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr
    run = tmp_path / "int" / "CartPoleNoVel-v1_seed0_1"
    proc = subprocess.Popen(velora_ens("train", *ARGS, "--log-dir", str(tmp_path / "int")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (run / "evaluations.npz").exists():  # a first evaluation: mid-run
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    checkpoint = run / "interrupted.safetensors"
    assert f"continue with: velora-ens train --resume {checkpoint}" in out
    assert checkpoint.is_file() and not (run / "final_model.safetensors").exists()

    resumed = subprocess.run(velora_ens("train", "--resume", str(checkpoint), "--no-video",
                                        "--no-progress"),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming LiquidPPO" in resumed.stdout
    last = full.stdout.strip().splitlines()[-1]
    assert last.startswith("mean evaluation return") and resumed.stdout.strip().endswith(last)
    reference = tmp_path / "full" / "CartPoleNoVel-v1_seed0_1"
    for name in ("final_model.safetensors", "best_model.safetensors"):
        a, b = load_file(reference / name), load_file(run / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a, b = np.load(reference / "evaluations.npz"), np.load(run / "evaluations.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_resume_refuses_what_it_cannot_continue(tmp_path, capsys):
    agent = LiquidPPO("CartPole-v1", **PPO)
    agent.learn(20)
    run = tmp_path / "run"
    run.mkdir()
    agent.save(run / "model")  # without its buffer
    (run / "config.json").write_text('{"env": "CartPole-v1", "seed": 0, "n_envs": 1, '
                                     '"algo": "ppo", "timesteps": 100, "ppo": {}}')
    cases = [(["--resume", str(run / "model"), "--timesteps", "5"],
              "--timesteps cannot be given with it"),
             (["--resume", str(run / "model")], "without its replay or rollout"),
             (["--resume", str(tmp_path / "nothing.safetensors")], "no saved agent"),
             (["--resume", str(Path(__file__))], "no config.json")]
    for args, message in cases:
        assert main(["train", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and message in err, err
