"""The search spaces of ``velora-ens tune``: what each agent's settings may be, and one
small function per algorithm that samples them for an Optuna trial.

A space maps an agent argument (SB3's names, which the agents take) to a :class:`Dist`: a
range (``low``/``high``, optionally ``log``; ``one_minus`` samples ``1 - x`` on a log
scale, for ``gamma`` and ``gae_lambda``), a list of ``choices`` or a fixed ``value``.
A user's space file narrows or replaces a space (:func:`load_space_file`, format in
``docs/agents/tuning.md``).

Settings that cannot go together are never sampled: LiquidPPO's ``batch_size`` is clamped
to the rollout (``n_steps * n_envs`` rows) and ``seq_len`` to a divisor of ``n_steps``
and ``batch_size``; exploration strategies an action space does not take are left out.
What still slips through (a user's space with sizes that do not divide) is pruned at once
by the objective, with the agent's message recorded.

This module only names agent arguments; it imports neither ``agents`` nor ``optuna``
(``trial`` is anything with Optuna's ``suggest_*`` methods).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ALGO_SPACES", "Dist", "Space", "applicable", "default_space", "load_space_file",
           "merge_space", "sample_settings"]

_JSONABLE = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class Dist:
    """How one setting is sampled: a range, choices or a fixed value."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    one_minus: bool = False  # sample 1 - value on a log scale (discounts close to 1)
    choices: tuple[Any, ...] | None = None
    value: Any = None
    fixed: bool = False

    def describe(self) -> str:
        if self.fixed:
            return f"= {self.value!r}"
        if self.choices is not None:
            return f"in {list(self.choices)}"
        scale = ", 1 - x log-uniform" if self.one_minus else (", log" if self.log else "")
        return f"{'int ' if self.integer else ''}[{self.low:g}, {self.high:g}]{scale}"


Space = dict[str, Dist]


def _range(low: float, high: float, log: bool = False) -> Dist:
    return Dist(low=low, high=high, log=log)


def _choice(*choices: Any) -> Dist:
    return Dist(choices=tuple(choices))


def _discount(low: float, high: float) -> Dist:
    return Dist(low=low, high=high, one_minus=True)


# RL Zoo's sample_ppo_params, with the liquid networks' sizes in neurons, LiquidPPO's
# training windows (seq_len) and its exploration noise (held noise or gSDE, Box actions)
PPO_SPACE: Space = {
    "learning_rate": _range(1e-5, 3e-3, log=True),
    "lr_schedule": _choice("constant", "linear"),
    "n_steps": _choice(64, 128, 256, 512, 1024, 2048),
    "batch_size": _choice(32, 64, 128, 256, 512),
    "seq_len": _choice(8, 16, 32, 64),
    "n_epochs": _choice(5, 10, 20, 30),
    "gamma": _discount(0.9, 0.9999),
    "gae_lambda": _discount(0.8, 0.999),
    "clip_range": _choice(0.1, 0.2, 0.3, 0.4),
    "ent_coef": _range(1e-8, 0.1, log=True),
    "max_grad_norm": _range(0.3, 5.0, log=True),
    "target_kl": _choice(None, 0.01, 0.02, 0.05),
    "actor_neurons": _choice(16, 32, 64, 128),
    "critic_neurons": _choice(16, 32, 64, 128),
    "actor_head": _choice(0, 32, 64, 128),  # width of one ReLU layer; 0: none
    "actor_dense_recurrence": _choice(False, True),
    "use_sde": _choice(False, True),  # Box actions only
    "noise_hold_steps": _choice(1, 2, 4, 8),  # Box actions without gSDE
    "elapsed_time_unit": _range(0.1, 10.0, log=True),  # only with elapsed_time_key
}

