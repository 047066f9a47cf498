"""Reinforcement-learning agents built on velora_ens' liquid networks."""

from agents.buffers import SequenceBatch, SequenceReplayBuffer
from agents.critics import CriticEnsemble
from agents.neuroflow import NeuroFlow, NonFiniteTrainingError
from agents.policies import LiquidActor

__all__ = ["CriticEnsemble", "LiquidActor", "NeuroFlow", "NonFiniteTrainingError", "SequenceBatch",
           "SequenceReplayBuffer"]
