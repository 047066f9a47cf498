"""LiquidPPO, recurrent PPO with liquid networks: the agent, its rollout storage, the
value functions, GAE and its exploration noise.

It imports :mod:`agents.common` and :mod:`agents.driver`, never :mod:`agents.neuroflow`.
"""

from agents.ppo.ppo import LiquidPPO

__all__ = ["LiquidPPO"]
