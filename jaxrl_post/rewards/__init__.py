"""Rewards as jit-compiled pytrees (see `base.py` for the contract)."""

from jaxrl_post.rewards.base import HostReward, WeightedSum, weighted_sum
from jaxrl_post.rewards.chars import CharTable, completion_width, token_chars
from jaxrl_post.rewards.shaping import CalibrationReward, FormatReward, OverlongPenalty
from jaxrl_post.rewards.similarity import (StepSimilarityReward, host_sequence_ratio,
                                           sequence_ratio, step_similarity_reward)
from jaxrl_post.rewards.verifiers import (CountdownReward, Gp24Reward, Gsm8kReward,
                                          countdown_reward, gp24_reward, gsm8k_reward)
