"""Reinforcement-learning agents built on velora_ens' liquid networks.

``agents.load_agent(path)`` loads a saved agent of whatever class the file names.
"""

from agents.acting import LiquidPolicy
from agents.base import BaseAgent, NonFiniteTrainingError
from agents.buffers import SequenceBatch, SequenceReplayBuffer
from agents.critics import CriticEnsemble
from agents.evaluation import evaluate_policy
from agents.neuroflow import NeuroFlow
from agents.policies import LiquidActor
from agents.ppo import LiquidPPO

load_agent = BaseAgent.load

__all__ = ["BaseAgent", "CriticEnsemble", "LiquidActor", "LiquidPPO", "LiquidPolicy", "NeuroFlow",
           "NonFiniteTrainingError", "SequenceBatch", "SequenceReplayBuffer", "evaluate_policy",
           "load_agent"]
