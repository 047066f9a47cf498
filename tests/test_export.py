"""Deployment paths of the NCP networks: ``torch.jit.trace`` (checked against eager outputs
and gradients), the refusal of ``torch.jit.script``, and ONNX export run with onnxruntime
and checked against eager outputs to 1e-5 (skipped without the ``export`` extra)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from velora_ens.models import InferenceGraph, LiquidNCPNetwork, NCPNetwork, export_onnx

# torch 2.13 marks TorchScript (trace and script) deprecated; these tests check it still works.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

CELLS = [("cfc", "default"), ("cfc", "no_gate"), ("cfc", "pure"), ("cfc", "carry"),
         ("ltc", "default")]


def make_net(cell="cfc", mode="default", seed=0):
    torch.manual_seed(seed)
    net = LiquidNCPNetwork(4, 10, 2, cell=cell, mode=mode, seed=seed)
    if cell == "cfc":
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.3)  # masked raw entries become non-zero too
    return net


def grads(net):
    return [p.grad.detach().clone() for p in net.parameters()]


# ---------------------------------------------------------------- torch.jit.trace
@pytest.mark.parametrize("cell,mode", CELLS)
def test_traced_sequence_matches_eager_outputs_and_gradients(cell, mode):
    net = make_net(cell, mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)  # nothing the trace drops
        traced = torch.jit.trace(net, (torch.randn(2, 7, 4),))  # gradients enabled
    x = torch.randn(5, 7, 4)
    y, h = traced(x)
    y_eager, h_eager = net(x)
    torch.testing.assert_close(y, y_eager)
    torch.testing.assert_close(h, h_eager)
    # the traced graph trains like eager (whose CfC sequences use the fused scan)
    (y * torch.linspace(-1, 1, 2)).sum().backward()
    traced_grads = grads(net)
    net.zero_grad()
    (y_eager * torch.linspace(-1, 1, 2)).sum().backward()
    for a, b in zip(traced_grads, grads(net), strict=True):
        torch.testing.assert_close(a, b)
    # the trace unrolled 7 steps: another length is refused, not silently cut or padded
    with pytest.raises(RuntimeError, match="Expected 7 elements"):
        traced(torch.randn(5, 9, 4))


@pytest.mark.parametrize("cell,mode", CELLS)
@pytest.mark.parametrize("grad", [True, False])
def test_traced_step_carries_the_state_like_eager(cell, mode, grad):
    net = make_net(cell, mode)
    with torch.set_grad_enabled(grad):
        traced = torch.jit.trace(net, (torch.randn(2, 4), net.initial_state(2)))
    x = torch.randn(3, 6, 4)  # another batch size than the trace's
    with torch.no_grad():
        y_seq, h_last = net(x)
        h = net.initial_state(3)
        for t in range(6):
            y, h = traced(x[:, t], h)
            torch.testing.assert_close(y, y_seq[:, t])
    torch.testing.assert_close(h, h_last)


def test_traced_ncp_network_matches_eager():
    net = NCPNetwork(4, 10, 2, seed=0)
    traced = torch.jit.trace(net, (torch.randn(2, 4),))
    x = torch.randn(7, 4)
    torch.testing.assert_close(traced(x), net(x))


class Holder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.actor = LiquidNCPNetwork(4, 10, 2, seed=0)

    def forward(self, x):
        return self.actor(x)[0]


@pytest.mark.parametrize("make", [lambda: LiquidNCPNetwork(4, 10, 2, seed=0),
                                  lambda: LiquidNCPNetwork(4, 10, 2, cell="ltc", seed=0),
                                  lambda: NCPNetwork(4, 10, 2, seed=0), Holder],
                         ids=["cfc", "ltc", "ncp", "inside-a-model"])
def test_script_is_refused_with_what_to_use_instead(make):
    with pytest.raises(NotImplementedError) as err:
        torch.jit.script(make())
    message = str(err.value)
    assert "torch.jit.script cannot compile" in message
    assert "torch.jit.trace(net, example_inputs)" in message
    assert "velora_ens.models.export_onnx(net, path)" in message


# ---------------------------------------------------------------- the exported graph
def test_inference_graph_refuses_bad_arguments():
    net = LiquidNCPNetwork(4, 10, 2, seed=0)
    with pytest.raises(ValueError, match="LiquidNCPNetwork or an NCPNetwork, got Linear"):
        InferenceGraph(nn.Linear(2, 2))
    for steps in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"steps must be None .* got {steps!r}"):
            InferenceGraph(net, steps=steps)
    with pytest.raises(ValueError, match="elapsed_time=True needs a LiquidNCPNetwork"):
        InferenceGraph(NCPNetwork(4, 10, 2, seed=0), elapsed_time=True)
    with pytest.raises(ValueError, match="pass dt"):
        InferenceGraph(net, elapsed_time=True)(torch.zeros(1, 4), net.initial_state(1))


# ---------------------------------------------------------------- ONNX + onnxruntime
def session(path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def needs_export_extra():
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name)


@pytest.mark.parametrize("cell,mode", CELLS)
def test_onnx_step_loop_carrying_the_state_matches_eager(tmp_path, cell, mode):
    needs_export_extra()
    net = make_net(cell, mode)
    sess = session(export_onnx(net, tmp_path / "policy.onnx", elapsed_time=True))
    assert [i.name for i in sess.get_inputs()] == ["x", "h", "dt"]
    assert [o.name for o in sess.get_outputs()] == ["y", "h_new"]
    for batch in (3, 1):
        x = torch.randn(batch, 6, 4)
        dt = torch.rand(batch, 6, 1) * 2 + 0.05
        with torch.no_grad():
            y_seq, h_last = net(x, dt=dt)  # eager sequence: the fused scan for the CfC
        h = np.zeros((batch, net.hidden_size), dtype=np.float32)
        for t in range(6):
            y, h = sess.run(None, {"x": x[:, t].numpy(), "h": h, "dt": dt[:, t].numpy()})
            np.testing.assert_allclose(y, y_seq[:, t].numpy(), rtol=0, atol=1e-5)
        np.testing.assert_allclose(h, h_last.numpy(), rtol=0, atol=1e-5)


def test_onnx_step_without_elapsed_time_is_a_step_of_one(tmp_path):
    needs_export_extra()
    net = make_net("cfc", "default")
    sess = session(export_onnx(net, tmp_path / "sub" / "policy.onnx"))
    assert [i.name for i in sess.get_inputs()] == ["x", "h"]
    x, h = torch.randn(1, 4), torch.randn(1, net.hidden_size)
    with torch.no_grad():
        y_eager, h_eager = net(x, h)
    y, h_new = sess.run(None, {"x": x.numpy(), "h": h.numpy()})
    np.testing.assert_allclose(y, y_eager.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(h_new, h_eager.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("cell,steps,elapsed_time", [("cfc", 4, True), ("ltc", 3, False)])
def test_onnx_fixed_length_sequence_matches_eager(tmp_path, cell, steps, elapsed_time):
    needs_export_extra()
    net = make_net(cell)
    sess = session(export_onnx(net, tmp_path / "seq.onnx", steps=steps,
                               elapsed_time=elapsed_time))
    x, h0 = torch.randn(3, steps, 4), torch.randn(3, net.hidden_size)
    dt = torch.rand(3, steps, 1) + 0.1
    feeds = {"x": x.numpy(), "h": h0.numpy()}
    if elapsed_time:
        feeds["dt"] = dt.numpy()
    with torch.no_grad():
        y_eager, h_eager = net(x, h0, dt=dt if elapsed_time else None)
    y, h_last = sess.run(None, feeds)
    np.testing.assert_allclose(y, y_eager.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(h_last, h_eager.numpy(), rtol=0, atol=1e-5)
    feeds["x"] = torch.randn(3, steps + 1, 4).numpy()
    feeds.pop("dt", None)
    if elapsed_time:
        feeds["dt"] = np.ones((3, steps + 1, 1), dtype=np.float32)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        sess.run(None, feeds)


def test_onnx_ncp_network_matches_eager(tmp_path):
    needs_export_extra()
    net = NCPNetwork(4, 10, 2, seed=0)
    sess = session(export_onnx(net, tmp_path / "critic.onnx"))
    assert [o.name for o in sess.get_outputs()] == ["y"]
    for batch in (1, 7):
        x = torch.randn(batch, 4)
        (y,) = sess.run(None, {"x": x.numpy()})
        np.testing.assert_allclose(y, net(x).detach().numpy(), rtol=0, atol=1e-5)


def test_export_onnx_refuses_a_folder_and_keeps_the_training_mode(tmp_path):
    needs_export_extra()
    net = make_net()
    with pytest.raises(ValueError, match="must name a file, got the folder"):
        export_onnx(net, tmp_path)
    assert net.training
    export_onnx(net, tmp_path / "a.onnx")
    assert net.training


def test_the_export_guide_runs_and_its_onnx_policy_acts_like_the_agent(tmp_path, monkeypatch):
    """Every code block of docs/guide/export.md, in order, on a briefly trained agent; the
    page's last check compares the onnxruntime actions with ``agent.predict``."""
    needs_export_extra()
    import re
    from pathlib import Path

    from agents import NeuroFlow

    page = Path(__file__).resolve().parents[1] / "docs" / "guide" / "export.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert len(blocks) == 4
    monkeypatch.chdir(tmp_path)
    agent = NeuroFlow("Pendulum-v1", seed=0, learning_starts=16, batch_size=16, seq_len=4,
                      burn_in=2, actor_neurons=8, critic_hidden=(16,))
    agent.learn(40)
    agent.save("pendulum.safetensors")
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(page), "exec"), namespace)  # noqa: S102
    assert len(namespace["actions"]) == 50
    assert (tmp_path / "window.onnx").is_file() and (tmp_path / "critic.onnx").is_file()


def test_torch_export_of_the_inference_graph_matches_eager():
    net = make_net("ltc")
    graph = InferenceGraph(net)
    program = torch.export.export(graph, graph.example_inputs())
    x, h = torch.randn(2, 4), torch.randn(2, net.hidden_size)
    with torch.no_grad():
        y, h_new = program.module()(x, h)
        y_eager, h_eager = net(x, h)
    torch.testing.assert_close(y, y_eager)
    torch.testing.assert_close(h_new, h_eager)
