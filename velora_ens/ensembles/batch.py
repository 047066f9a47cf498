"""BatchEnsemble (Wen, Tran & Ba, 2020) and the plain ensemble transformation.

A BatchEnsemble layer shares one weight ``W`` between ``E`` members and gives member
``i`` the rank-1 modulation ``W_i = W * (s_i r_i^T)`` (``r`` scales the inputs, ``s`` the
outputs, in PyTorch's ``(out, in)`` layout) and its own bias. Inputs are **member-major**
tiles: rows ``[i B, (i + 1) B)`` of an ``(E B, ...)`` batch belong to member ``i``.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F

from velora_ens._validation import check_int
from velora_ens.ensembles._inputs import as_batch, first_floating, shape_text

__all__ = [
    "BatchEnsembleConv2d",
    "BatchEnsembleLinear",
    "batchensemble",
    "ensemble",
    "ensemble_outputs",
    "fast_weight_param_groups",
]

_INITS = ("normal", "random_sign")


def _check_options(init: str, r_std: float, s_std: float) -> None:
    if init not in _INITS:
        raise ValueError(f"init must be one of {_INITS}, got {init!r}")
    for name, std in (("r_std", r_std), ("s_std", s_std)):
        if init == "normal" and not std > 0:
            raise ValueError(f"{name} must be > 0, got {std!r}")


class _BatchEnsembleBase(nn.Module):
    """Fast weights ``r (E, in)``, ``s (E, out)``, per-member bias ``(E, out)``.

    ``_active`` (``None``: all members) is the ``[start, stop)`` range of members that the
    input's rows belong to, set by a ``batchensemble`` model that runs its members in
    several passes."""

    weight: nn.Parameter
    _active: tuple[int, int] | None = None

    def _setup(self, base: nn.Module, num_members: int, in_size: int, out_size: int,
               use_base_weights: bool, init: str, r_mean: float, r_std: float,
               s_mean: float, s_std: float) -> None:
        self.num_members = check_int("num_members", num_members, 1)
        _check_options(init, r_std, s_std)
        self.init, self.use_base_weights = init, bool(use_base_weights)
        self.r_mean, self.r_std, self.s_mean, self.s_std = r_mean, r_std, s_mean, s_std
        w = base.weight.detach()
        self.weight = nn.Parameter(w.clone() if use_base_weights else torch.empty_like(w))
        self.r = nn.Parameter(w.new_empty(self.num_members, in_size))
        self.s = nn.Parameter(w.new_empty(self.num_members, out_size))
        has_bias = base.bias is not None
        self.bias = nn.Parameter(w.new_zeros(self.num_members, out_size)) if has_bias else None
        self._base_bias = base.bias.detach().clone() if has_bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if not self.use_base_weights:
                nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
            if self.bias is not None:
                if self.use_base_weights and self._base_bias is not None:
                    self.bias.copy_(self._base_bias.expand_as(self.bias))
                else:
                    self.bias.zero_()
            for p, mean, std in ((self.r, self.r_mean, self.r_std),
                                 (self.s, self.s_mean, self.s_std)):
                if self.init == "normal":
                    p.normal_(mean, std)
                else:
                    p.bernoulli_(0.5).mul_(2.0).sub_(1.0)

    def _num_active(self) -> int:
        return self.num_members if self._active is None else self._active[1] - self._active[0]

    def _members(self, x: torch.Tensor) -> int:
        e = self._num_active()
        if x.shape[0] % e:
            what = ("num_members" if self._active is None
                    else f"the members {self._active[0]}..{self._active[1] - 1} of this pass")
            raise ValueError(f"{type(self).__name__} expects a member-major batch of "
                             f"{what} * B = {e} * B rows, got {x.shape[0]} rows")
        return x.shape[0] // e

    def _rows(self) -> str:
        """What the rows of an input are, for an error message."""
        return (f"(E = {self._num_active()} members' rows, member-major: a batchensemble "
                "model tiles its (B, ...) input)")

    def _shape_text(self, x: torch.Tensor) -> str:
        """``x``'s shape, the rows written ``E*B`` where they split into the members'."""
        e = self._num_active()
        if x.dim() < 2 or x.shape[0] % e:
            return str(tuple(x.shape))
        return shape_text((f"{e}*{x.shape[0] // e}",) + tuple(x.shape[1:]))

    def _fast_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``r``, ``s`` and bias of the active members."""
        if self._active is None:
            return self.r, self.s, self.bias
        a, b = self._active
        return self.r[a:b], self.s[a:b], None if self.bias is None else self.bias[a:b]

    def fast_parameters(self) -> list[nn.Parameter]:
        """The per-member parameters ``r``, ``s`` and bias."""
        return [p for p in (self.r, self.s, self.bias) if p is not None]


