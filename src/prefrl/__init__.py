"""prefrl: reinforcement learning from human preferences, for control agents and language models."""

__version__ = "0.1.0"
