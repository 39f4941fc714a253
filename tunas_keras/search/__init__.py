"""Architecture search: the controller (policy), rewards and the REINFORCE update.

>>> from tunas_keras.search import Controller, Reinforce, Reward, rl_learning_rate
"""

from tunas_keras.search.controller import Controller, Sample
from tunas_keras.search.cross_sample_adam import CrossSampleAdam
from tunas_keras.search.reinforce import Reinforce, rl_delay_steps, rl_learning_rate
from tunas_keras.search.rewards import REWARDS, Reward, get_reward

__all__ = [
    "REWARDS",
    "Controller",
    "CrossSampleAdam",
    "Reinforce",
    "Reward",
    "Sample",
    "get_reward",
    "rl_delay_steps",
    "rl_learning_rate",
]