class BatchEnsembleLinear(_BatchEnsembleBase):
    """BatchEnsemble version of an ``nn.Linear``: ``(E B, ..., in) -> (E B, ..., out)``.

    Args:
        base_layer: the ``nn.Linear`` whose sizes (and, with ``use_base_weights``, whose
            weight and bias) are taken.
        num_members: ensemble size ``E``.
        use_base_weights: start from the base layer's weight and bias (e.g. pre-trained)
            instead of a fresh ``kaiming_uniform_`` weight and zero biases.
        init: ``"normal"`` (``r ~ N(r_mean, r_std)``, ``s ~ N(s_mean, s_std)``) or
            ``"random_sign"`` (+-1 with probability 1/2).
    """

    def __init__(self, base_layer: nn.Linear, num_members: int = 1, use_base_weights: bool = False,
                 init: str = "normal", r_mean: float = 1.0, r_std: float = 0.5,
                 s_mean: float = 1.0, s_std: float = 0.5) -> None:
        super().__init__()
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self._setup(base_layer, num_members, self.in_features, self.out_features,
                    use_base_weights, init, r_mean, r_std, s_mean, s_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[-1] != self.in_features:
            raise ValueError(f"BatchEnsembleLinear expected input (E*B, ..., {self.in_features}) "
                             f"{self._rows()}, got {self._shape_text(x)}")
        b = self._members(x)
        r, s, bias = self._fast_weights()
        e = r.shape[0]
        xe = x.reshape(e, -1, self.in_features)  # (E, B * ..., in)
        y = F.linear(xe * r.unsqueeze(1), self.weight)
        if bias is not None:  # y * s + bias in one fused op
            y = torch.addcmul(bias.unsqueeze(1), y, s.unsqueeze(1))
        else:
            y = y * s.unsqueeze(1)
        return y.reshape((e * b,) + x.shape[1:-1] + (self.out_features,))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"num_members={self.num_members}, bias={self.bias is not None}")


