"""GPU paths: run where CUDA is present, skipped cleanly otherwise."""

from __future__ import annotations

import pytest
import torch

from velora_ens.models import LiquidNCPNetwork

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("cell", ["cfc", "ltc"])
def test_cuda_matches_cpu_forward_and_gradients(cell):
    torch.manual_seed(0)
    cpu = LiquidNCPNetwork(5, 8, 2, cell=cell, seed=0).double()
    gpu = LiquidNCPNetwork(5, 8, 2, cell=cell, seed=0).double().cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    dt = torch.rand(3, 6, 1, dtype=torch.float64) + 0.1
    start = torch.zeros(3, 6)
    start[1, 3] = 1
    y_cpu, h_cpu = cpu(x, dt=dt, episode_start=start)
    y_gpu, h_gpu = gpu(x.cuda(), dt=dt.cuda(), episode_start=start.cuda())
    torch.testing.assert_close(y_gpu.cpu(), y_cpu)
    torch.testing.assert_close(h_gpu.cpu(), h_cpu)
    (y_cpu.square().sum() + h_cpu.sum()).backward()
    (y_gpu.square().sum() + h_gpu.sum()).backward()
    for (name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters(), strict=True):
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, msg=name)


@cuda
def test_neuroflow_trains_saves_and_acts_on_cuda(tmp_path):
    import numpy as np

    from agents import NeuroFlow

    agent = NeuroFlow("PendulumNoVel-v1", device="cuda", seed=0, learning_starts=32,
                      batch_size=32, seq_len=4, burn_in=2, actor_neurons=8,
                      critic_hidden=(16, 16), critic_encoder="own",
                      normalize_observations=True)
    agent.learn(80)
    assert agent.n_updates > 0 and next(agent.critics.parameters()).is_cuda
    loaded = NeuroFlow.load(agent.save(tmp_path / "a", include_buffer=True), device="cuda")
    obs = np.zeros((2, 3), np.float32)
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0],
                               agent.predict(obs, deterministic=True)[0], rtol=1e-6)
    loaded.learn(20)
    cpu = NeuroFlow.load(tmp_path / "a", device="cpu")
    assert cpu.device.type == "cpu"
