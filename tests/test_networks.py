"""LiquidNCPNetwork and NCPNetwork: composition, sequences, elapsed time, resets,
gradcheck, validation, seeding, configuration and the no-grad inference fast path."""

from __future__ import annotations

import json

import pytest
import torch
from liquid_reference import cfc_reference_step, ltc_reference_step, randomize_
from torch.nn import functional as F

from velora_ens.models import LiquidNCPNetwork, NCPNetwork

F64 = torch.float64
# Independent name -> function map (the network's default activation is a library choice).
ACT = {"mish": F.mish, "silu": F.silu, "tanh": torch.tanh, "relu": F.relu, "gelu": F.gelu,
       "identity": lambda v: v}
CELLS = [("cfc", "default"), ("cfc", "no_gate"), ("cfc", "pure"), ("cfc", "carry"),
         ("ltc", "default")]


def make_net(cell="cfc", mode="default", in_f=3, n=6, out=2, dtype=F64, seed=0, **kw):
    net = LiquidNCPNetwork(in_f, n, out, cell=cell, mode=mode, seed=seed, dtype=dtype, **kw)
    if cell == "cfc":
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.3)  # masked raw entries become non-zero too
    return net


def explicit_forward_step(net, x, h, dt=None):
    """inter -> activation -> command cell equations -> motor, from raw weights and the
    wiring."""
    masks, _ = net.wiring.data()
    w_inter = net.inter.weight * masks.inter.t().abs().to(x.dtype)
    u = ACT[net.get_config()["activation"]](x @ w_inter.t() + net.inter.bias)
    if net.cell_type == "cfc":
        h_new = cfc_reference_step(net.command, masks.command, masks.recurrent, u, h, dt)
    else:
        h_new = ltc_reference_step(net.command, masks.command, masks.recurrent, u, h, dt)
    w_motor = net.motor.weight * masks.motor.t().abs().to(x.dtype)
    return h_new @ w_motor.t() + net.motor.bias, h_new


@pytest.mark.parametrize("cell,mode", CELLS)
@pytest.mark.parametrize("activation", [None, "mish", "tanh"])
def test_structure_and_explicit_composition(cell, mode, activation):
    kw = {} if activation is None else {"activation": activation}
    net = make_net(cell, mode, 4, 10, 3, **kw)
    if activation is not None:
        assert net.get_config()["activation"] == activation
    masks, counts = net.wiring.data()
    assert net.hidden_size == counts.command == 4
    assert (net.inter.in_features, net.inter.out_features) == (4, counts.inter)
    assert (net.command.in_features, net.command.n_hidden) == (counts.inter, counts.command)
    assert (net.motor.in_features, net.motor.out_features) == (counts.command, 3)
    x = torch.randn(5, 4, dtype=F64)
    h = torch.randn(5, 4, dtype=F64)
    dt = torch.rand(5, 1, dtype=F64) * 2
    y, h_new = net(x, h, dt=dt)
    assert tuple(y.shape) == (5, 3) and tuple(h_new.shape) == (5, 4)
    ry, rh = explicit_forward_step(net, x, h, dt)
    torch.testing.assert_close(y, ry)
    torch.testing.assert_close(h_new, rh)
    # default state is zero
    zero = torch.zeros(5, 4, dtype=F64)
    torch.testing.assert_close(net(x)[0], explicit_forward_step(net, x, zero)[0])


@pytest.mark.parametrize("cell,mode", CELLS)
def test_sequence_equals_step_loop(cell, mode):
    net = make_net(cell, mode)
    B, L = 3, 5
    x = torch.randn(B, L, 3, dtype=F64)
    h0 = torch.randn(B, net.hidden_size, dtype=F64)
    dt = torch.rand(B, L, 1, dtype=F64) * 2 + 0.1
    starts = torch.zeros(B, L, dtype=torch.bool)
    starts[1, 2] = starts[0, 0] = True
    ys, h_last = net(x, h0, dt=dt, episode_start=starts)
    assert tuple(ys.shape) == (B, L, 2)
    h = h0
    for t in range(L):
        yt, h = net(x[:, t], h, dt=dt[:, t], episode_start=starts[:, t])
        torch.testing.assert_close(ys[:, t], yt)
    torch.testing.assert_close(h_last, h)


