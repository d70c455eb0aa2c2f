"""prefrl.rl — the RL pieces shared by the control and language-model agents.

- :mod:`prefrl.rl.ppo`: ``PPOConfig``, ``RolloutBuffer``, ``ppo_update`` (one PPO update, built from
  :mod:`prefrl.losses`).
- :mod:`prefrl.rl.kl_control`: KL-coefficient controllers.

Import from the submodules; this package imports nothing so that ``prefrl.rl.kl_control`` stays torch-free.
"""
