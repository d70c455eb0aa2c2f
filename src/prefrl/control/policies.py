"""Actor-critic networks for Gymnasium control: MLP (vector obs) and Nature-CNN (Atari frames).

Follows cleanrl (``ppo_continuous_action.py``, ``ppo_atari.py``): separate tanh MLPs for
actor and critic (stored stacked, see :class:`TwinMLP`) with orthogonal init (gain √2, 0.01 for the policy head, 1 for the value
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

__all__ = ["ActorCritic", "IMAGE_TORSOS", "TwinMLP", "image_torso", "is_image_space", "layer_init"]

#: Image torsos of :class:`ActorCritic`: (conv (filters, kernel, stride) layers, feature width).
IMAGE_TORSOS: dict[str, tuple[tuple[tuple[int, int, int], ...], int]] = {
    # DQN (Mnih et al. 2015), cleanrl's ppo_atari: ≈ 9.3 M multiply-adds per 4×84×84 frame.
    "nature": (((32, 8, 4), (64, 4, 2), (64, 3, 1)), 512),
    # Mnih et al. 2013, the A3C network (Mnih et al. 2016) that Christiano et al. 2017 trained their
    # Atari policies with: ≈ 3.0 M multiply-adds, 3.1× less compute per step (docs/benchmarks_control.md).
    "a3c": (((16, 8, 4), (32, 4, 2)), 256),
}

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def layer_init(layer: nn.Module, std: float = math.sqrt(2.0), bias_const: float = 0.0) -> nn.Module:
    """Orthogonal weights with gain ``std``, constant bias (cleanrl's ``layer_init``)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


def is_image_space(space: gym.Space) -> bool:
    """A uint8 ``Box`` with three dims (C, H, W): a stack of frames."""
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


def _frames(obs: torch.Tensor) -> torch.Tensor:
    """uint8 frame stacks (N, C, H, W) → float in [0, 1], channels-last in memory (laid out while still uint8)."""
    x = obs.contiguous(memory_format=torch.channels_last)
    return x.float().mul_(1.0 / 255.0) if x.dtype != torch.float32 else x * (1.0 / 255.0)  # never in place on the input


def image_torso(obs_shape: tuple[int, ...], name: str) -> nn.Sequential:
    """The conv torso ``name`` of :data:`IMAGE_TORSOS` over (C, H, W) frames → (N, width) ReLU features."""
    convs, width = IMAGE_TORSOS[name]
    layers: list[nn.Module] = []
    c = obs_shape[0]
    for filters, kernel, stride in convs:
        layers += [layer_init(nn.Conv2d(c, filters, kernel, stride=stride)), nn.ReLU()]
        c = filters
    torso = nn.Sequential(*layers, nn.Flatten())
    with torch.no_grad():
        n_flat = torso(torch.zeros(1, *obs_shape)).shape[1]
    return torso.extend([layer_init(nn.Linear(n_flat, width)), nn.ReLU()])


class TwinMLP(nn.Module):
    """The actor's and the critic's tanh MLPs, stored stacked and run together.

    Two independent networks (no shared weights): tower 0 is the actor (``out_dims[0]``
    outputs), tower 1 the critic (``out_dims[1]``). Layer l holds ``weight`` (2, in, out) and
    ``bias`` (2, 1, out), and one ``baddbmm`` computes the layer for both towers. On CPU the
    cost of a small PPO network is per-op overhead, not flops, so this halves the number of
    ops of every forward and backward pass (collect and update alike). The last layer is
    padded to max(out_dims); the padding columns are never read.
    """

    def __init__(
        self, in_dim: int, hidden: tuple[int, ...], out_dims: tuple[int, int], out_stds: tuple[float, float]
    ) -> None:
        super().__init__()
        self.out_dims = out_dims
        self._actor_views: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        sizes = [in_dim, *hidden, max(out_dims)]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            w = torch.zeros(2, n_in, n_out)
            last = i == len(sizes) - 2
            for k in range(2):
                n = out_dims[k] if last else n_out
                gain = out_stds[k] if last else math.sqrt(2.0)
                # orthogonal init of the (out, in) matrix, as nn.Linear + cleanrl's layer_init
                w[k, :, :n] = nn.init.orthogonal_(torch.empty(n, n_in), gain).T
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(2, 1, n_out)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, in) → (actor output (B, out_dims[0]), critic output (B, out_dims[1]))."""
        h = x.unsqueeze(0).expand(2, *x.shape)  # (2, B, in)
        n_layers = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)  # (2, B, out)
            if i < n_layers - 1:
                h = torch.tanh(h)
        return h[0, :, : self.out_dims[0]], h[1, :, : self.out_dims[1]]

    def forward_actor(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, in) → the actor's output (B, out_dims[0]) alone, one ``addmm`` per layer; no gradients.

        The env loop needs only the action, so it skips the critic tower here (the rollout's
        log-probabilities and values are computed afterwards in one batched call).
        """
        layers = self._actor_layers()
        h = x
        for w, b in layers[:-1]:
            h = torch.tanh(torch.addmm(b, h, w))
        w, b = layers[-1]
        return torch.addmm(b, h, w)[:, : self.out_dims[0]]

    def _actor_layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Detached views (in, out), (1, out) of tower 0's layers, cached.

        They share the parameters' memory, which the optimiser and ``load_state_dict`` update
        in place; ``.to()`` and friends (``_apply``) drop the cache. Inference only: no gradients.
        """
        if self._actor_views is None:
            self._actor_views = [(w.detach()[0], b.detach()[0]) for w, b in zip(self.weights, self.biases, strict=True)]
        return self._actor_views

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001, ANN202 - nn.Module's signature
        self._actor_views = None
        return super()._apply(fn, *args, **kwargs)


class ActorCritic(nn.Module):
    """π(a|s) and V(s) for one observation space and one action space.

    Args:
        obs_space: a ``Box`` (vector, flattened if multi-dimensional float; or a uint8 (C, H, W) frame stack).
        action_space: ``Box`` (diagonal Gaussian) or ``Discrete`` (categorical).
        hidden: hidden sizes of the actor and critic MLPs (vector obs; ignored for images).
        cnn: the torso of image observations, shared by both heads (:func:`image_torso`):
            ``nature`` (Mnih et al. 2015, 512 features) or ``a3c`` (Mnih et al. 2013/2016, 256).

    Raises:
        ValueError: for other spaces (Dict, Tuple, MultiDiscrete, Discrete observations…).
    """

    def __init__(
        self, obs_space: gym.Space, action_space: gym.Space, hidden: tuple[int, ...] = (64, 64), cnn: str = "nature"
    ) -> None:
        super().__init__()
        if not isinstance(obs_space, gym.spaces.Box):
            raise ValueError(
                f"unsupported observation space {obs_space}: only Box observations are supported"
            )
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
            if cnn not in IMAGE_TORSOS:
                raise ValueError(f"unknown policy CNN {cnn!r}; choose one of {', '.join(IMAGE_TORSOS)}")
            # Channels-last convolutions: measured 22 % less CPU for a PPO update of the A3C torso on one core.
            self.torso: nn.Module | None = image_torso(obs_space.shape, cnn).to(memory_format=torch.channels_last)
            width = self.torso[-2].out_features
            self.actor_head: nn.Module | None = layer_init(nn.Linear(width, act_dim), std=0.01)
            self.critic_head: nn.Module | None = layer_init(nn.Linear(width, 1), std=1.0)
            self.mlp: TwinMLP | None = None
        else:
            self.torso = self.actor_head = self.critic_head = None
            in_dim = int(np.prod(obs_space.shape))
            self.mlp = TwinMLP(in_dim, tuple(hidden), (act_dim, 1), (0.01, 1.0))
        # State-independent log σ (Box only), initialised to 0 as in cleanrl.
        self.actor_logstd = nn.Parameter(torch.zeros(1, act_dim)) if self.continuous else None

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs (N, *obs_shape) → (action mean or logits (N, act_dim), value (N,))."""
        if self.mlp is not None:
            out, value = self.mlp(obs.reshape(obs.shape[0], -1).float())
            return out, value.squeeze(-1)
        x = self.torso(_frames(obs))  # (N, 512 or 256)
        return self.actor_head(x), self.critic_head(x).squeeze(-1)

    def actor_output(self, obs: torch.Tensor) -> torch.Tensor:
        """obs (N, *obs_shape) → action mean (Box) or logits (Discrete), (N, act_dim); no critic."""
        if self.mlp is not None:
            return self.mlp.forward_actor(obs.reshape(obs.shape[0], -1).float())
        return self.actor_head(self.torso(_frames(obs)))

    def draw_noise(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise for :meth:`sample` of shape (*shape, act_dim), drawn in one call for a whole rollout.

        Box: standard normal ε, scaled by σ (the action is μ + σ·ε). Discrete: Gumbel noise
        g = −log E with E ~ Exp(1) (the action is argmax(logits + g), the Gumbel-max trick:
        exactly a sample from softmax(logits)). Drawn on the CPU (``generator`` is a CPU
        generator); move it to the policy's device before :meth:`sample`.
        """
        size = (*shape, self.act_dim)
        if self.continuous:
            return torch.randn(size, generator=generator) * self.actor_logstd.detach().exp().cpu()
        return torch.empty(size).exponential_(generator=generator).log_().neg_()

    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Actions for obs (N, …) from pre-drawn :meth:`draw_noise` (N, act_dim): the env loop's only call.

        Same distribution as :meth:`get_action_and_value` with ``action=None``, at a fraction
        of its cost (actor only, no log-probabilities): score the actions afterwards, batched.
        """
        out = self.actor_output(obs)
        if self.continuous:
            return out + noise
        return (out + noise).argmax(-1)

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s): (N,) for obs (N, *obs_shape)."""
        return self.forward(obs)[1]

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
        out, value = self.forward(obs)  # (N, act_dim) mean or logits, (N,)
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
