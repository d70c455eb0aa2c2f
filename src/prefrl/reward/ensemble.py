"""An ensemble of learned reward functions r̂(o, a) (Christiano et al. 2017, §2.2.3 and Appendix A).

Each of the M members is its own network: a 2×64 leaky-ReLU MLP over the flattened
observation ‖ action for vector observations, or the paper's Atari CNN (obs only) for
images. The reward handed to the agent is the mean of the members after each member has
been normalised to mean 0 and standard deviation ``target_std`` over recent segments;
the spread of the members is the model's uncertainty (used by the disagreement selector).

The MLP members' weights are stacked into (M, in, out) tensors so that each member can
train on its own bootstrap batch; see :class:`_MemberMLPs` for the measured choice of a
member loop over batched matmuls.

Normalisation is an affine map applied *after* the networks, only to what the agent sees
(``normalised=True``, the default). The reward trainer fits the raw outputs
(``normalised=False``): a Bradley-Terry model's scale is what it learns, so rescaling it
between rounds would change its predicted probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prefrl.data.types import Segment

__all__ = ["RewardEnsemble", "stack_segments"]

#: Leaky-ReLU slope of the paper's reward networks (Appendix A).
LEAKY_SLOPE = 0.01



class _MemberMLPs(nn.Module):
    """M independent MLPs whose weights are stacked into (M, in, out) tensors.

    The stacked storage lets each member take its own bootstrap batch (x of shape
    (M, N, D)) or share one (x of shape (N, D)). The forward pass is a loop over members
    of plain 2-D matmuls: measured on one CPU core (2048 × (17 + 6) inputs, M = 3, 2×64)
    the loop takes 1.2–1.5 ms while batched ``bmm`` / ``einsum`` / broadcast ``matmul``
    over the member axis take 2.6–3.8 ms (CPU bmm kernels are slow at these sizes).
    """

    def __init__(
        self,
        n_members: int,
        in_dim: int,
        hidden: Sequence[int],
        dropout: float,
        generator: torch.Generator | None,
    ) -> None:
        super().__init__()
        dims = [in_dim, *hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            # nn.Linear's default init: U(−1/√fan_in, 1/√fan_in) for weights and biases.
            bound = 1.0 / math.sqrt(d_in)
            w = torch.empty(n_members, d_in, d_out).uniform_(-bound, bound, generator=generator)
            b = torch.empty(n_members, d_out).uniform_(-bound, bound, generator=generator)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, D) shared by all members or (M, N, D) one batch per member → (M, N)."""
        n_layers = len(self.weights)
        outputs = []
        for m in range(self.weights[0].shape[0]):
            h = x if x.dim() == 2 else x[m]  # (N, D)
            for i, (w, b) in enumerate(zip(self.weights, self.biases)):
                h = torch.addmm(b[m], h, w[m])  # (N, d_out)
                if i < n_layers - 1:
                    h = self.dropout(F.leaky_relu(h, LEAKY_SLOPE))
            outputs.append(h.squeeze(-1))
        return torch.stack(outputs)  # (M, N)


