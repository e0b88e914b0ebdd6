"""fastlight: the fast.ai course's tasks as PyTorch Lightning + Hydra + W&B experiments."""

__version__ = "0.1.0"
