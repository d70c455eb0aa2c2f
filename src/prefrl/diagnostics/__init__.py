"""Instruments that tell whether optimisation worked or hacked the reward: KL, gold vs proxy, degenerate outputs."""