def _atari_cnn(in_channels: int, height: int, width: int, dropout: float) -> nn.Sequential:
    """The reward CNN of Christiano et al. 2017, Appendix A.2 (one member).

    4 conv layers (7×7, 5×5, 3×3, 3×3; strides 3, 2, 1, 1; 16 filters each), each with
    batch norm, leaky ReLU (α = 0.01) and dropout 0.5, then a dense layer of 64 and a
    scalar output.
    """
    layers: list[nn.Module] = []
    c = in_channels
    for kernel, stride in ((7, 3), (5, 2), (3, 1), (3, 1)):
        layers += [nn.Conv2d(c, 16, kernel, stride), nn.BatchNorm2d(16), nn.LeakyReLU(LEAKY_SLOPE)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        c = 16
    convs = nn.Sequential(*layers)
    with torch.no_grad():
        try:
            n_flat = convs.eval()(torch.zeros(1, in_channels, height, width)).numel()
        except RuntimeError:
            raise ValueError(
                f"image observations of {height}×{width} are too small for the reward CNN (need ≥ 43×43)"
            ) from None
    return nn.Sequential(convs, nn.Flatten(), nn.Linear(n_flat, 64), nn.LeakyReLU(LEAKY_SLOPE), nn.Linear(64, 1))


class RewardEnsemble(nn.Module):
    """M reward networks r̂_m(o, a) with per-member normalisation; the reward is their mean.

    Args:
        obs_shape: shape of one observation. Three dims with ``image`` left at ``None``
            means an image: (H, W, C) when the last axis is ≤ 4 and the first is not,
            else (C, H, W). Images are scaled by 1/255 and get the CNN, obs only.
        act_shape: shape of one action; ``()`` for a Discrete action.
        n_members: ensemble size M (the paper uses 3).
        hidden: hidden layer widths of each MLP member (the paper: 64, 64).
        dropout: dropout rate of the MLP members' hidden layers.
        use_actions: whether r̂ sees the action (vector observations only).
        action_dim: number of actions of a Discrete action space; actions are then
            integer indices, one-hot encoded.
        target_std: per-member standard deviation of the normalised reward.
        cnn_dropout: dropout rate of the CNN members (the paper: 0.5).
        image: force (True) or forbid (False) the CNN; ``None`` decides by ``obs_shape``.
        seed: seeds the initial weights of the members (global torch RNG when ``None``).
    """

    norm_offset: torch.Tensor
    norm_scale: torch.Tensor

    @classmethod
    def for_spaces(cls, obs_space: Any, action_space: Any, n_members: int = 3, hidden: Sequence[int] = (64, 64),
                   seed: int | None = None, **kwargs: Any) -> RewardEnsemble:
        """An ensemble for a Gymnasium env's observation and action spaces (Discrete actions one-hot)."""
        action_dim = int(action_space.n) if hasattr(action_space, "n") else None
        return cls(obs_shape=tuple(obs_space.shape), act_shape=tuple(action_space.shape), n_members=n_members,
                   hidden=hidden, action_dim=action_dim, seed=seed, **kwargs)

    def __init__(
        self,
        obs_shape: Sequence[int],
        act_shape: Sequence[int] = (),
        n_members: int = 3,
        hidden: Sequence[int] = (64, 64),
        dropout: float = 0.0,
        use_actions: bool = True,
        action_dim: int | None = None,
        target_std: float = 1.0,
        cnn_dropout: float = 0.5,
        image: bool | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.act_shape = tuple(int(d) for d in act_shape)
        if n_members < 1:
            raise ValueError(f"n_members must be ≥ 1, got {n_members}")
        if not 0.0 <= dropout < 1.0 or not 0.0 <= cnn_dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got dropout={dropout}, cnn_dropout={cnn_dropout}")
        if target_std <= 0:
            raise ValueError(f"target_std must be positive, got {target_std}")
        if action_dim is not None and action_dim < 1:
            raise ValueError(f"action_dim must be ≥ 1 for a Discrete action space, got {action_dim}")
        if action_dim is not None and math.prod(self.act_shape) != 1:
            raise ValueError(f"action_dim is for Discrete actions (act_shape ()), got act_shape {self.act_shape}")
        if any(d < 1 for d in (*self.obs_shape, *hidden)):
            raise ValueError(f"obs_shape and hidden must be positive, got {self.obs_shape} and {tuple(hidden)}")
        self.n_members = n_members
        self.target_std = float(target_std)
        self.action_dim = action_dim
        self.image = len(self.obs_shape) == 3 if image is None else bool(image)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        if self.image:
            if len(self.obs_shape) != 3:
                raise ValueError(f"image observations need 3 dims, got obs_shape {self.obs_shape}")
            h0, _, c_last = self.obs_shape
            self.channels_last = c_last <= 4 and h0 > 4
            c, h, w = (c_last, *self.obs_shape[:2]) if self.channels_last else self.obs_shape
            self.use_actions = False  # the paper's Atari reward model sees frames only
            self.cnns = nn.ModuleList(_atari_cnn(c, h, w, cnn_dropout) for _ in range(n_members))
            if generator is not None:
                _reinit(self.cnns, generator)
            # Channels-last convolutions: measured 18 % less CPU to score frames and 25 % less to train, one core.
            self.cnns.to(memory_format=torch.channels_last)
            self.mlps = None
        else:
            self.channels_last = False
            self.use_actions = use_actions
            act_dim = (action_dim if action_dim is not None else math.prod(self.act_shape)) if use_actions else 0
            self.in_dim = math.prod(self.obs_shape) + act_dim
            self.mlps = _MemberMLPs(n_members, self.in_dim, hidden, dropout, generator)
            self.cnns = None
        self.register_buffer("norm_offset", torch.zeros(n_members))
        self.register_buffer("norm_scale", torch.ones(n_members))

    # ------------------------------------------------------------------ inputs
    def _batch_shape(self, obs: torch.Tensor, act: torch.Tensor | None) -> tuple[int, ...]:
        k = len(self.obs_shape)
        if obs.dim() < k or tuple(obs.shape[obs.dim() - k :]) != self.obs_shape:
            raise ValueError(f"obs must end in obs_shape {self.obs_shape}, got shape {tuple(obs.shape)}")
        batch = tuple(obs.shape[: obs.dim() - k])
        if self.use_actions:
            if act is None:
                raise ValueError("act is required: this reward model uses actions")
            if tuple(act.shape[: len(batch)]) != batch or math.prod(act.shape[len(batch) :]) != max(
                1, math.prod(self.act_shape)
            ):
                raise ValueError(
                    f"act must have shape {batch + self.act_shape} to match obs {tuple(obs.shape)}, "
                    f"got {tuple(act.shape)}"
                )
        return batch

    def _features(self, obs: torch.Tensor, act: torch.Tensor | None, n: int) -> torch.Tensor:
        """Flattened network input: (n, D) for the MLP, (n, C, H, W) in [0, 1] for the CNN."""
        device = self.norm_offset.device
        obs = obs.to(device)
        if self.image:
            x = obs.reshape(n, *self.obs_shape)
            x = (x.permute(0, 3, 1, 2) if self.channels_last else x).contiguous(memory_format=torch.channels_last).float()
            return x.mul_(1.0 / 255.0) if obs.dtype == torch.uint8 else x  # (n, C, H, W), channels-last in memory
        x = obs.reshape(n, -1).float()
        if not self.use_actions:
            return x
        assert act is not None
        act = act.to(device)
        if self.action_dim is not None:
            a = F.one_hot(act.reshape(n).long(), self.action_dim).float()
        else:
            a = act.reshape(n, -1).float()
        return torch.cat([x, a], dim=-1)  # (n, obs_dim + act_dim)

    # ------------------------------------------------------------------ networks
    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised member rewards of shared inputs x (N, …) → (M, N)."""
        if self.mlps is not None:
            return self.mlps(x)
        assert self.cnns is not None
        return torch.stack([cnn(x).squeeze(-1) for cnn in self.cnns])

    def _raw_per_member(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised rewards with one input batch per member, x (M, N, …) → (M, N)."""
        if self.mlps is not None:
            return self.mlps(x)
        assert self.cnns is not None
        return torch.stack([cnn(x[m]).squeeze(-1) for m, cnn in enumerate(self.cnns)])

    def _normalise(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.norm_offset.unsqueeze(-1)) * self.norm_scale.unsqueeze(-1)

    # ------------------------------------------------------------------ public API
    def member_rewards(
        self, obs: np.ndarray | torch.Tensor, act: np.ndarray | torch.Tensor | None = None, normalised: bool = True
    ) -> torch.Tensor:
        """Per-step rewards of every member: obs (*batch, *obs_shape) → (M, *batch).

        ``normalised=False`` gives the raw network outputs, which the trainer fits.
        """
        obs_t = torch.as_tensor(obs)
        act_t = None if act is None else torch.as_tensor(act)
        batch = self._batch_shape(obs_t, act_t)
        n = math.prod(batch)
        raw = self._raw(self._features(obs_t, act_t, n))  # (M, n)
        out = self._normalise(raw) if normalised else raw
        return out.reshape(self.n_members, *batch)

    def member_rewards_per_member(
        self, obs: torch.Tensor, act: torch.Tensor | None = None, normalised: bool = False
    ) -> torch.Tensor:
        """Rewards where member m sees its own batch (bootstrap training): obs (M, *batch, *obs_shape) → (M, *batch)."""
        if obs.shape[0] != self.n_members:
            raise ValueError(f"obs must lead with the {self.n_members} members, got shape {tuple(obs.shape)}")
        batch = self._batch_shape(obs, act)  # includes M
        n = math.prod(batch)
        x = self._features(obs, act, n)
        raw = self._raw_per_member(x.reshape(self.n_members, n // self.n_members, *x.shape[1:]))
        out = self._normalise(raw) if normalised else raw
        return out.reshape(*batch)

    def forward(self, obs: np.ndarray | torch.Tensor, act: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """Ensemble reward: mean over members of the normalised rewards, (*batch)."""
        return self.member_rewards(obs, act).mean(dim=0)

    def disagreement(self, obs: np.ndarray | torch.Tensor, act: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """Standard deviation over members of the normalised per-step rewards, (*batch)."""
        return self.member_rewards(obs, act).std(dim=0, unbiased=False)

    def segment_returns(
        self,
        obs: np.ndarray | torch.Tensor,
        act: np.ndarray | torch.Tensor | None = None,
        normalised: bool = True,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Summed rewards of each segment per member: obs (B, T, *obs_shape) → (M, B).

        ``mask`` (B, T) of 0/1 drops padded steps of shorter segments.
        """
        r = self.member_rewards(obs, act, normalised=normalised)  # (M, B, T)
        if r.dim() != 3:
            raise ValueError(f"segment_returns needs obs (B, T, *obs_shape), got batch shape {tuple(r.shape[1:])}")
        if mask is not None:
            r = r * mask.to(r.dtype)
        return r.sum(dim=-1)

    @torch.no_grad()
    def predict_members(
        self,
        obs_np: np.ndarray,
        act_np: np.ndarray | None = None,
        batch_size: int = 4096,
        normalised: bool = True,
    ) -> np.ndarray:
        """Per-member rewards for numpy inputs, in eval mode and chunks: (N, *obs_shape) → (M, N).

        Any number of leading batch dims is allowed; the result keeps them after M.
        """
        obs_t = torch.as_tensor(np.asarray(obs_np))
        act_t = None if act_np is None or not self.use_actions else torch.as_tensor(np.asarray(act_np))
        batch = self._batch_shape(obs_t, act_t)
        n = math.prod(batch)
        obs_t = obs_t.reshape(n, *self.obs_shape)
        if act_t is not None:
            act_t = act_t.reshape(n, -1)
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        was_training = self.training
        self.eval()
        try:
            chunks = [
                self.member_rewards(
                    obs_t[i : i + batch_size],
                    None if act_t is None else act_t[i : i + batch_size].reshape(-1, *self.act_shape),
                    normalised=normalised,
                )
                for i in range(0, n, batch_size)
            ]
        finally:
            self.train(was_training)
        out = torch.cat(chunks, dim=1) if chunks else torch.zeros(self.n_members, 0)
        return out.reshape(self.n_members, *batch).cpu().numpy()

    def predict(self, obs_np: np.ndarray, act_np: np.ndarray | None = None, batch_size: int = 4096) -> np.ndarray:
        """Ensemble reward (mean of normalised members) for numpy inputs: (N, *obs_shape) → (N,)."""
        return self.predict_members(obs_np, act_np, batch_size).mean(axis=0)

    @torch.no_grad()
    def segments_member_returns(
        self, segments: Sequence[Segment], normalised: bool = False, batch_size: int = 256
    ) -> np.ndarray:
        """Per-member returns of whole segments in eval mode: → (M, len(segments)).

        Raw (``normalised=False``) by default: the scale the Bradley-Terry model was fit in,
        which is what preference probabilities for query selection need.
        """
        was_training = self.training
        self.eval()
        try:
            out = []
            for start in range(0, len(segments), batch_size):
                obs, act, mask = stack_segments(segments[start : start + batch_size])
                out.append(self.segment_returns(obs, act if self.use_actions else None, normalised, mask))
        finally:
            self.train(was_training)
        if not out:
            return np.zeros((self.n_members, 0), dtype=np.float32)
        return torch.cat(out, dim=1).cpu().numpy()

    @torch.no_grad()
    def update_normalisation(
        self, obs: np.ndarray | torch.Tensor, act: np.ndarray | torch.Tensor | None = None, batch_size: int = 4096
    ) -> None:
        """Set each member's offset and scale so its rewards over ``obs`` have mean 0 and std ``target_std``.

        Pass the steps of recent segments (any batch shape); the paper normalises over the
        distribution the agent currently visits.
        """
        raw = torch.as_tensor(self.predict_members(np.asarray(obs), None if act is None else np.asarray(act),
                                                   batch_size, normalised=False))
        raw = raw.reshape(self.n_members, -1)
        if raw.shape[1] < 2:
            raise ValueError("update_normalisation needs at least 2 steps")
        mean = raw.mean(dim=1)
        std = raw.std(dim=1, unbiased=False)
        self.norm_offset.copy_(mean)
        self.norm_scale.copy_(self.target_std / std.clamp(min=1e-8))


def stack_segments(segments: Sequence[Segment]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack segments into (B, T_max, …) obs and action tensors plus a (B, T_max) step mask.

    Shorter segments are zero-padded at the end; the mask removes the padding from returns.
    Image observations keep their dtype (uint8) to save memory.
    """
    if not segments:
        raise ValueError("no segments to stack")
    t_max = max(len(s) for s in segments)
    first_obs, first_act = np.asarray(segments[0].obs), np.asarray(segments[0].actions)
    obs = np.zeros((len(segments), t_max, *first_obs.shape[1:]), dtype=first_obs.dtype)
    act = np.zeros((len(segments), t_max, *first_act.shape[1:]), dtype=first_act.dtype)
    mask = np.zeros((len(segments), t_max), dtype=np.float32)
    for i, seg in enumerate(segments):
        o, a = np.asarray(seg.obs), np.asarray(seg.actions)
        if o.shape[1:] != first_obs.shape[1:] or a.shape[1:] != first_act.shape[1:] or a.shape[0] != o.shape[0]:
            raise ValueError(
                f"segment {i} has obs {o.shape} and actions {a.shape}, unlike the first segment's "
                f"{first_obs.shape} and {first_act.shape}"
            )
        obs[i, : len(o)] = o
        act[i, : len(a)] = a
        mask[i, : len(o)] = 1.0
    return torch.from_numpy(obs), torch.from_numpy(act), torch.from_numpy(mask)


def _reinit(modules: nn.Module, generator: torch.Generator) -> None:
    """Re-draw conv and linear weights with nn's default init from an explicit generator."""
    for mod in modules.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(mod.weight, a=math.sqrt(5), generator=generator)
            if mod.bias is not None:
                fan_in = mod.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                nn.init.uniform_(mod.bias, -bound, bound, generator=generator)
