"""NeuroFlow, soft actor-critic with a liquid actor: the agent, its sequence replay, the
critic heads over the ``(N, B, out)`` member shape, the critics' view of the history,
the exploration strategies and the n-step targets.

It imports :mod:`agents.common` and :mod:`agents.driver`, never :mod:`agents.ppo`.
"""

from agents.neuroflow.neuroflow import NeuroFlow

__all__ = ["NeuroFlow"]
