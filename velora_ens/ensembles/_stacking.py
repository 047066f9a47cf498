"""N expert modules of one structure evaluated as one batched call (Liquid Ensemble).

The experts stay ordinary modules that own their parameters. On every call their
weights are gathered (``torch.cat`` / ``torch.stack``: a copy of a few kB whose backward
hands each expert its own gradient), and the forward of expert 0, traced once with
``torch.fx``, is replayed on member-batched tensors ``(N, ...)``: each ``nn.Linear``
becomes one matmul for all experts, and activations, softmax and dropout run once on the
whole stack. So an optimiser built from ``layer.parameters()`` (or from the experts' own
parameters) trains the same tensors as the loop, and ``state_dict`` keys do not change.

Only forwards built from the layers and functions listed below are stacked; anything
else (convolutions, buffers such as BatchNorm statistics, hooks, shape arithmetic,
Python branches on ``self.training``) makes :meth:`ExpertStack.build` return a reason,
and the layer evaluates the experts one by one. The plain attributes of every submodule
(``training``, ``p``, ``dim``, a temperature...) are compared at every call, so a change
the trace may have baked in makes :meth:`ExpertStack.current` false (the layer re-traces).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from velora_ens.ensembles._vectorised import softmax

__all__ = ["ExpertStack"]

_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Tanhshrink, nn.LogSigmoid, nn.Identity,
)
_DROPOUT_MODULES = (nn.Dropout, nn.AlphaDropout)
_SOFTMAX_MODULES = (nn.Softmax, nn.LogSoftmax)
_MODULES = (nn.Linear, nn.Flatten, nn.LayerNorm, *_ELEMENTWISE_MODULES, *_DROPOUT_MODULES,
            *_SOFTMAX_MODULES)
_ELEMENTWISE_FUNCTIONS = {
    torch.relu, torch.tanh, torch.sigmoid, torch.exp, torch.abs, torch.neg, torch.square,
    torch.sqrt, torch.clamp, torch.add, torch.sub, torch.mul, torch.div,
    F.relu, F.relu6, F.gelu, F.silu, F.elu, F.selu, F.leaky_relu, F.softplus, F.mish,
    F.tanh, F.sigmoid, F.hardtanh, F.logsigmoid,
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.pow,
}
_ELEMENTWISE_METHODS = {"relu", "tanh", "sigmoid", "exp", "abs", "neg", "square", "sqrt",
                        "clamp", "add", "sub", "mul", "div", "pow"}
def _log_softmax(x: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    return softmax(x, dim, log=True, dtype=dtype)


_SOFTMAX_FUNCTIONS = {torch.softmax: softmax, F.softmax: softmax,
                      torch.log_softmax: _log_softmax, F.log_softmax: _log_softmax}
_SOFTMAX_METHODS = {"softmax": softmax, "log_softmax": _log_softmax}
_SIMPLE = (bool, int, float, str, type(None), torch.dtype)
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks",
                 "_global_backward_hooks", "_global_backward_pre_hooks")


class Unstackable(Exception):
    """Why the experts cannot be stacked."""


def _value_key(v: Any) -> Any:
    if isinstance(v, _SIMPLE) or (isinstance(v, tuple) and all(isinstance(e, _SIMPLE)
                                                                for e in v)):
        return v
    return ("object", id(v))


def _global_hooks() -> bool:
    from torch.nn.modules import module as mod

    return any(getattr(mod, name, None) for name in _GLOBAL_HOOKS)


def _shift(dim: int | None, member: bool) -> int | None:
    """A dimension index of one expert's tensor, on the member-batched tensor."""
    return dim + 1 if member and dim is not None and dim >= 0 else dim


