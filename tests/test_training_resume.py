"""Trainer resume: what is refused with one clear message and what warns (another run
length, another schedule, a finished run, a malformed checkpoint.json, another
architecture, a results_folder that is a file)."""

from __future__ import annotations

import json

import pytest
import torch
from test_training import Regressor, linear_data, params

from velora_ens.training import TensorDataset, Trainer, load_checkpoint, save_checkpoint


def trainer(folder, steps=10, resume=False, model=None, **kw):
    X, y = linear_data(96)
    torch.manual_seed(11)
    model = Regressor(hidden=16, dropout=0.2) if model is None else model
    args = dict(train_batch_size=16, train_lr=0.01, train_num_steps=steps, ema_decay=0.9,
                results_folder=folder, save_every=5, progress_bar=False, seed=1,
                warmup_steps=2)
    return Trainer(model, TensorDataset(X, y), resume=resume, **{**args, **kw})


def test_another_run_length_is_refused_under_the_cosine_schedule(tmp_path):
    trainer(tmp_path).train()
    with pytest.raises(ValueError, match=r"made with train_num_steps=10, this trainer has "
                                         r"train_num_steps=20; the cosine schedule"):
        trainer(tmp_path, steps=20, resume=True)


def test_another_run_length_warns_under_the_constant_schedule_and_continues(tmp_path):
    trainer(tmp_path / "short", schedule="constant").train()
    with pytest.warns(UserWarning, match=r"train_num_steps=20 instead of 10: with the constant "
                                         r"schedule .* now ends at step 20"):
        resumed = trainer(tmp_path / "short", steps=20, resume=True, schedule="constant")
    resumed.train()
    longer = trainer(tmp_path / "long", steps=20, schedule="constant")
    longer.train()
    assert resumed.step == 20
    for a, b in zip(params(resumed.model), params(longer.model), strict=True):
        assert torch.equal(a, b)  # the same as a run of 20 steps from the start


@pytest.mark.parametrize("change", [{"train_lr": 0.02}, {"warmup_steps": 3},
                                    {"min_lr_ratio": 0.1}, {"schedule": "constant"}])
def test_another_learning_rate_schedule_is_refused(tmp_path, change):
    trainer(tmp_path).train()
    (key, value), = change.items()
    with pytest.raises(ValueError, match=rf"made with {key}=.*this trainer has {key}="
                                         rf"{value!r}; resuming would not continue"):
        trainer(tmp_path, resume=True, **change)


def test_a_checkpoint_older_than_min_lr_ratio_still_resumes(tmp_path):
    trainer(tmp_path, steps=5).train()
    path = tmp_path / "checkpoint.json"
    record = json.loads(path.read_text())
    del record["state"]["config"]["min_lr_ratio"]
    path.write_text(json.dumps(record))
    assert trainer(tmp_path, steps=5, resume=True).step == 5


def test_a_checkpoint_of_a_liquid_network_older_than_its_wiring_seed_resumes(tmp_path):
    from velora_ens.models import LiquidNCPNetwork

    class Liquid(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = LiquidNCPNetwork(3, 8, 1, seed=0)

        def forward(self, x, y):
            return (self.net(x)[0] - y).pow(2).mean()

    trainer(tmp_path / "run", steps=5, model=Liquid()).train()
    tensors, state, step = load_checkpoint(tmp_path / "run")
    del tensors["model.net.wiring_seed"], tensors["ema.net.wiring_seed"]
    save_checkpoint(tmp_path / "old", step, tensors, state)
    assert trainer(tmp_path / "old", steps=5, model=Liquid(), resume=True).step == 5


def test_a_finished_run_warns_that_there_is_nothing_to_train(tmp_path):
    trainer(tmp_path).train()
    record = (tmp_path / "checkpoint.json").read_text()
    again = trainer(tmp_path, resume=True)
    history = list(again.history)
    with pytest.warns(UserWarning, match=r"nothing to train: the run in .* is at step 10 and "
                                         r"train_num_steps=10"):
        assert again.train() == history
    assert again.step == 10
    assert (tmp_path / "checkpoint.json").read_text() == record  # nothing written


@pytest.mark.parametrize("text,fragment", [
    ("{not json", "checkpoint.json is not valid JSON"),
    ("[1, 2]", "checkpoint.json holds a JSON list, expected an object"),
    ('{"format": "velora_ens.checkpoint/1", "step": 3}', r"lacks \['sha256', 'state', "
                                                         r"'tensors'\]"),
])
def test_a_malformed_checkpoint_json_is_named(tmp_path, text, fragment):
    trainer(tmp_path, steps=5).train()
    (tmp_path / "checkpoint.json").write_text(text)
    with pytest.raises(ValueError, match=fragment):
        load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match=fragment):
        trainer(tmp_path, steps=5, resume=True)


@pytest.mark.parametrize("hidden,fragments", [
    (8, ["other shapes: net.0.weight (16, 3) in the checkpoint, (8, 3) here"]),
    (0, ["missing: net.bias, net.weight", "unexpected: net.0.bias, net.0.weight, "
                                          "net.3.bias and 1 more"]),
])
def test_another_architecture_is_one_clear_line(tmp_path, hidden, fragments):
    trainer(tmp_path, steps=5).train()
    with pytest.raises(ValueError) as err:
        trainer(tmp_path, steps=5, resume=True, model=Regressor(hidden=hidden))
    message = str(err.value)
    assert "\n" not in message
    assert "holds another architecture (a Regressor) than this trainer's model" in message
    for fragment in fragments:
        assert fragment in message


def test_a_results_folder_that_is_a_file_is_refused_before_training(tmp_path):
    path = tmp_path / "results"
    path.write_text("not a folder")
    with pytest.raises(ValueError, match=r"results_folder must be a folder for the "
                                         r"checkpoints, got .*results', which is a file"):
        trainer(path)
    with pytest.raises(ValueError, match=r"which is inside .*results, which is a file"):
        trainer(path / "run")
    with pytest.raises(ValueError, match="folder must be a folder"):
        save_checkpoint(path, 0, {}, {})
