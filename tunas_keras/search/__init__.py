"""Architecture search: the controller (policy), rewards and the REINFORCE update.

    >>> from tunas_keras.search import Controller, Reinforce, Reward, rl_learning_rate
"""

from tunas_keras.search.controller import Controller
from tunas_keras.search.reinforce import Reinforce, default_optimizer, rl_learning_rate
from tunas_keras.search.rewards import REWARDS, Reward, get_reward

__all__ = ["REWARDS", "Controller", "Reinforce", "Reward", "default_optimizer", "get_reward", "rl_learning_rate"]