# RL Zoo's sample_sac_params, with NeuroFlow's sequence replay (seq_len, burn_in), its
# critic ensemble and its exploration strategies
NEUROFLOW_SPACE: Space = {
    "learning_rate": _range(1e-5, 3e-3, log=True),
    "batch_size": _choice(64, 128, 256, 512),
    "buffer_size": _choice(10_000, 100_000, 1_000_000),
    "learning_starts": _choice(100, 1000, 5000),
    "tau": _choice(0.001, 0.005, 0.01, 0.02, 0.05),
    "gamma": _discount(0.9, 0.9999),
    "utd_ratio": _choice(0.25, 0.5, 1.0, 2.0),
    "seq_len": _choice(4, 8, 16),
    "burn_in": _choice(0, 4, 8),
    "n_step": _choice(1, 3, 5),
    "actor_neurons": _choice(16, 32, 64, 128),
    "critic_hidden": _choice(64, 128, 256),  # two layers of this width
    "n_critics": _choice(2, 5, 10),
    "critic_encoder": _choice("actor", "own", "none"),
    "exploration": _choice("none", "oac", "ucb"),  # oac: Box actions only
    "target_entropy_scale": _range(0.1, 0.98),  # Discrete actions only
    "elapsed_time_unit": _range(0.1, 10.0, log=True),  # only with elapsed_time_key
}

ALGO_SPACES: dict[str, Space] = {"ppo": PPO_SPACE, "neuroflow": NEUROFLOW_SPACE}


def default_space(algo: str) -> Space:
    """A copy of ``algo``'s built-in space (``"ppo"`` or ``"neuroflow"``)."""
    return dict(ALGO_SPACES[algo])


# settings that apply to some tasks only: (algo, name) -> the context flag they need
_ONLY_WITH = {("ppo", "use_sde"): "box", ("ppo", "noise_hold_steps"): "box",
              ("ppo", "elapsed_time_unit"): "elapsed_time",
              ("neuroflow", "target_entropy_scale"): "discrete",
              ("neuroflow", "elapsed_time_unit"): "elapsed_time"}


def applicable(algo: str, space: Space, context: dict[str, Any]) -> Space:
    """``space`` without the settings the task does not use (gSDE and held noise without
    Box actions, the Discrete target entropy with them, the elapsed-time unit for an agent
    that does not read the elapsed time)."""
    flags = {**context, "discrete": not context.get("box", True)}
    return {name: dist for name, dist in space.items()
            if flags.get(_ONLY_WITH.get((algo, name), ""), True)}


# ------------------------------------------------------------------ sampling
class _Suggest:
    """Samples a space's settings under their own names (``1 - x`` ones as
    ``one_minus_<name>``), fixed values without asking the trial."""

    def __init__(self, trial: Any, space: Space) -> None:
        self.trial, self.space = trial, space

    def __contains__(self, name: str) -> bool:
        return name in self.space

    def __call__(self, name: str) -> Any:
        dist = self.space[name]
        if dist.fixed:
            return dist.value
        if dist.choices is not None:
            return self.trial.suggest_categorical(name, list(dist.choices))
        if dist.one_minus:
            x = self.trial.suggest_float(f"one_minus_{name}", 1.0 - dist.high, 1.0 - dist.low,
                                         log=True)
            return 1.0 - x
        if dist.integer:
            return self.trial.suggest_int(name, int(dist.low), int(dist.high), log=dist.log)
        return self.trial.suggest_float(name, dist.low, dist.high, log=dist.log)


# the space's names that are not agent arguments: each sample function turns them into some
_DERIVED = {"lr_schedule"}


def _plain(s: _Suggest, names: tuple[str, ...] | list[str], out: dict[str, Any]) -> None:
    for name in names:
        if name in s:
            out[name] = s(name)


def _largest_divisor_at_most(limit: int, *numbers: int) -> int:
    """The largest ``d <= limit`` that divides every number (1 at worst)."""
    common = math.gcd(*numbers)
    return max(d for d in range(1, max(min(limit, common), 1) + 1) if common % d == 0)


