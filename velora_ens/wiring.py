"""Neural Circuit Policy (NCP) wiring: sensory -> inter -> command -> motor.

A :class:`Wiring` draws the sparse synapses of a four-layer NCP from its own seeded
generator and hands them to the liquid networks as masks. Values in a mask are
``+1`` (excitatory synapse), ``-1`` (inhibitory synapse) or ``0`` (no synapse).

Decisions (see ``SPEC.md``, "Wiring"):

* ``n_neurons`` counts inter + command neurons; ``command = max(int(0.4 n), 1)``.
* Fan-outs follow ncps ``AutoNCP`` with density ``d = 1 - sparsity_level``.
* Synapses are sampled **without replacement**; every neuron ends up with at least
  one incoming and one outgoing synapse (orphans are connected).
* ``dense_recurrence=True`` connects every command neuron to every command neuron (the
  recurrence of ncps's fully connected CfC) instead of AutoNCP's ``2 d command`` recurrent
  synapses; those polarities are drawn last, so the other masks are the sparse wiring's.
* The only randomness is a PCG64 stream seeded by ``seed`` and read through
  ``Generator.random`` (uniform doubles), so masks do not depend on the global numpy
  state. With ``seed=None`` a seed is drawn from torch's global generator, so
  ``torch.manual_seed`` makes a whole network reproducible; the drawn seed is kept
  and returned by :meth:`Wiring.get_config`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from velora_ens._validation import check_bool, check_int

__all__ = ["LayerMasks", "NeuronCounts", "SynapseCounts", "Wiring"]

_LAYERS = ("sensory", "inter", "command", "motor")


@dataclass(frozen=True)
class NeuronCounts:
    """Number of neurons in each NCP layer (sensory = inputs, motor = outputs)."""

    sensory: int
    inter: int
    command: int
    motor: int


@dataclass(frozen=True)
class SynapseCounts:
    """Target fan-outs/fan-ins used to draw the synapses (ncps ``AutoNCP`` rules)."""

    sensory_fanout: int
    inter_fanout: int
    recurrent_command: int
    motor_fanin: int


@dataclass(frozen=True)
class LayerMasks:
    """Signed adjacency masks, shape ``(source, destination)``, dtype ``torch.int8``."""

    inter: torch.Tensor
    command: torch.Tensor
    motor: torch.Tensor
    recurrent: torch.Tensor


class Wiring:
    """Seeded NCP wiring between ``in_features`` sensory and ``out_features`` motor neurons.

    Args:
        in_features: number of sensory neurons (network inputs).
        n_neurons: number of inter + command neurons (at least 2 and at least
            ``out_features``: the command layer funnels into the motor layer).
        out_features: number of motor neurons (network outputs).
        sparsity_level: fraction of the possible synapses left out, in ``[0, 1)``.
        seed: seed of the wiring's own generator; ``None`` draws one from torch's
            global generator.
        dense_recurrence: all-to-all command -> command synapses (random polarities)
            instead of the sparse AutoNCP recurrence; the other masks are unchanged.
            LiquidPPO's tuned PendulumNoVel actor uses it, where velocities must be
            inferred from positions (``benchmarks/README.md``).

    Example:
        >>> wiring = Wiring(4, 10, 1, seed=0)
        >>> masks, counts = wiring.data()
        >>> tuple(masks.inter.shape), counts.command
        ((4, 6), 4)
    """

    def __init__(
        self,
        in_features: int,
        n_neurons: int,
        out_features: int,
        *,
        sparsity_level: float = 0.5,
        seed: int | None = None,
        dense_recurrence: bool = False,
    ) -> None:
        self.in_features = check_int("in_features", in_features, 1)
        self.out_features = check_int("out_features", out_features, 1)
        self.n_neurons = check_int("n_neurons", n_neurons, 2)
        if self.n_neurons < self.out_features:
            raise ValueError(
                f"n_neurons={n_neurons} is too few for out_features={out_features}: "
                f"expected n_neurons >= out_features (inter + command neurons funnel "
                f"into the motor layer)"
            )
        if isinstance(sparsity_level, bool) or not isinstance(sparsity_level, (int, float)):
            raise ValueError(f"sparsity_level must be a number in [0, 1), got {sparsity_level!r}")
        if not (0.0 <= float(sparsity_level) < 1.0):
            raise ValueError(f"sparsity_level must be in [0, 1), got {sparsity_level!r}")
        self.sparsity_level = float(sparsity_level)
        self.dense_recurrence = check_bool("dense_recurrence", dense_recurrence)
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (), dtype=torch.int64).item())
        self.seed = check_int("seed", seed, 0)

        n_command = max(int(0.4 * self.n_neurons), 1)
        self.counts = NeuronCounts(
            sensory=self.in_features,
            inter=self.n_neurons - n_command,
            command=n_command,
            motor=self.out_features,
        )
        density = 1.0 - self.sparsity_level
        c = self.counts
        self.synapses = SynapseCounts(
            sensory_fanout=max(int(c.inter * density), 1),
            inter_fanout=max(int(c.command * density), 1),
            recurrent_command=(c.command**2 if self.dense_recurrence
                               else min(max(int(c.command * density * 2), 1), c.command**2)),
            motor_fanin=max(int(c.command * density), 1),
        )
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        self.masks = self._build()
        del self._rng

    # ------------------------------------------------------------------ drawing
    def _choose(self, n: int, k: int) -> np.ndarray:
        """``k`` distinct indices out of ``n`` (argsort of uniform draws)."""
        return np.argsort(self._rng.random(n), kind="stable")[:k]

    def _polarity(self, n: int) -> np.ndarray:
        return np.where(self._rng.random(n) < 0.5, -1, 1).astype(np.int8)

    def _fan_out(self, n_src: int, n_dst: int, fanout: int) -> np.ndarray:
        """Each source gets ``fanout`` distinct destinations; orphan destinations get
        the mean fan-in of random distinct sources."""
        mask = np.zeros((n_src, n_dst), dtype=np.int8)
        for src in range(n_src):
            dst = self._choose(n_dst, fanout)
            mask[src, dst] = self._polarity(len(dst))
        mean_fanin = max(int(round(n_src * fanout / n_dst)), 1)
        for dst in range(n_dst):
            if not mask[:, dst].any():
                src = self._choose(n_src, min(mean_fanin, n_src))
                mask[src, dst] = self._polarity(len(src))
        return mask

    def _fan_in(self, n_src: int, n_dst: int, fanin: int) -> np.ndarray:
        """Each destination gets ``fanin`` distinct sources; sources left without a
        destination get the mean fan-out of random distinct destinations."""
        mask = np.zeros((n_src, n_dst), dtype=np.int8)
        for dst in range(n_dst):
            src = self._choose(n_src, fanin)
            mask[src, dst] = self._polarity(len(src))
        mean_fanout = max(int(round(n_dst * fanin / n_src)), 1)
        for src in range(n_src):
            if not mask[src].any():
                dst = self._choose(n_dst, min(mean_fanout, n_dst))
                mask[src, dst] = self._polarity(len(dst))
        return mask

    def _build(self) -> LayerMasks:
        c, s = self.counts, self.synapses
        inter = self._fan_out(c.sensory, c.inter, s.sensory_fanout)
        command = self._fan_out(c.inter, c.command, s.inter_fanout)
        motor = self._fan_in(c.command, c.motor, s.motor_fanin)
        recurrent = np.zeros((c.command, c.command), dtype=np.int8)
        if self.dense_recurrence:
            recurrent.flat[:] = self._polarity(c.command * c.command)
        else:
            pairs = self._choose(c.command * c.command, s.recurrent_command)
            recurrent.flat[pairs] = self._polarity(len(pairs))
        return LayerMasks(*(torch.from_numpy(m) for m in (inter, command, motor, recurrent)))

    # ------------------------------------------------------------------ access
    def data(self) -> tuple[LayerMasks, NeuronCounts]:
        """Return ``(masks, counts)``: signed masks and the neuron count of each layer."""
        return self.masks, self.counts

    @property
    def n_connections(self) -> int:
        """Number of synapses (non-zero mask entries), recurrent ones included."""
        return int(sum(int(m.count_nonzero()) for m in asdict_masks(self.masks).values()))

    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments; :meth:`from_config` rebuilds the
        identical wiring from them (``dense_recurrence`` only when it is set)."""
        config: dict[str, Any] = {
            "in_features": self.in_features,
            "n_neurons": self.n_neurons,
            "out_features": self.out_features,
            "sparsity_level": self.sparsity_level,
            "seed": self.seed,
        }
        if self.dense_recurrence:
            config["dense_recurrence"] = True
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Wiring:
        """Rebuild a wiring from :meth:`get_config`'s output."""
        expected = {"in_features", "n_neurons", "out_features", "sparsity_level", "seed"}
        if not isinstance(config, dict) or not expected <= set(config) <= expected | {
                "dense_recurrence"}:
            got = sorted(config) if isinstance(config, dict) else type(config).__name__
            raise ValueError(
                f"Wiring config must have exactly the keys {sorted(expected)} (and optionally "
                f"'dense_recurrence'), got {got}"
            )
        return cls(
            config["in_features"],
            config["n_neurons"],
            config["out_features"],
            sparsity_level=config["sparsity_level"],
            seed=config["seed"],
            dense_recurrence=config.get("dense_recurrence", False),
        )

    def neuron_names(self) -> dict[str, list[str]]:
        """Neuron names per layer: ``s0..``, ``i0..``, ``c0..``, ``m0..``."""
        sizes = asdict(self.counts)
        return {layer: [f"{layer[0]}{k}" for k in range(sizes[layer])] for layer in _LAYERS}

    def edges(self) -> list[tuple[str, str, int]]:
        """All synapses as ``(source, destination, polarity)`` with names from
        :meth:`neuron_names`, ready for a graph library (networkx, graphviz)."""
        names = self.neuron_names()
        links = (
            ("sensory", "inter", self.masks.inter),
            ("inter", "command", self.masks.command),
            ("command", "command", self.masks.recurrent),
            ("command", "motor", self.masks.motor),
        )
        out: list[tuple[str, str, int]] = []
        for src_layer, dst_layer, mask in links:
            for i, j in torch.nonzero(mask).tolist():
                out.append((names[src_layer][i], names[dst_layer][j], int(mask[i, j])))
        return out

    def adjacency_lists(self) -> dict[str, list[tuple[str, int]]]:
        """Every neuron mapped to its outgoing ``(destination, polarity)`` synapses."""
        adjacency: dict[str, list[tuple[str, int]]] = {
            name: [] for layer in self.neuron_names().values() for name in layer
        }
        for src, dst, polarity in self.edges():
            adjacency[src].append((dst, polarity))
        return adjacency

    def __repr__(self) -> str:
        c = self.counts
        return (
            f"Wiring(sensory={c.sensory}, inter={c.inter}, command={c.command}, "
            f"motor={c.motor}, sparsity_level={self.sparsity_level}, seed={self.seed}, "
            f"{'dense_recurrence=True, ' if self.dense_recurrence else ''}"
            f"synapses={self.n_connections})"
        )


def asdict_masks(masks: LayerMasks) -> dict[str, torch.Tensor]:
    """The masks of a :class:`LayerMasks` by name: inter, command, motor, recurrent."""
    return {k: getattr(masks, k) for k in ("inter", "command", "motor", "recurrent")}