@pytest.mark.parametrize("cell,mode", CELLS)
def test_dt_per_sample_when_batch_equals_hidden(cell, mode):
    net = make_net(cell, mode, 3, 10, 2)
    B = net.hidden_size
    x = torch.randn(B, 3, dtype=F64)
    h = torch.randn(B, B, dtype=F64)
    dt = torch.linspace(0.1, 3.0, B, dtype=F64).unsqueeze(1)
    y, hn = net(x, h, dt=dt)
    for b in range(B):
        yb, hb = net(x[b:b + 1], h[b:b + 1], dt=dt[b:b + 1])
        torch.testing.assert_close(y[b:b + 1], yb)
        torch.testing.assert_close(hn[b:b + 1], hb)
    # sequences: (B, L, 1) per sample and step
    xs = torch.randn(B, 3, 3, dtype=F64)
    dts = torch.rand(B, 3, 1, dtype=F64) * 2
    ys, _ = net(xs, h, dt=dts)
    for b in range(B):
        torch.testing.assert_close(ys[b:b + 1], net(xs[b:b + 1], h[b:b + 1], dt=dts[b:b + 1])[0])


@pytest.mark.parametrize("cell,mode", CELLS)
def test_reset_zeroes_exactly_flagged_samples(cell, mode):
    net = make_net(cell, mode)
    B = 4
    x = torch.randn(B, 3, dtype=F64)
    h = torch.randn(B, net.hidden_size, dtype=F64)
    flags = torch.tensor([False, True, False, True])
    y, hn = net(x, h, episode_start=flags)
    y0, h0n = net(x[flags], torch.zeros(2, net.hidden_size, dtype=F64))
    y1, h1n = net(x[~flags], h[~flags])
    torch.testing.assert_close(y[flags], y0)
    torch.testing.assert_close(hn[flags], h0n)
    torch.testing.assert_close(y[~flags], y1)
    torch.testing.assert_close(hn[~flags], h1n)


def test_fused_network_gradients_equal_reference():
    """Network-level BPTT through the fused scan equals the plain autograd loop."""
    net = make_net("cfc", "default", 3, 8, 2)
    B, L = 3, 6
    x = torch.randn(B, L, 3, dtype=F64)
    h0 = torch.randn(B, net.hidden_size, dtype=F64)
    dt = torch.rand(B, L, 1, dtype=F64) + 0.2
    starts = torch.zeros(B, L)
    starts[2, 3] = 1

    def run(fused):
        net.zero_grad()
        xx, hh = x.clone().requires_grad_(True), h0.clone().requires_grad_(True)
        u = net._act(net.inter(xx))
        states, h_last = net.command(u, hh, dt, starts, fused=fused)
        y = net.motor(states)
        (y.pow(2).sum() + h_last.sum()).backward()
        g = {n: p.grad.clone() for n, p in net.named_parameters()}
        return y.detach(), g, xx.grad, hh.grad

    yf, gf, xf, hf = run(True)
    yr, gr, xr, hr = run(False)
    torch.testing.assert_close(yf, yr)
    torch.testing.assert_close(xf, xr)
    torch.testing.assert_close(hf, hr)
    for n in gf:
        torch.testing.assert_close(gf[n], gr[n], msg=n)
    # and the network's own forward is the fused one
    net.zero_grad()
    ys, h_last = net(x, h0, dt=dt, episode_start=starts)
    (ys.pow(2).sum() + h_last.sum()).backward()
    for n, p in net.named_parameters():
        torch.testing.assert_close(p.grad, gf[n], msg=n)


# ----------------------------------------------------------------- gradcheck (8)
@pytest.mark.parametrize("cell,mode", [("cfc", "default"), ("cfc", "no_gate"),
                                       ("cfc", "pure"), ("ltc", "default")])
