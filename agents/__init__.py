"""Reinforcement-learning agents built on velora_ens' liquid networks.

Laid out by role, as Stable-Baselines3 is: :mod:`agents.common` (the base class and what
every agent shares), :mod:`agents.driver` (the environments), and one folder per
algorithm, :mod:`agents.neuroflow` and :mod:`agents.ppo`, which never import each other.

``agents.load_agent(path)`` loads a saved agent of whatever class the file names.
"""

from agents.common.actor import LiquidActor
from agents.common.base import BaseAgent, NonFiniteTrainingError
from agents.common.evaluation import evaluate_policy
from agents.common.policy import LiquidPolicy
from agents.neuroflow.critics import CriticEnsemble
from agents.neuroflow.neuroflow import NeuroFlow
from agents.neuroflow.replay import SequenceBatch, SequenceReplayBuffer
from agents.ppo.ppo import LiquidPPO

load_agent = BaseAgent.load

__all__ = ["BaseAgent", "CriticEnsemble", "LiquidActor", "LiquidPPO", "LiquidPolicy", "NeuroFlow",
           "NonFiniteTrainingError", "SequenceBatch", "SequenceReplayBuffer", "evaluate_policy",
           "load_agent"]
