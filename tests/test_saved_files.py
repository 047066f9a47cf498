"""Files written by earlier code still load and behave as that code said they would.

``tests/data/*_layout0.*`` were saved by the code before the agents were laid out by
algorithm (``tests/data/make_layout0_files.py`` says how), with that code's deterministic
predictions and the digest of the networks after training on for a few steps. On the CPU
model they were recorded on the predictions and the continuation must match to the bit;
float kernels of other CPUs may round the last bit differently, so elsewhere the
predictions are compared to a tolerance and the continuation against the same file
re-saved by today's code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from data.make_layout0_files import digest  # the digest the reference was written with

from agents import LiquidPolicy, LiquidPPO, NeuroFlow, load_agent
from velora_ens.bench.report import machine

_DATA = Path(__file__).parent / "data"
_REF = json.loads((_DATA / "layout0.json").read_text())
_ON_RECORDING_CPU = machine().split(",")[0] == _REF["cpu"]


def _check_predictions(model, ref: dict) -> None:
    obs, state = np.array(ref["obs"], np.float32), None
    for t in range(len(obs)):
        action, state = model.predict(obs[t], state, deterministic=True)
        want_action = np.array(ref["actions"][t], np.float32)
        want_state = np.array(ref["states"][t], np.float32)
        if _ON_RECORDING_CPU:
            np.testing.assert_array_equal(np.asarray(action, np.float32), want_action)
            np.testing.assert_array_equal(state, want_state)
        else:
            np.testing.assert_allclose(action, want_action, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(state, want_state, rtol=1e-5, atol=1e-6)


def _continued(agent) -> str:
    agent.learn(_REF["continue_steps"])
    return digest(agent)


@pytest.mark.parametrize(("name", "cls"), [("neuroflow_layout0", NeuroFlow),
                                           ("ppo_layout0", LiquidPPO)])
def test_agents_saved_before_the_layout_load_predict_and_resume(name, cls, tmp_path):
    ref = _REF[name]
    agent = load_agent(_DATA / name)  # the class comes from the file
    assert type(agent) is cls and agent.num_timesteps == ref["num_timesteps"]
    _check_predictions(agent, ref)
    # saved with its buffer: training continues exactly as the code that wrote it did.
    # A load restores torch's global generator, so each agent trains before the next
    # one is loaded.
    if _ON_RECORDING_CPU:
        assert _continued(agent) == ref["after_continue_sha256"]
    cls.load(_DATA / name).save(tmp_path / "resaved", include_buffer=True)
    resaved = _continued(load_agent(tmp_path / "resaved"))
    assert _continued(load_agent(_DATA / name)) == resaved


def test_a_policy_saved_before_the_layout_loads_and_predicts():
    _check_predictions(LiquidPolicy.load(_DATA / "policy_layout0"), _REF["policy_layout0"])