def test_gradcheck_tiny_network(cell, mode):
    kw = {"ode_unfolds": 2} if cell == "ltc" else {}
    net = make_net(cell, mode, 2, 4, 1, **kw)
    B, L = 2, 3
    x = torch.randn(B, L, 2, dtype=F64, requires_grad=True)
    h0 = torch.randn(B, net.hidden_size, dtype=F64, requires_grad=True)
    dt = torch.rand(B, L, 1, dtype=F64) + 0.3
    starts = torch.tensor([[0, 0, 1], [0, 1, 0]], dtype=torch.bool)
    names = [n for n, _ in net.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in net.named_parameters())

    def fn(x, h0, *ps):
        y, h = torch.func.functional_call(net, dict(zip(names, ps, strict=True)), (x, h0),
                                          {"dt": dt, "episode_start": starts})
        return y, h

    assert torch.autograd.gradcheck(fn, (x, h0) + params)


def test_gradcheck_network_wrt_dt():
    for cell in ("cfc", "ltc"):
        net = make_net(cell, "default", 2, 4, 1, **({"ode_unfolds": 2} if cell == "ltc" else {}))
        x = torch.randn(2, 3, 2, dtype=F64)
        h0 = torch.randn(2, net.hidden_size, dtype=F64)
        dt = (torch.rand(2, 3, 1, dtype=F64) + 0.3).requires_grad_(True)
        assert torch.autograd.gradcheck(lambda d, n=net, x=x, h=h0: n(x, h, dt=d)[0], (dt,))


# ---------------------------------------------------------------- validation (9)
@pytest.mark.parametrize(
    "call,fragments",
    [
        (lambda n: n(torch.randn(2, 5)), ["4", "(2, 5)"]),
        (lambda n: n(torch.randn(4)), ["(4,)", "rank 1"]),
        (lambda n: n(torch.randn(1, 2, 3, 4)), ["(1, 2, 3, 4)", "rank 4"]),
        (lambda n: n(torch.randn(2, 4), torch.randn(2, 5)), ["(2, 4)", "(2, 5)"]),
        (lambda n: n(torch.randn(2, 4), torch.randn(2, 4, 1)), ["(2, 4)", "(2, 4, 1)"]),
        (lambda n: n(torch.randn(3, 6, 4), torch.randn(2, 4)), ["(3, 4)", "(2, 4)"]),
        (lambda n: n(torch.randn(2, 4), dt=torch.ones(2, 3)), ["dt", "(2, 3)"]),
        (lambda n: n(torch.randn(2, 6, 4), dt=torch.ones(2, 5, 1)), ["dt", "(2, 5, 1)"]),
        (lambda n: n(torch.randn(2, 4), episode_start=torch.zeros(5)), ["(5,)", "(2,)"]),
        (lambda n: n(torch.randn(2, 6, 4), episode_start=torch.zeros(2, 3)), ["(2, 3)", "(2, 6)"]),
    ],
)
@pytest.mark.parametrize("cell", ["cfc", "ltc"])
@pytest.mark.parametrize("grad", [True, False])
def test_bad_inputs_raise_value_error(call, fragments, cell, grad):
    net = LiquidNCPNetwork(4, 10, 1, cell=cell, seed=0)
    with torch.set_grad_enabled(grad), pytest.raises(ValueError) as info:
        call(net)
    msg = str(info.value)
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"


@pytest.mark.parametrize(
    "kwargs,fragments",
    [
        ({"sparsity_level": 1.0}, ["sparsity_level", "1.0"]),
        ({"sparsity_level": -0.2}, ["sparsity_level", "-0.2"]),
        ({"cell": "lstm"}, ["cell", "'lstm'"]),
        ({"mode": "turbo"}, ["mode", "'turbo'"]),
        ({"activation": "swish2"}, ["activation", "'swish2'"]),
    ],
)
def test_bad_construction_raises(kwargs, fragments):
    with pytest.raises(ValueError) as info:
        LiquidNCPNetwork(4, 10, 1, **kwargs)
    for f in fragments:
        assert f in str(info.value), str(info.value)


def test_too_few_neurons_for_outputs():
    for cls in (LiquidNCPNetwork, NCPNetwork):
        with pytest.raises(ValueError) as info:
            cls(4, 3, 5)
        assert "n_neurons=3" in str(info.value) and "out_features=5" in str(info.value)
    with pytest.raises(ValueError, match="activation.*'nope'"):
        NCPNetwork(4, 10, 1, activation="nope")


