"""Export the NCP networks for deployment: ONNX with the recurrent state as an explicit
input and output, to run with onnxruntime (or any ONNX runtime) without torch.

:func:`export_onnx` writes the file; :class:`InferenceGraph` is the torch module it exports
(usable with ``torch.export`` or ``torch.jit.trace`` too). The graph is the network's
inference maths, the same methods ``forward`` calls, without the Python-side input checks
and without the fused CfC scan (an autograd function with a hand-written backward,
which no exporter can record; it is for training).

Needs the ``export`` extra (``pip install "velora-ens[export]"``: onnx, onnxscript and,
to run the file, onnxruntime). See the export guide in the documentation for a
deployment loop.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from velora_ens._validation import check_bool
from velora_ens.models.lnn.cell import NCPLiquidCell
from velora_ens.models.lnn.mixed import MixedMemoryCell
from velora_ens.models.lnn.ncp import LiquidNCPNetwork, NCPNetwork

__all__ = ["InferenceGraph", "export_onnx"]


class InferenceGraph(nn.Module):
    """The inference computation of a network with the state explicit, for exporters.

    * :class:`LiquidNCPNetwork`, ``steps=None``: ``forward(x, h[, dt]) -> (y, h_new)`` with
      ``x: (B, in)``, ``h: (B, hidden)``, ``dt: (B, 1)``, ``y: (B, out)``;
    * :class:`LiquidNCPNetwork`, ``steps=L``: ``forward(x, h[, dt]) -> (y, h_last)`` with
      ``x: (B, L, in)``, ``dt: (B, L, 1)``, ``y: (B, L, out)``; the ``L`` steps are unrolled,
      so the graph takes sequences of exactly that length;
    * :class:`NCPNetwork`: ``forward(x) -> y`` with ``x: (B, in)`` (``steps`` is ignored: the
      network has no state and works on each row alone).

    ``dt`` is an input only with ``elapsed_time=True`` (otherwise every step lasts 1, as
    when ``forward`` gets no ``dt``). The module shares the network's parameters.

    Example:
        >>> net = LiquidNCPNetwork(4, 10, 2, seed=0)
        >>> graph = InferenceGraph(net)
        >>> x, h = torch.randn(3, 4), net.initial_state(3)
        >>> torch.allclose(graph(x, h)[0], net(x, h)[0])
        True
    """

    def __init__(self, net: LiquidNCPNetwork | NCPNetwork, *, steps: int | None = None,
                 elapsed_time: bool = False) -> None:
        super().__init__()
        if not isinstance(net, (LiquidNCPNetwork, NCPNetwork)):
            raise ValueError(f"InferenceGraph exports a LiquidNCPNetwork or an NCPNetwork, got "
                             f"{type(net).__name__}")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                                  or steps < 1):
            raise ValueError(f"steps must be None (one step) or an integer >= 1 (a sequence "
                             f"length), got {steps!r}")
        check_bool("elapsed_time", elapsed_time)
        self.net = net
        self.recurrent = isinstance(net, LiquidNCPNetwork)
        if not self.recurrent and elapsed_time:
            raise ValueError("elapsed_time=True needs a LiquidNCPNetwork; an NCPNetwork has no "
                             "notion of time")
        self.steps = steps if self.recurrent else None
        self.elapsed_time = bool(elapsed_time)

    @property
    def input_names(self) -> list[str]:
        """Names of the graph's inputs, in order: ``x`` (``h``, ``dt``)."""
        if not self.recurrent:
            return ["x"]
        return ["x", "h", "dt"] if self.elapsed_time else ["x", "h"]

    @property
    def output_names(self) -> list[str]:
        """Names of the graph's outputs, in order: ``y`` (``h_new``)."""
        return ["y", "h_new"] if self.recurrent else ["y"]

    def example_inputs(self, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        """Zero inputs of the right shapes, dtype and device (what exporters trace with)."""
        net, like = self.net, self.net.inter.weight
        if not self.recurrent:
            return (like.new_zeros(batch_size, net.in_features),)
        lead = (batch_size,) if self.steps is None else (batch_size, self.steps)
        inputs = (like.new_zeros(*lead, net.in_features), net.initial_state(batch_size))
        return inputs + ((like.new_ones(*lead, 1),) if self.elapsed_time else ())

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None,
                dt: torch.Tensor | None = None):
        net = self.net
        u = net._act(net.inter(x))
        if not self.recurrent:
            return net.motor(net._act(net.command(u)))
        if h is None:
            raise ValueError("InferenceGraph of a LiquidNCPNetwork needs the state h")
        if self.elapsed_time and dt is None:
            raise ValueError("this InferenceGraph was built with elapsed_time=True: pass dt")
        dt = dt if self.elapsed_time else None
        cmd = net.command
        if isinstance(cmd, MixedMemoryCell):
            drive, step = cmd.drive(u), cmd.stepper()
        elif isinstance(cmd, NCPLiquidCell):
            drive = (cmd.project_input(u),)
            w_hh = cmd.effective_recurrent_weight().t()

            def step(inputs: tuple[torch.Tensor, ...], state: torch.Tensor,
                     dt_step: torch.Tensor | None) -> torch.Tensor:
                return cmd.step(inputs[0], state, w_hh, dt_step)
        else:
            drive = cmd.sensory_drive(u)

            def step(inputs: tuple[torch.Tensor, ...], state: torch.Tensor,
                     dt_step: torch.Tensor | None) -> torch.Tensor:
                return cmd.step(inputs[0], inputs[1], state, dt_step)

        if self.steps is None:
            h_new = step(drive, h, dt)
            return net.motor(net.motor_input(h_new)), h_new
        per_step = [d.unbind(1) for d in drive]
        dt_t = None if dt is None else dt.unbind(1)
        states = []
        for t in range(self.steps):
            h = step(tuple(d[t] for d in per_step), h, None if dt_t is None else dt_t[t])
            states.append(h)
        return net.motor(net.motor_input(torch.stack(states, dim=1))), h