class _Slot:
    """A reference to a traced node's value in the compiled program."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _fill(template: Any, vals: list) -> Any:
    if isinstance(template, _Slot):
        return vals[template.index]
    if isinstance(template, (tuple, list)):
        return type(template)(_fill(t, vals) for t in template)
    if isinstance(template, dict):
        return {k: _fill(t, vals) for k, t in template.items()}
    return template


class ExpertStack:
    """A replay of expert 0's traced forward on all N experts at once.

    ``stack(x) -> (ys (N, B, ...), ds (N, B, N))``, equal to the experts called one by
    one up to float rounding (one matmul for all experts instead of N). Build with
    :meth:`build`; check :meth:`current` before each call.
    """

    def __init__(self, experts: Sequence[nn.Module], graph: Any) -> None:
        self.experts = list(experts)
        self.num = len(self.experts)
        named = [list(e.named_modules()) for e in self.experts]
        self.index = {n: k for k, (n, _) in enumerate(named[0])}
        self.modules = [[m for _, m in ms] for ms in named]  # [expert][submodule]
        self._dicts = [[m.__dict__ for m in ms] for ms in self.modules]
        # plain attributes, but not the training flag: the trace is the same in both modes
        # (checked by _trace), so only the experts' flags must agree (see _modes)
        self._keys = [tuple(k for k in d if not k.startswith("_") and k != "training")
                      for d in self._dicts[0]]
        fps = [self._fingerprint(i) for i in range(self.num)]
        if any(hooked for fp in fps for hooked, *_ in fp) or _global_hooks():
            raise Unstackable("module hooks are registered")
        if any(fp != fps[0] for fp in fps) or any(
                self._modes(i) != self._modes(0) for i in range(self.num)):
            raise Unstackable("the experts' submodules differ in configuration")
        self.fingerprint = fps[0]
        self._children = [self._child_ids(i) for i in range(self.num)]
        self._compile(graph)

    # --- building ------------------------------------------------------------------
    @classmethod
    def build(cls, experts: Sequence[nn.Module]) -> tuple[ExpertStack | None, str]:
        """``(stack, "")`` or ``(None, reason)``: why these experts run in a loop."""
        experts = list(experts)
        try:
            cls._check_structure(experts)
            return cls(experts, cls._trace(experts[0])), ""
        except Unstackable as err:
            return None, str(err)

    @staticmethod
    def _check_structure(experts: list[nn.Module]) -> None:
        if len(experts) < 2:
            raise Unstackable("a single expert")
        if len({id(e) for e in experts}) < len(experts):
            raise Unstackable("the same module is passed more than once")
        first = experts[0]
        types = [(n, type(m)) for n, m in first.named_modules()]
        params = [(n, p.shape, p.dtype, p.device) for n, p in first.named_parameters()]
        for i, e in enumerate(experts):
            if [(n, type(m)) for n, m in e.named_modules()] != types:
                raise Unstackable(f"expert {i} has a different module structure from expert 0")
            if any(True for _ in e.buffers()):
                raise Unstackable("the experts hold buffers (e.g. BatchNorm statistics)")
            if [(n, p.shape, p.dtype, p.device) for n, p in e.named_parameters()] != params:
                raise Unstackable(f"expert {i}'s parameters differ in name, shape, dtype or "
                                  "device from expert 0's")

    @staticmethod
    def _trace(expert: nn.Module) -> Any:
        """Trace expert 0 in training and in eval mode; both must give the same graph
        (else its forward branches on ``self.training`` in Python)."""
        import torch.fx as fx

        modes = [m.training for m in expert.modules()]
        graphs = []
        try:
            for train in (True, False):
                expert.train(train)
                try:
                    graphs.append(fx.symbolic_trace(expert).graph)
                except Exception as err:  # noqa: BLE001 (any tracing failure means: loop)
                    raise Unstackable(f"torch.fx cannot trace the expert's forward "
                                      f"({type(err).__name__}: {err})") from None
        finally:
            for m, t in zip(expert.modules(), modes, strict=True):
                m.training = t
        if str(graphs[0]) != str(graphs[1]):
            raise Unstackable("the expert's forward differs between train and eval mode")
        return graphs[0]

    def _compile(self, graph: Any) -> None:
        """Turn the graph into ``(fn, argument slots, output slot, slots to free)``."""
        nodes = list(graph.nodes)
        slot = {node: k for k, node in enumerate(nodes)}
        member: dict[Any, bool] = {}
        last_use = {}
        for k, node in enumerate(nodes):
            for a in node.all_input_nodes:
                last_use[a] = k
        placeholders = [n for n in nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise Unstackable(f"the expert's forward takes {len(placeholders)} inputs, not 1")
        self._input = slot[placeholders[0]]
        self._size = len(nodes)
        program = []
        for k, node in enumerate(nodes):
            if node.op == "placeholder":
                member[node] = False
                continue
            if node.op == "output":
                out = node.args[0]
                if not (isinstance(out, (tuple, list)) and len(out) == 2
                        and all(hasattr(a, "op") for a in out)):
                    raise Unstackable("the expert's forward does not return (prediction, "
                                      "delegation)")
                self._outputs = [(slot[a], member[a]) for a in out]
                continue
            m_in = any(member[a] for a in node.all_input_nodes)
            fn, args, m_out = self._instruction(node, m_in, slot)
            member[node] = m_out
            free = tuple(slot[a] for a in node.all_input_nodes if last_use[a] == k)
            program.append((fn, args, slot[node], free))
        self._program = program

    def _instruction(self, node: Any, m_in: bool,
                     slot: dict) -> tuple[Callable, Any, bool]:
        """``(fn, args, output is member-batched)``; ``args``: a tuple of slots for a
        module, else a template with :class:`_Slot` markers for ``fn(*args, **kwargs)``."""
        if node.op == "call_module":
            if len(node.args) != 1 or node.kwargs:
                raise Unstackable(f"{node.target} is called with more than one input")
            mod = self.modules[0][self.index[node.target]]
            if not isinstance(mod, _MODULES):
                raise Unstackable(f"{type(mod).__name__} ({node.target}) is not stackable")
            fn, m_out = self._module_fn(node.target, mod, m_in)
            return fn, (slot[node.args[0]],), m_out
        from torch.fx.node import map_arg

        template = map_arg((node.args, node.kwargs), lambda a: _Slot(slot[a]))
        if node.op == "call_function" and node.target in _ELEMENTWISE_FUNCTIONS:
            fn = node.target
        elif node.op == "call_method" and node.target in _ELEMENTWISE_METHODS:
            name = node.target

            def fn(obj, *args, **kwargs):
                return getattr(obj, name)(*args, **kwargs)
        elif (node.op == "call_function" and node.target in _SOFTMAX_FUNCTIONS) or (
                node.op == "call_method" and node.target in _SOFTMAX_METHODS):
            table = _SOFTMAX_FUNCTIONS if node.op == "call_function" else _SOFTMAX_METHODS
            fn, (args, kwargs) = table[node.target], template
            kwargs = dict(kwargs)
            dim = kwargs.pop("dim", args[1] if len(args) > 1 else None)
            if not isinstance(dim, int):
                raise Unstackable("softmax without an integer dim is not stackable")
            kwargs["dim"] = _shift(dim, m_in)
            template = (tuple(args[:1]), kwargs)
        else:
            what = node.target if isinstance(node.target, str) else getattr(
                node.target, "__name__", repr(node.target))
            raise Unstackable(f"{node.op} {what} is not stackable")
        return _Generic(fn, template), (), m_in

    def _module_fn(self, target: str, mod: nn.Module, m_in: bool) -> tuple[Callable, bool]:
        k = self.index[target]
        if isinstance(mod, nn.Linear):
            return (self._linear_member if m_in else self._linear_shared)(k, mod), True
        if isinstance(mod, _ELEMENTWISE_MODULES):
            return mod, m_in
        if isinstance(mod, _DROPOUT_MODULES):  # independent masks, as in the loop
            return (mod if m_in else lambda v: mod(self._as_member(v))), True
        if isinstance(mod, _SOFTMAX_MODULES):
            if mod.dim is None:
                raise Unstackable(f"{target} has no dim")
            log, dim = isinstance(mod, nn.LogSoftmax), _shift(mod.dim, m_in)
            return (lambda v: softmax(v, dim, log=log)), m_in
        if isinstance(mod, nn.Flatten):
            start, end = _shift(mod.start_dim, m_in), _shift(mod.end_dim, m_in)
            return (lambda v: v.flatten(start, end)), m_in
        return self._layer_norm(k, mod, m_in)

    # --- the member-batched layers -------------------------------------------------
    def _params(self, k: int, name: str) -> list[torch.Tensor] | None:
        ps = [ms[k]._parameters[name] for ms in self.modules]
        return None if ps[0] is None else ps

    def _linear_shared(self, k: int, mod: nn.Linear) -> Callable:
        """A shared input ``(..., in)``, broadcast (not copied) to every expert."""
        n, fin, fout = self.num, mod.in_features, mod.out_features

        def linear(v: torch.Tensor) -> torch.Tensor:
            w = torch.stack(self._params(k, "weight")).transpose(1, 2)  # (N, in, out)
            bias = self._params(k, "bias")
            v3 = (v if v.dim() == 2 else v.reshape(-1, fin)).expand(n, -1, -1)
            out = (torch.bmm(v3, w) if bias is None
                   else torch.baddbmm(torch.stack(bias).unsqueeze(1), v3, w))
            return out if v.dim() == 2 else out.reshape(n, *v.shape[:-1], fout)
        return linear

    def _linear_member(self, k: int, mod: nn.Linear) -> Callable:
        n, fin, fout = self.num, mod.in_features, mod.out_features

        def linear(v: torch.Tensor) -> torch.Tensor:
            w = torch.stack(self._params(k, "weight")).transpose(1, 2)  # (N, in, out)
            bias = self._params(k, "bias")
            v3 = v if v.dim() == 3 else v.reshape(n, -1, fin)
            out = (torch.bmm(v3, w) if bias is None
                   else torch.baddbmm(torch.stack(bias).unsqueeze(1), v3, w))
            return out if v.dim() == 3 else out.reshape(*v.shape[:-1], fout)
        return linear

    def _layer_norm(self, k: int, mod: nn.LayerNorm, m_in: bool) -> tuple[Callable, bool]:
        """Normalise once, then apply each expert's own affine transform."""
        if not mod.elementwise_affine:
            return (lambda v: F.layer_norm(v, mod.normalized_shape, None, None, mod.eps)), m_in
        nd = len(mod.normalized_shape)

        def layer_norm(v: torch.Tensor) -> torch.Tensor:
            out = self._as_member(F.layer_norm(v, mod.normalized_shape, None, None, mod.eps),
                                  m_in)
            shape = (self.num,) + (1,) * (out.dim() - 1 - nd) + tuple(mod.normalized_shape)
            out = out * torch.stack(self._params(k, "weight")).reshape(shape)
            bias = self._params(k, "bias")
            return out if bias is None else out + torch.stack(bias).reshape(shape)
        return layer_norm, True

    def _as_member(self, v: torch.Tensor, is_member: bool = False) -> torch.Tensor:
        return v if is_member else v.unsqueeze(0).expand(self.num, *v.shape)

    # --- use -------------------------------------------------------------------------
    def _fingerprint(self, i: int) -> tuple:
        """What a trace may have baked in, for expert i: per submodule, hooks present,
        attribute count and plain attribute values."""
        return tuple(
            (bool(d["_forward_hooks"] or d["_forward_pre_hooks"] or d["_backward_hooks"]
                  or d["_backward_pre_hooks"]), len(d), *[_value_key(d.get(a)) for a in keys])
            for d, keys in zip(self._dicts[i], self._keys, strict=True))

    def _child_ids(self, i: int) -> tuple:
        return tuple(id(c) for d in self._dicts[i] for c in d["_modules"].values())

    def _modes(self, i: int) -> tuple:
        return tuple(d["training"] for d in self._dicts[i])

    def current(self) -> bool:
        """Whether the trace still describes every expert (no attribute changed, no
        submodule replaced, no hook added, every expert in expert 0's train/eval modes)."""
        if _global_hooks():
            return False
        modes = self._modes(0)
        return all(self._fingerprint(i) == self.fingerprint
                   and self._child_ids(i) == self._children[i]
                   and self._modes(i) == modes for i in range(self.num))

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vals: list[Any] = [None] * self._size
        vals[self._input] = x
        for fn, args, out, free in self._program:
            vals[out] = fn(*[vals[a] for a in args]) if args else fn(vals)
            for a in free:
                vals[a] = None
        (y, y_member), (d, d_member) = self._outputs
        return self._as_member(vals[y], y_member), self._as_member(vals[d], d_member)


class _Generic:
    """``fn(*args, **kwargs)`` with the arguments filled in from the program's values."""

    __slots__ = ("fn", "template")

    def __init__(self, fn: Callable, template: Any) -> None:
        self.fn, self.template = fn, template

    def __call__(self, vals: list) -> Any:
        args, kwargs = _fill(self.template, vals)
        return self.fn(*args, **kwargs)
