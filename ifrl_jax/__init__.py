"""ifrl_jax: self-supervised reinforcement learning for multi-constraint instruction following."""

__version__ = "0.1.0"