@contextlib.contextmanager
def _quiet_exporter():
    """Hide the exporter's notes that say nothing about the exported graph: optional
    torchvision operators it skips, the shared name of the batch axes, a deprecation
    inside torch's own pytree code."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"# The axis name: batch will not be used")
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(net: LiquidNCPNetwork | NCPNetwork, path: str | Path, *,
                steps: int | None = None, elapsed_time: bool = False,
                opset_version: int | None = None) -> Path:
    """Write ``net``'s inference graph (see :class:`InferenceGraph`) to the ONNX file ``path``.

    Inputs ``x``, ``h`` (``LiquidNCPNetwork``) and ``dt`` (``elapsed_time=True``); outputs
    ``y`` and ``h_new`` (``LiquidNCPNetwork``). The batch dimension is dynamic. With
    ``steps=None`` (the default) the graph is one step: a deployment loop feeds ``h_new``
    back as ``h``, starting from zeros ``(B, net.hidden_size)`` (and resets it to zeros
    when an episode starts). ``steps=L`` exports a sequence of exactly ``L`` steps.

    Uses ``torch.onnx.export(..., dynamo=True)``, torch's exporter built on
    ``torch.export``; the weights are stored inside the file. Returns ``Path(path)``.

    Example:
        >>> net = LiquidNCPNetwork(4, 10, 2, seed=0)
        >>> export_onnx(net, "policy.onnx")  # doctest: +SKIP
        PosixPath('policy.onnx')
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ImportError(f"export_onnx needs the export extra (onnx, onnxscript): "
                          f"pip install \"velora-ens[export]\" ({err})") from err
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path must name a file, got the folder {str(path)!r}")
    graph = InferenceGraph(net, steps=steps, elapsed_time=elapsed_time)
    batch = torch.export.Dim("batch")
    dynamic = tuple({0: batch} for _ in graph.input_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = net.training
    graph.eval()  # the networks behave the same in both modes; the exporter asks for eval
    try:
        with _quiet_exporter(), torch.no_grad():
            torch.onnx.export(graph, graph.example_inputs(), str(path),
                              input_names=graph.input_names, output_names=graph.output_names,
                              dynamic_shapes=dynamic, opset_version=opset_version,
                              dynamo=True, external_data=False, verbose=False)
    finally:
        net.train(was_training)
    return path
