"""rldelta: measure how RL fine-tuning changes a language model's weights."""

__version__ = "0.1.0"