def sample_ppo(trial: Any, space: Space, context: dict[str, Any]) -> dict[str, Any]:
    """LiquidPPO's settings for ``trial``. ``context``: ``n_envs`` (the rollout's copies),
    ``box`` (Box actions) and ``elapsed_time`` (the agent reads the elapsed time)."""
    s, out = _Suggest(trial, space), {}
    _plain(s, ("learning_rate",), out)
    if "lr_schedule" in s and "learning_rate" in out and s("lr_schedule") == "linear":
        out["learning_rate"] = f"lin_{out['learning_rate']:.6g}"
    _plain(s, ("n_steps", "batch_size", "seq_len", "n_epochs", "gamma", "gae_lambda",
               "clip_range", "ent_coef", "max_grad_norm", "target_kl", "actor_neurons",
               "critic_neurons", "actor_dense_recurrence"), out)
    if "actor_head" in s:
        width = s("actor_head")
        out["actor_head"] = [] if not width else list(width) if isinstance(width, list) \
            else [int(width)]
    # the rollout holds n_steps * n_envs rows: a minibatch cannot be larger, and windows
    # of seq_len rows must tile both
    n_envs = int(context.get("n_envs", 1))
    n_steps = out.get("n_steps", context.get("n_steps", 128))
    if "batch_size" in out:
        out["batch_size"] = min(out["batch_size"], n_steps * n_envs)
    batch = out.get("batch_size", context.get("batch_size", 128))
    if "seq_len" in out and isinstance(n_steps, int) and isinstance(batch, int):
        out["seq_len"] = _largest_divisor_at_most(out["seq_len"], n_steps, batch)
    if context.get("box", True):
        sde = s("use_sde") if "use_sde" in s else False
        if "use_sde" in s:
            out["use_sde"] = sde
        if sde:  # gSDE holds its own noise: the hold is 1, over a base config's
            out["noise_hold_steps"] = 1  # (PendulumNoVel's tuned noise_hold_steps=4)
        elif "noise_hold_steps" in s:
            out["noise_hold_steps"] = s("noise_hold_steps")
    if context.get("elapsed_time"):
        _plain(s, ("elapsed_time_unit",), out)
    _plain(s, _extra_names(space, _PPO_NAMES), out)
    return out


_PPO_NAMES = set(PPO_SPACE)


def sample_neuroflow(trial: Any, space: Space, context: dict[str, Any]) -> dict[str, Any]:
    """NeuroFlow's settings for ``trial``. ``context``: ``box`` (Box actions) and
    ``elapsed_time`` (the agent reads the elapsed time)."""
    s, out = _Suggest(trial, space), {}
    _plain(s, ("learning_rate", "batch_size", "buffer_size", "learning_starts", "tau",
               "gamma", "utd_ratio", "seq_len", "burn_in", "n_step", "actor_neurons",
               "n_critics", "critic_encoder"), out)
    if "critic_hidden" in s:
        width = s("critic_hidden")
        out["critic_hidden"] = list(width) if isinstance(width, list) else [int(width)] * 2
    if "batch_size" in out and "seq_len" in out:
        out["batch_size"] = max(out["batch_size"], out["seq_len"])
    box = context.get("box", True)
    if "exploration" in s:
        out["exploration"] = s("exploration")
        if out["exploration"] == "oac" and not box:
            out["exploration"] = "none"  # OAC shifts a Gaussian's mean: Box actions only
        if out["exploration"] != "none" and out.get("n_critics", 2) < 2:
            out["n_critics"] = 2  # the strategies read the critics' disagreement
    if not box and "target_entropy_scale" in s:
        out["target_entropy_scale"] = s("target_entropy_scale")
    if context.get("elapsed_time"):
        _plain(s, ("elapsed_time_unit",), out)
    _plain(s, _extra_names(space, _NEUROFLOW_NAMES), out)
    return out


_NEUROFLOW_NAMES = set(NEUROFLOW_SPACE)

_SAMPLERS = {"ppo": sample_ppo, "neuroflow": sample_neuroflow}


def _extra_names(space: Space, known: set[str]) -> list[str]:
    """Settings a user's space adds (any other agent argument), sampled as given."""
    return [name for name in space if name not in known and name not in _DERIVED]


