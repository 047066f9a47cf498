"""The environment side of every agent: the driver that steps Gymnasium vector envs
(both autoreset modes, checks, the action log for exact resume), the bridges to and
from Stable-Baselines3's ``VecEnv``, observation and action spaces, and the elapsed time
between observations.

It imports nothing else from :mod:`agents`.
"""
