"""jaxrl_post: JAX-native LLM post-training (SFT, GRPO family, SRL) and analysis."""

__version__ = "0.1.0"