def sample_settings(algo: str, trial: Any, space: Space, context: dict[str, Any]
                    ) -> dict[str, Any]:
    """The agent arguments ``algo``'s sample function draws for ``trial`` (also an
    ``optuna.trial.FixedTrial`` of a finished trial's params: its settings again)."""
    return _SAMPLERS[algo](trial, space, context)


# ------------------------------------------------------------------ space files
def _dist(name: str, spec: Any, where: str) -> Dist:
    """One entry of a space file as a :class:`Dist`."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: {name} must be an object with 'low'/'high', 'choices' or "
                         f"'value', got {spec!r}")
    keys = set(spec)
    if keys == {"value"}:
        return Dist(value=spec["value"], fixed=True)
    if keys == {"choices"}:
        choices = spec["choices"]
        if (not isinstance(choices, list) or not choices
                or not all(isinstance(c, _JSONABLE) for c in choices)):
            raise ValueError(f"{where}: {name}'s choices must be a non-empty list of numbers, "
                             f"strings, booleans or null, got {choices!r}")
        return Dist(choices=tuple(choices))
    allowed = {"low", "high", "log", "int", "one_minus"}
    if not {"low", "high"} <= keys or not keys <= allowed:
        raise ValueError(f"{where}: {name} must have 'low' and 'high' (with optional 'log', "
                         f"'int', 'one_minus'), 'choices' or 'value'; got keys {sorted(keys)}")
    low, high = spec["low"], spec["high"]
    flags = {k: spec.get(k, False) for k in ("log", "int", "one_minus")}
    if not all(isinstance(v, bool) for v in flags.values()):
        raise ValueError(f"{where}: {name}'s log, int and one_minus must be true or false")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in (low, high)) or not low < high:
        raise ValueError(f"{where}: {name} needs numbers low < high, got {low!r} and {high!r}")
    if flags["one_minus"] and not 0 <= low < high < 1:
        raise ValueError(f"{where}: {name} with one_minus needs 0 <= low < high < 1")
    if flags["log"] and low <= 0:
        raise ValueError(f"{where}: {name} with log needs low > 0, got {low!r}")
    if flags["int"] and not (float(low).is_integer() and float(high).is_integer()):
        raise ValueError(f"{where}: {name} with int needs whole numbers")
    return Dist(low=low, high=high, log=flags["log"], integer=flags["int"],
                one_minus=flags["one_minus"])


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"--space {path}: no such file")
    text = path.read_text()
    if path.suffix.lower() in (".yml", ".yaml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"--space {path}: reading YAML needs pyyaml (pip install pyyaml); "
                             "a JSON file works without it") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"--space {path} is not valid YAML: "
                             f"{' '.join(str(exc).split())}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--space {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--space {path} must hold an object of settings")
    return data


def load_space_file(path: str | Path) -> tuple[dict[str, Dist], bool]:
    """A space file's entries and whether they replace the built-in space (``replace:
    true``) rather than narrow it."""
    path = Path(path)
    data = _read_mapping(path)
    replace = data.pop("replace", False)
    if not isinstance(replace, bool):
        raise ValueError(f"--space {path}: replace must be true or false, got {replace!r}")
    if not data:
        raise ValueError(f"--space {path} names no setting")
    return {name: _dist(name, spec, f"--space {path}") for name, spec in data.items()}, replace


def merge_space(algo: str, entries: dict[str, Dist], replace: bool, allowed: set[str]
                ) -> Space:
    """``algo``'s space with a file's entries: each replaces the built-in one of its name
    (or, with ``replace``, the file's entries are the whole space). ``allowed``: the
    agent's argument names; an entry must be one of them or a name of the space."""
    space = {} if replace else default_space(algo)
    known = allowed | set(ALGO_SPACES[algo])
    unknown = sorted(set(entries) - known)
    if unknown:
        raise ValueError(f"--space: unknown {algo} setting(s) {unknown}; expected some of "
                         f"{sorted(known)}")
    space.update(entries)
    return space
