"""Actor-critic networks for Gymnasium control: MLP (vector obs) and Nature-CNN (Atari frames).

Follows cleanrl (``ppo_continuous_action.py``, ``ppo_atari.py``): separate tanh MLPs for
actor and critic with orthogonal init (gain √2, 0.01 for the policy head, 1 for the value
head); a diagonal Gaussian with a state-independent log-std for ``Box`` actions, a
categorical for ``Discrete``; uint8 image stacks go through the Nature-CNN torso
(Mnih et al. 2015), scaled by 1/255 and shared by both heads.

Log-probabilities and entropies are written out instead of going through
``torch.distributions`` (which validates arguments and builds objects on every call):
the env loop calls this once per step, so its overhead is the rollout's overhead.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn

__all__ = ["ActorCritic", "is_image_space", "layer_init"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def layer_init(layer: nn.Module, std: float = math.sqrt(2.0), bias_const: float = 0.0) -> nn.Module:
    """Orthogonal weights with gain ``std``, constant bias (cleanrl's ``layer_init``)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


def is_image_space(space: gym.Space) -> bool:
    """A uint8 ``Box`` with three dims (C, H, W): a stack of frames."""
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


def _mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, out_std: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [layer_init(nn.Linear(in_dim, h)), nn.Tanh()]
        in_dim = h
    layers.append(layer_init(nn.Linear(in_dim, out_dim), std=out_std))
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """π(a|s) and V(s) for one observation space and one action space.

    Args:
        obs_space: a ``Box`` (vector, flattened if multi-dimensional float; or a uint8 (C, H, W) frame stack).
        action_space: ``Box`` (diagonal Gaussian) or ``Discrete`` (categorical).
        hidden: hidden sizes of the actor and critic MLPs (vector obs) or of the heads'
            input (images: the CNN's 512-unit feature layer is used and ``hidden`` ignored).

    Raises:
        ValueError: for other spaces (Dict, Tuple, MultiDiscrete, Discrete observations…).
    """

    def __init__(self, obs_space: gym.Space, action_space: gym.Space, hidden: tuple[int, ...] = (64, 64)) -> None:
        super().__init__()
        if not isinstance(obs_space, gym.spaces.Box):
            raise ValueError(f"unsupported observation space {obs_space}: only Box observations are supported")
        if isinstance(action_space, gym.spaces.Box):
            if len(action_space.shape) != 1:
                raise ValueError(f"unsupported action space {action_space}: Box actions must be 1-D")
            self.continuous = True
            act_dim = int(action_space.shape[0])
        elif isinstance(action_space, gym.spaces.Discrete):
            self.continuous = False
            act_dim = int(action_space.n)
        else:
            raise ValueError(f"unsupported action space {action_space}: only Box and Discrete are supported")
        if any(h <= 0 for h in hidden):
            raise ValueError(f"hidden sizes must be positive, got {hidden}")
        self.obs_shape = tuple(obs_space.shape)
        self.act_dim = act_dim
        self.image = is_image_space(obs_space)

        if self.image:
            c = obs_space.shape[0]
            self.torso: nn.Module | None = nn.Sequential(
                layer_init(nn.Conv2d(c, 32, 8, stride=4)),
                nn.ReLU(),
                layer_init(nn.Conv2d(32, 64, 4, stride=2)),
                nn.ReLU(),
                layer_init(nn.Conv2d(64, 64, 3, stride=1)),
                nn.ReLU(),
                nn.Flatten(),
            )
            with torch.no_grad():
                n_flat = self.torso(torch.zeros(1, *obs_space.shape)).shape[1]
            self.torso.append(layer_init(nn.Linear(n_flat, 512)))
            self.torso.append(nn.ReLU())
            self.actor_mean = layer_init(nn.Linear(512, act_dim), std=0.01)
            self.critic = layer_init(nn.Linear(512, 1), std=1.0)
        else:
            self.torso = None
            in_dim = int(np.prod(obs_space.shape))
            self.actor_mean = _mlp(in_dim, tuple(hidden), act_dim, out_std=0.01)
            self.critic = _mlp(in_dim, tuple(hidden), 1, out_std=1.0)
        # State-independent log σ (Box only), initialised to 0 as in cleanrl.
        self.actor_logstd = nn.Parameter(torch.zeros(1, act_dim)) if self.continuous else None

    def _features(self, obs: torch.Tensor) -> torch.Tensor:
        if self.torso is not None:
            return self.torso(obs.float() * (1.0 / 255.0))  # (N, 512)
        return obs.reshape(obs.shape[0], -1).float()  # (N, obs_dim)

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s): (N,) for obs (N, *obs_shape)."""
        return self.critic(self._features(obs)).squeeze(-1)

    def get_action_and_value(
        self,
        obs: torch.Tensor,
        action: torch.Tensor | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample (or score) an action and evaluate the state.

        Args:
            obs: (N, *obs_shape) policy inputs.
            action: (N, act_dim) or (N,) actions to score; sampled when None.
            deterministic: take the mean (Box) / the arg-max (Discrete) instead of sampling.
            generator: torch RNG for the sample.

        Returns:
            (action, logprob (N,), entropy (N,), value (N,)). A Box action is the raw
            Gaussian sample; clipping to the action bounds is the caller's job.
        """
        x = self._features(obs)
        value = self.critic(x).squeeze(-1)  # (N,)
        out = self.actor_mean(x)  # (N, act_dim): mean or logits
        if self.continuous:
            log_std = self.actor_logstd.expand_as(out)
            std = log_std.exp()
            if action is None:
                if deterministic:
                    action = out.detach()
                else:
                    noise = torch.randn(out.shape, generator=generator, dtype=out.dtype, device=out.device)
                    action = (out + std * noise).detach()
            z = (action - out) / std
            logprob = (-0.5 * z * z - log_std - _LOG_SQRT_2PI).sum(-1)
            entropy = (0.5 + _LOG_SQRT_2PI + log_std).sum(-1)
            return action, logprob, entropy, value
        log_p = torch.log_softmax(out, dim=-1)  # (N, n)
        if action is None:
            if deterministic:
                action = out.argmax(-1)
            else:
                action = torch.multinomial(log_p.detach().exp(), 1, generator=generator).squeeze(-1)
        logprob = log_p.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
        entropy = -(log_p.exp() * log_p).sum(-1)
        return action, logprob, entropy, value
