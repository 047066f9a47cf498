"""What every agent shares: the base class (environment setup, ``learn``'s loop,
``predict``, logging, callbacks, saving through hooks), the liquid actor and the acting
policy, evaluation, schedules, normalisation, optimiser steps and the tuned settings.

Nothing here imports an algorithm (:mod:`agents.neuroflow`, :mod:`agents.ppo`).
"""