# ------------------------------------------------------------ seeding/config (10)
@pytest.mark.parametrize("cell", ["cfc", "ltc"])
def test_same_torch_seed_same_network(cell):
    x = torch.randn(3, 2, 4)
    torch.manual_seed(42)
    a = LiquidNCPNetwork(4, 10, 2, cell=cell)
    torch.manual_seed(42)
    b = LiquidNCPNetwork(4, 10, 2, cell=cell)
    torch.manual_seed(43)
    c = LiquidNCPNetwork(4, 10, 2, cell=cell)
    ya, ha = a(x)
    yb, hb = b(x)
    assert torch.equal(ya, yb) and torch.equal(ha, hb)
    assert a.wiring.seed == b.wiring.seed
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb)
    assert not torch.allclose(ya, c(x)[0])


@pytest.mark.parametrize("cell,mode", CELLS)
def test_get_config_round_trip(cell, mode):
    net = LiquidNCPNetwork(4, 10, 2, cell=cell, mode=mode, sparsity_level=0.3,
                           activation="tanh")
    cfg = json.loads(json.dumps(net.get_config()))
    other = LiquidNCPNetwork(**cfg)
    assert other.get_config() == net.get_config()
    for k in ("inter", "command", "motor", "recurrent"):
        assert torch.equal(getattr(net.wiring.masks, k), getattr(other.wiring.masks, k))
    other.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(other(x)[0], net(x)[0])


def test_sign_constrained_network():
    torch.manual_seed(0)
    net = LiquidNCPNetwork(4, 12, 2, sign_constrained=True, seed=3)
    assert net.get_config()["sign_constrained"] is True
    masks, counts = net.wiring.data()
    pol = masks.command.t().float()
    opt = torch.optim.Adam(net.parameters(), lr=0.3)
    x = torch.randn(8, 3, 4)
    H = counts.command
    for _ in range(10):
        ys, _ = net(x)
        w = net.command.effective_input_weight()
        loss = ys.pow(2).sum() + (w[: 2 * H] * pol.repeat(2, 1)).sum() * 5
        opt.zero_grad()
        loss.backward()
        opt.step()
        w = net.command.effective_input_weight().detach()
        assert (w[: 2 * H] * pol.repeat(2, 1) >= 0).all()
        assert (w[: 2 * H][pol.repeat(2, 1) == 0] == 0).all()