class BatchEnsembleConv2d(_BatchEnsembleBase):
    """BatchEnsemble version of an ``nn.Conv2d``: ``(E B, C_in, H, W) -> (E B, C_out, H', W')``;
    ``r`` scales the input channels and ``s`` the output channels (same arguments as
    :class:`BatchEnsembleLinear`)."""

    def __init__(self, base_layer: nn.Conv2d, num_members: int = 1, use_base_weights: bool = False,
                 init: str = "normal", r_mean: float = 1.0, r_std: float = 0.5,
                 s_mean: float = 1.0, s_std: float = 0.5) -> None:
        super().__init__()
        self.in_channels, self.out_channels = base_layer.in_channels, base_layer.out_channels
        self.conv_kwargs = {"stride": base_layer.stride, "padding": base_layer.padding,
                            "dilation": base_layer.dilation, "groups": base_layer.groups}
        if base_layer.padding_mode != "zeros":
            raise ValueError(f"BatchEnsembleConv2d supports padding_mode='zeros', got "
                             f"{base_layer.padding_mode!r}")
        self._setup(base_layer, num_members, self.in_channels, self.out_channels,
                    use_base_weights, init, r_mean, r_std, s_mean, s_std)

    def member_weights(self, r: torch.Tensor | None = None,
                       s: torch.Tensor | None = None) -> torch.Tensor:
        """``(E, C_out, C_in / groups, kH, kW)``: member ``i``'s kernel ``W * (s_i r_i^T)``
        (of the members whose ``r`` and ``s`` rows are given; default all).

        With ``groups > 1``, output channel ``o`` of group ``g`` sees input channels
        ``[g C_in / groups, (g + 1) C_in / groups)``, so ``r`` is laid out per group."""
        r = self.r if r is None else r
        s = self.s if s is None else s
        e, g = r.shape[0], self.conv_kwargs["groups"]
        co, ci = self.out_channels, self.in_channels
        r = r.view(e, g, 1, ci // g).expand(e, g, co // g, ci // g).reshape(e, co, ci // g)
        scale = s.unsqueeze(-1) * r  # (E, C_out, C_in / groups)
        return self.weight.unsqueeze(0) * scale[..., None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One convolution per member with its own kernel ``W * (s_i r_i^T)`` and bias, on
        that member's rows (views of ``x``): the same function as ``s * conv(x * r) + bias``
        without the three passes over the activations (and their backward) that the
        rank-1 scalings cost; only the member outputs are concatenated."""
        if x.dim() != 4:
            raise ValueError(f"BatchEnsembleConv2d expects (E*B, C, H, W), got {tuple(x.shape)}")
        b = self._members(x)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"BatchEnsembleConv2d expects {self.in_channels} input channels, "
                             f"got {x.shape[1]} (input shape {tuple(x.shape)})")
        r, s, bias = self._fast_weights()
        e = r.shape[0]
        weights = self.member_weights(r, s)
        biases = bias if bias is not None else (None,) * e
        if e == 1:  # no split: its backward would copy the input's gradient
            return F.conv2d(x, weights[0], biases[0], **self.conv_kwargs)
        rows = x.split(b, 0) if b else (x,) * e
        outs = [F.conv2d(xi, wi, bi, **self.conv_kwargs)
                for xi, wi, bi in zip(rows, weights, biases, strict=True)]
        return torch.cat(outs, 0)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"num_members={self.num_members}, bias={self.bias is not None}")


def _tile(x: torch.Tensor, e: int) -> torch.Tensor:
    """``(B, ...) -> (e B, ...)``, member-major."""
    return x if e == 1 else x.repeat((e,) + (1,) * (x.dim() - 1))


def _batch_argument(model: nn.Module, args: tuple) -> torch.Tensor:
    """The batch, the first argument: a numpy array becomes a tensor, a floating tensor
    takes the model's dtype and device (integer inputs, e.g. token ids, pass as given)."""
    x = as_batch(args[0], type(model).__name__, first_floating(model),
                 allow_empty=True) if args else None
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        got = type(x).__name__ if not isinstance(x, torch.Tensor) else "a 0-d tensor"
        raise ValueError(f"a batchensemble model takes the batch (B, ...) as its first "
                         f"argument, a tensor or array, got {got}")
    return x


def _tile_input(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook: tile the first argument ``(B, ...) -> (E B, ...)`` member-major."""
    x = _batch_argument(module, args)
    module._be_batch = x.shape[0]
    return (_tile(x, int(module.num_members)),) + tuple(args[1:]), kwargs


def _split_output(module: nn.Module, args: tuple, kwargs: dict, output):
    """Forward hook: reshape every ``(E B, ...)`` output tensor to ``(E, B, ...)``."""
    e, b = int(module.num_members), module._be_batch

    def split(t):
        if isinstance(t, torch.Tensor) and t.dim() >= 1 and t.shape[0] == e * b:
            return t.reshape((e, b) + t.shape[1:])
        if isinstance(t, tuple):
            return tuple(split(u) for u in t)
        if isinstance(t, list):
            return [split(u) for u in t]
        return t

    return split(output)


def _merge_passes(outs: list, sizes: list[int], b: int):
    """Join the passes' outputs (``(k_j B, ...)`` tensors, possibly in tuples / lists) into
    ``(E, B, ...)`` tensors."""
    first = outs[0]
    if isinstance(first, torch.Tensor):
        if not all(isinstance(o, torch.Tensor) and o.dim() >= 1 and o.shape[0] == k * b
                   for o, k in zip(outs, sizes, strict=True)):
            shapes = [tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__
                      for o in outs]
            raise ValueError(f"members_per_pass: every output tensor must have the pass's "
                             f"members_in_pass * B rows (B = {b}, members in the passes "
                             f"{sizes}) to be joined, got shapes {shapes}")
        return torch.cat([o.reshape((k, b) + o.shape[1:])
                          for o, k in zip(outs, sizes, strict=True)], 0)
    if isinstance(first, (tuple, list)) and all(len(o) == len(first) for o in outs):
        merged = [_merge_passes([o[i] for o in outs], sizes, b) for i in range(len(first))]
        return merged if isinstance(first, list) else tuple(merged)
    raise ValueError(f"members_per_pass: cannot join outputs of type {type(first).__name__} "
                     f"across passes; return tensors (or tuples / lists of tensors)")


def _forward_in_passes(model: nn.Module, *args, **kwargs):
    """``model.forward`` when ``members_per_pass < num_members``: run the class's forward
    once per group of members on that group's tiles and join the outputs to
    ``(E, B, ...)``."""
    x = _batch_argument(model, args)
    e, k, b = int(model.num_members), model._be_members_per_pass, x.shape[0]
    layers = [m for m in model.modules() if isinstance(m, _BatchEnsembleBase)]
    outs, sizes = [], []
    try:
        for start in range(0, e, k):
            stop = min(start + k, e)
            for layer in layers:
                layer._active = (start, stop)
            outs.append(type(model).forward(model, _tile(x, stop - start), *args[1:], **kwargs))
            sizes.append(stop - start)
    finally:
        for layer in layers:
            layer._active = None
    return _merge_passes(outs, sizes, b)


def batchensemble(
    base: nn.Module,
    num_members: int = 1,
    use_base_weights: bool = False,
    init: str = "normal",
    r_mean: float = 1.0,
    r_std: float = 0.5,
    s_mean: float = 1.0,
    s_std: float = 0.5,
    members_per_pass: int | None = None,
) -> nn.Module:
    """A BatchEnsemble copy of ``base`` (the base is not modified).

    The copy keeps ``base``'s class; every ``nn.Linear`` becomes a
    :class:`BatchEnsembleLinear` and every ``nn.Conv2d`` a :class:`BatchEnsembleConv2d`.
    Calling it with a ``(B, ...)`` batch tiles the batch member-major to ``(E B, ...)``
    and returns ``(E, B, ...)`` (every tensor output whose first dimension is ``E B``),
    in training and in evaluation alike; ``num_members`` is kept as a buffer in the
    state dict. Other layers (normalisation, liquid cells, ...) are shared and see the
    tiled batch. Arguments as in :class:`BatchEnsembleLinear`.

    ``members_per_pass=k < num_members`` runs the network ``ceil(E / k)`` times, each
    time on ``k`` members' tiles (``k B`` rows), and joins the outputs: the same function
    when the network treats rows independently, with activations ``E / k`` times smaller
    (on a CPU, large tiled activations cost more per row; see the docs). Networks with
    ``BatchNorm`` are refused (their batch statistics would change), random layers such
    as dropout draw in another order, and every output tensor must have the rows of the
    members. ``None`` (default): all members in one tiled pass.
    """
    num_members = check_int("num_members", num_members, 1)
    _check_options(init, r_std, s_std)
    if members_per_pass is not None:
        members_per_pass = check_int("members_per_pass", members_per_pass, 1)
        if members_per_pass > num_members:
            raise ValueError(f"members_per_pass must be in [1, num_members = {num_members}] "
                             f"or None, got {members_per_pass}")
    if not isinstance(base, nn.Module):
        raise ValueError(f"base must be an nn.Module, got {type(base).__name__}")
    passes = members_per_pass is not None and members_per_pass < num_members
    if passes:
        for name, m in base.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                raise ValueError(f"members_per_pass={members_per_pass} < num_members="
                                 f"{num_members} would change the batch statistics of "
                                 f"{name or 'the model'} ({type(m).__name__}); use "
                                 "members_per_pass=None (one tiled pass)")
    model = copy.deepcopy(base)
    kw = {"num_members": num_members, "use_base_weights": use_base_weights, "init": init,
          "r_mean": r_mean, "r_std": r_std, "s_mean": s_mean, "s_std": s_std}
    replaced = 0

    def convert(parent: nn.Module) -> None:
        nonlocal replaced
        for name, child in parent.named_children():
            if type(child) is nn.Linear:
                setattr(parent, name, BatchEnsembleLinear(child, **kw))
                replaced += 1
            elif type(child) is nn.Conv2d:
                setattr(parent, name, BatchEnsembleConv2d(child, **kw))
                replaced += 1
            else:
                convert(child)

    if type(model) in (nn.Linear, nn.Conv2d):
        holder = nn.Sequential(model)
        convert(holder)
        model = holder
    else:
        convert(model)
    if replaced == 0:
        raise ValueError(f"{type(base).__name__} has no nn.Linear or nn.Conv2d layer to turn "
                         "into a BatchEnsemble layer")
    model.register_buffer("num_members", torch.tensor(num_members))
    if passes:
        model._be_members_per_pass = members_per_pass
        model.forward = functools.partial(_forward_in_passes, model)
    else:
        model.register_forward_pre_hook(_tile_input, with_kwargs=True)
        model.register_forward_hook(_split_output, with_kwargs=True)
    return model


def fast_weight_param_groups(model: nn.Module, lr: float,
                             fast_weight_lr_multiplier: float = 0.5) -> list[dict]:
    """Optimizer parameter groups with the BatchEnsemble fast weights (``r``, ``s``,
    per-member biases) at ``lr * fast_weight_lr_multiplier`` and everything else at
    ``lr`` (the uncertainty-baselines recipe uses 0.5): ``torch.optim.SGD(
    fast_weight_param_groups(model, 0.1), momentum=0.9)``."""
    fast_ids: set[int] = set()
    for m in model.modules():
        if isinstance(m, _BatchEnsembleBase):
            fast_ids.update(id(p) for p in m.fast_parameters())
    params = [p for p in model.parameters() if p.requires_grad]
    fast = [p for p in params if id(p) in fast_ids]
    slow = [p for p in params if id(p) not in fast_ids]
    groups = [{"params": slow, "lr": lr}]
    if fast:
        groups.append({"params": fast, "lr": lr * fast_weight_lr_multiplier})
    return groups


def _reset(module: nn.Module) -> None:
    for m in module.modules():
        if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
            m.reset_parameters()


def ensemble(base: nn.Module, num_members: int, reset_params: bool = True) -> nn.ModuleList:
    """``num_members`` deep copies of ``base`` in an ``nn.ModuleList``, each re-initialised
    (every submodule's ``reset_parameters``) unless ``reset_params=False``. ``base`` is not
    modified. Stack the members' outputs with :func:`ensemble_outputs`."""
    num_members = check_int("num_members", num_members, 1)
    members = nn.ModuleList(copy.deepcopy(base) for _ in range(num_members))
    if reset_params:
        for m in members:
            _reset(m)
    return members


def ensemble_outputs(members: Iterable[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """``(E, B, ...)``: every member's output on ``x`` stacked member-major (a tuple output
    contributes its first element, e.g. a ``LiquidNCPNetwork``'s ``y``)."""
    outs = []
    for m in members:
        y = m(x)
        outs.append(y[0] if isinstance(y, tuple) else y)
    return torch.stack(outs, 0)