# ------------------------------------------------------------ fast path (11)
@pytest.mark.parametrize("mode", ["default", "no_gate", "pure"])
def test_no_grad_step_equals_grad_step_and_tracks_optimizer(mode):
    torch.manual_seed(0)
    net = LiquidNCPNetwork(4, 10, 2, mode=mode, seed=1)
    x = torch.randn(3, 4)
    h = torch.randn(3, net.hidden_size)
    with torch.no_grad():
        y0, h0 = net(x, h)
    yg, hg = net(x, h)
    torch.testing.assert_close(y0, yg.detach())
    torch.testing.assert_close(h0, hg.detach())
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(2):
        opt.zero_grad()
        net(x, h)[0].pow(2).sum().backward()
        opt.step()
        with torch.no_grad():
            y1, h1 = net(x, h)
        assert not torch.allclose(y1, y0)
        yg, hg = net(x, h)
        torch.testing.assert_close(y1, yg.detach())
        torch.testing.assert_close(h1, hg.detach())
        y0 = y1
    with torch.inference_mode():
        yi, hi = net(x, h)
    torch.testing.assert_close(yi.clone(), y1)
    # load_state_dict invalidates the cache as well
    fresh = LiquidNCPNetwork(4, 10, 2, mode=mode, seed=1)
    net.load_state_dict(fresh.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(net(x, h)[0], fresh(x, h)[0])


def test_no_grad_step_tracks_in_place_data_update():
    """A soft target update written ``p.data.mul_(...).add_(...)`` (common in RL code)
    must be seen by the next ``torch.no_grad`` call."""
    torch.manual_seed(0)
    net = LiquidNCPNetwork(4, 10, 2, seed=1)
    src = LiquidNCPNetwork(4, 10, 2, seed=1)
    x, h = torch.randn(3, 4), torch.randn(3, net.hidden_size)
    with torch.no_grad():
        net(x, h)
    for tp, sp in zip(net.parameters(), src.parameters(), strict=True):
        tp.data.mul_(0.5).add_(0.5 * sp.data)
    expected = net(x, h)[0].detach()  # grad-enabled: recomputes the masked weights
    with torch.no_grad():
        torch.testing.assert_close(net(x, h)[0], expected)


def test_network_accepts_other_dtypes_and_numpy():
    import numpy as np

    net = LiquidNCPNetwork(4, 10, 2, seed=0)
    x = np.random.randn(2, 4)
    y, h = net(x)
    assert y.dtype == torch.float32 and tuple(y.shape) == (2, 2)
    torch.testing.assert_close(y, net(torch.as_tensor(x, dtype=torch.float32))[0])


# ------------------------------------------------------------------ NCPNetwork
@pytest.mark.parametrize("activation", [None, "mish", "relu"])
def test_ncp_network_explicit(activation):
    kw = {} if activation is None else {"activation": activation}
    net = NCPNetwork(4, 10, 3, seed=2, dtype=F64, **kw)
    act = ACT[net.get_config()["activation"]]
    randomize_(net)
    masks, _ = net.wiring.data()
    x = torch.randn(5, 4, dtype=F64)

    def lin(layer, m, v):
        return v @ (layer.weight * m.t().abs().to(F64)).t() + layer.bias

    ref = lin(net.motor, masks.motor, act(lin(net.command, masks.command,
                                              act(lin(net.inter, masks.inter, x)))))
    torch.testing.assert_close(net(x), ref)
    xs = torch.randn(2, 3, 4, dtype=F64)
    assert tuple(net(xs).shape) == (2, 3, 3)
    with pytest.raises(ValueError, match=r"\(2, 5\)"):
        net(torch.randn(2, 5, dtype=F64))
    with pytest.raises(ValueError, match="rank 1"):
        net(torch.randn(4, dtype=F64))
    cfg = json.loads(json.dumps(net.get_config()))
    assert torch.equal(NCPNetwork(**cfg).wiring.masks.inter, masks.inter)


@pytest.mark.parametrize("cell", ["cfc", "ltc"])
def test_return_states_gives_the_state_after_every_step(cell):
    net = LiquidNCPNetwork(3, 8, 2, cell=cell, seed=0)
    x = torch.randn(4, 6, 3)
    start = torch.zeros(4, 6)
    start[2, 3] = 1
    y, states = net(x, episode_start=start, return_states=True)
    y_last, h_last = net(x, episode_start=start)
    torch.testing.assert_close(y, y_last)
    assert states.shape == (4, 6, net.hidden_size)
    torch.testing.assert_close(states[:, -1], h_last)
    h = None
    for t in range(6):
        _, h = net(x[:, t], h, episode_start=start[:, t])
        torch.testing.assert_close(states[:, t], h)


@pytest.mark.parametrize("cell", ["cfc", "ltc"])
@pytest.mark.parametrize("grad", [True, False])
def test_final_state_is_forwards_last_state_without_outputs(cell, grad):
    net = LiquidNCPNetwork(3, 8, 2, cell=cell, seed=1)
    x = torch.randn(4, 5, 3)
    h0 = torch.randn(4, net.hidden_size)
    start = torch.zeros(4, 5)
    start[1, 2] = 1
    with torch.set_grad_enabled(grad):
        _, h_last = net(x, h0, episode_start=start)
        state = net.final_state(x, h0, episode_start=start)
    assert torch.equal(state, h_last)
    calls = []
    net.motor.register_forward_hook(lambda *args: calls.append(1))
    net.final_state(x, h0)
    assert calls == []  # the motor layer is not run


def test_liquid_actor_final_state_is_its_networks():
    import gymnasium as gym

    from agents import LiquidActor

    actor = LiquidActor(3, gym.spaces.Box(-1, 1, (2,)), 8, seed=0)
    x, start = torch.randn(2, 4, 3), torch.zeros(2, 4)
    start[0, 1] = 1
    _, h_last = actor(x, episode_start=start)
    assert torch.equal(actor.final_state(x, episode_start=start), h_last)
