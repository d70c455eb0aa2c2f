"""Environments for preference learning: construction, hygiene wrappers, simulator state.

``make_vec_env`` builds a gymnasium ``SyncVectorEnv`` / ``AsyncVectorEnv`` in
**SAME_STEP autoreset** mode: when a sub-env's episode ends at step t, the vector env resets
it within the same call, returns the *reset* observation in ``obs`` and the true last
observation in ``info["final_obs"]`` (masked by ``info["_final_obs"]``). That is what PPO
needs to bootstrap a truncated episode from V(s_final) without a dummy transition
(gymnasium 1.x's default NEXT_STEP mode inserts one extra "reset" step instead).

Wrappers:

- :class:`FixedHorizonWrapper` — Christiano et al. 2017, §3.1 / App. A: when the episode
  length depends on the agent's behaviour, the length itself leaks reward information to a
  reward model that cannot see it ("a constant positive reward is enough to learn to stay
  alive"). So termination becomes a penalty (``terminal_penalty`` subtracted from that
  step's reward), the inner env is reset and the episode continues, and every episode lasts
  exactly ``horizon`` steps and then *truncates*.
- :class:`SimStateWrapper` — puts the simulator state (MuJoCo qpos‖qvel, or a classic-control
  env's ``state``) into ``info["sim_state"]`` after every ``reset`` and ``step``, so a clip
  can be re-rendered later with :func:`restore`.

The SB3 ``VecEnvWrapper`` that replaces the reward by a learned one, ``LearnedRewardVecEnv``,
lives in :mod:`prefrl.control.sb3` (SB3 is optional).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from prefrl.control.config import is_atari
from prefrl.control.policies import is_image_space

__all__ = [
    "make_env",
    "make_vec_env",
    "check_spaces",
    "is_atari",
    "FixedHorizonWrapper",
    "SimStateWrapper",
    "sim_state_supported",
    "restore",
    "env_dt",
    "resolve_env_id",
    "ale_vector_env",
]


# --------------------------------------------------------------------------- simulator state


def sim_state_supported(env: gym.Env) -> bool:
    """True for MuJoCo envs (qpos/qvel) and classic-control envs exposing a numeric ``state``."""
    base = env.unwrapped
    if hasattr(base, "data") and hasattr(base, "set_state") and hasattr(base, "model"):
        return True
    state = getattr(base, "state", None)
    return state is not None and np.asarray(state).dtype.kind in "fiu"


def get_sim_state(env: gym.Env) -> np.ndarray:
    """The simulator state as a flat float64 vector: MuJoCo qpos‖qvel or classic ``state``."""
    base = env.unwrapped
    if hasattr(base, "data") and hasattr(base, "set_state"):
        return np.concatenate([base.data.qpos, base.data.qvel]).astype(np.float64)
    state = getattr(base, "state", None)
    if state is None:
        raise ValueError(f"environment {env.spec.id if env.spec else env} exposes no simulator state")
    return np.asarray(state, dtype=np.float64).reshape(-1).copy()


def restore(env: gym.Env, state: np.ndarray) -> None:
    """Set ``env``'s simulator to ``state`` (from ``info["sim_state"]``), e.g. to re-render a frame.

    Raises:
        ValueError: if the env has no restorable state or ``state`` has the wrong size.
    """
    base = env.unwrapped
    state = np.asarray(state, dtype=np.float64).reshape(-1)
    if hasattr(base, "data") and hasattr(base, "set_state"):
        nq, nv = base.model.nq, base.model.nv
        if state.shape[0] != nq + nv:
            raise ValueError(f"sim state must have nq + nv = {nq + nv} entries, got {state.shape[0]}")
        base.set_state(state[:nq], state[nq:])
        return
    current = getattr(base, "state", None)
    if current is None or np.asarray(current).dtype.kind not in "fiu":
        raise ValueError(f"environment {env.spec.id if env.spec else env} has no restorable simulator state")
    if np.asarray(current).size != state.size:
        raise ValueError(f"sim state must have {np.asarray(current).size} entries, got {state.size}")
    base.state = state.astype(np.asarray(current).dtype).reshape(np.asarray(current).shape)


class SimStateWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Adds ``info["sim_state"]`` (D,) float64 — the state *after* reset/step, i.e. of the returned obs."""

    def __init__(self, env: gym.Env) -> None:
        # No check here: classic-control envs only get their ``state`` in reset (and gymnasium
        # re-creates wrapped envs from their spec before resetting them); get_sim_state raises.
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        info["sim_state"] = get_sim_state(self.env)
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["sim_state"] = get_sim_state(self.env)
        return obs, reward, terminated, truncated, info


# --------------------------------------------------------------------------- fixed horizon


class FixedHorizonWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Every episode lasts exactly ``horizon`` steps; termination becomes a penalty.

    On an inner termination (e.g. Hopper falling) the step's reward is lowered by
    ``terminal_penalty``, the inner env is reset and the *reset* observation is returned
    with ``terminated=False``; ``info["inner_terminated"]`` marks the step. After
    ``horizon`` steps the episode truncates. Christiano et al. 2017 (App. A.1) do this
    because a variable episode length leaks the reward to the reward model.
    """

    def __init__(self, env: gym.Env, horizon: int, terminal_penalty: float = 0.0) -> None:
        if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon <= 0:
            raise ValueError(f"fixed_horizon must be a positive integer, got {horizon!r}")
        if not terminal_penalty >= 0:
            raise ValueError(f"terminal_penalty must be non-negative (it is subtracted), got {terminal_penalty!r}")
        gym.utils.RecordConstructorArgs.__init__(self, horizon=horizon, terminal_penalty=terminal_penalty)
        gym.Wrapper.__init__(self, env)
        self.horizon = horizon
        self.terminal_penalty = float(terminal_penalty)
        self._t = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._t = 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._t += 1
        info["inner_terminated"] = bool(terminated)
        if terminated or truncated:
            reward = float(reward) - (self.terminal_penalty if terminated else 0.0)
            if self._t < self.horizon:
                obs, reset_info = self.env.reset()
                info = {**reset_info, **info}
        return obs, reward, False, self._t >= self.horizon, info


# --------------------------------------------------------------------------- construction


def resolve_env_id(env_id: str) -> str:
    """The registered id of ``env_id``, importing the module of Gymnasium's ``module:EnvId`` form first.

    ``pointgoal:PointGoal-v0`` imports ``pointgoal`` (which registers ``PointGoal-v0``) and returns
    ``PointGoal-v0``; a run stores the full form in its config, so eval and resume import it too.
    ``ALE/…`` ids register ale-py. ``ValueError`` naming the problem otherwise.
    """
    module, _, name = env_id.rpartition(":") if ":" in env_id else ("", "", env_id)
    if module:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"environment {env_id!r}: cannot import module {module!r} ({e}); is it on PYTHONPATH?") from None
        if name not in gym.registry:
            raise ValueError(f"environment {env_id!r}: importing {module!r} did not register {name!r}")
    if is_atari(name):
        try:
            import ale_py
        except ImportError:
            raise ValueError(f"environment {env_id!r} needs ale-py, which is not installed (pip install 'gymnasium[atari]')") from None
        gym.register_envs(ale_py)
    if name not in gym.registry:
        raise ValueError(f"unknown environment {env_id!r}")
    return name


def _check_registered(env_id: str) -> gym.envs.registration.EnvSpec:
    return gym.spec(resolve_env_id(env_id))


def _accepts_kwarg(spec: gym.envs.registration.EnvSpec, name: str) -> bool:
    entry = spec.entry_point
    creator = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
    try:
        return name in inspect.signature(creator).parameters
    except (TypeError, ValueError):
        return False


def _is_mujoco(spec: gym.envs.registration.EnvSpec) -> bool:
    """A MuJoCo env (its ``width``/``height`` kwargs pass through ``**kwargs``, invisible to :func:`_accepts_kwarg`)."""
    entry = spec.entry_point
    try:
        from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

        creator = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
    except Exception:  # noqa: BLE001 - no mujoco installed, or an entry point that does not load
        return False
    return isinstance(creator, type) and issubclass(creator, MujocoEnv)


def check_spaces(observation_space: gym.Space, action_space: gym.Space, env_id: str = "") -> None:
    """ValueError unless obs is a float ``Box`` or a uint8 (C, H, W) frame stack and actions are 1-D Box or Discrete."""
    where = f" of environment {env_id!r}" if env_id else ""
    if not isinstance(observation_space, gym.spaces.Box):
        raise ValueError(f"unsupported observation space{where}: {observation_space} (only Box is supported)")
    if observation_space.dtype == np.uint8 and not is_image_space(observation_space):
        raise ValueError(f"unsupported observation space{where}: uint8 observations must be (C, H, W) frame stacks")
    if isinstance(action_space, gym.spaces.Box):
        if len(action_space.shape) != 1:
            raise ValueError(f"unsupported action space{where}: {action_space} (Box actions must be 1-D)")
    elif not isinstance(action_space, gym.spaces.Discrete):
        raise ValueError(f"unsupported action space{where}: {action_space} (only Box and Discrete are supported)")


def make_env(
    env_id: str,
    seed: int | None = None,
    fixed_horizon: int | None = None,
    terminal_penalty: float = 0.0,
    drop_ctrl_cost: bool = False,
    record_sim_state: bool = True,
    render_mode: str | None = None,
    render_size: tuple[int, int] | None = None,
) -> gym.Env:
    """One wrapped env: ``gym.make`` → Atari preprocessing → fixed horizon → sim state.

    Atari (``ALE/Pong-v5`` …): the env is made with ``frameskip=1`` and wrapped in
    ``AtariPreprocessing`` (30 no-op resets, skip 4 with max-pooling, 84×84 grey, uint8)
    and ``FrameStackObservation(4)`` → obs (4, 84, 84) uint8. ``record_sim_state`` is
    ignored where the env has no restorable state (Atari). ``seed`` seeds the first reset
    and the action space (the env is reset once here); later resets continue the env's own RNG.
    """
    spec = _check_registered(env_id)
    if fixed_horizon is not None and (
        not isinstance(fixed_horizon, int) or isinstance(fixed_horizon, bool) or fixed_horizon <= 0
    ):
        raise ValueError(f"fixed_horizon must be a positive integer or None, got {fixed_horizon!r}")
    kwargs: dict[str, Any] = {}
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
        if render_size is not None and (_accepts_kwarg(spec, "width") or _is_mujoco(spec)):  # frames of (width, height)
            kwargs["width"], kwargs["height"] = render_size
    if drop_ctrl_cost:
        if not _accepts_kwarg(spec, "ctrl_cost_weight"):
            raise ValueError(f"drop_ctrl_cost: environment {env_id!r} has no ctrl_cost_weight argument")
        kwargs["ctrl_cost_weight"] = 0.0
    if fixed_horizon is not None:
        # The inner TimeLimit must not cut an episode before the horizon.
        kwargs["max_episode_steps"] = fixed_horizon
    if is_atari(env_id):
        kwargs["frameskip"] = 1  # AtariPreprocessing does the skipping (and max-pools the last 2 frames)
    try:
        env = gym.make(spec.id, **kwargs)
    except gym.error.DependencyNotInstalled as e:  # e.g. Box2D for CarRacing: gymnasium names the extra
        raise ValueError(f"environment {env_id!r} needs a package that is not installed: {e}") from None
    if is_atari(env_id):
        env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True)
        env = gym.wrappers.FrameStackObservation(env, 4)
    check_spaces(env.observation_space, env.action_space, env_id)
    if fixed_horizon is not None:
        env = FixedHorizonWrapper(env, fixed_horizon, terminal_penalty)
    elif terminal_penalty != 0.0:
        raise ValueError("terminal_penalty needs fixed_horizon (without it episodes simply terminate)")
    # Classic-control envs create their ``state`` in reset, so reset before asking for it.
    env.reset(seed=seed)
    if seed is not None:
        env.action_space.seed(seed)
    if record_sim_state and sim_state_supported(env):
        env = SimStateWrapper(env)
    return env


def make_vec_env(
    env_id: str,
    n_envs: int = 1,
    seed: int = 0,
    fixed_horizon: int | None = None,
    terminal_penalty: float = 0.0,
    drop_ctrl_cost: bool = False,
    async_: bool = False,
    record_sim_state: bool = True,
    ale_vector: bool = True,
) -> gym.vector.VectorEnv:
    """``n_envs`` copies of :func:`make_env` (seeds ``seed + i``) in a SAME_STEP-autoreset vector env.

    Args:
        env_id: a registered gymnasium id (``ALE/…`` ids register ale-py themselves).
        n_envs: number of parallel envs.
        seed: base seed; env i gets ``seed + i``.
        fixed_horizon: wrap in :class:`FixedHorizonWrapper` with this horizon (None: off).
        terminal_penalty: subtracted from the reward at an inner termination (needs fixed_horizon).
        drop_ctrl_cost: MuJoCo only: ``ctrl_cost_weight=0`` (ValueError where the env lacks it).
        async_: one process per env (``AsyncVectorEnv``) instead of stepping them in turn.
        record_sim_state: add ``info["sim_state"]`` where the env supports it.
        ale_vector: Atari ids (without ``fixed_horizon``) step in ale-py's C++ vector env
            (:func:`ale_vector_env`) instead of ``n_envs`` Gymnasium-wrapped envs in turn.

    Raises:
        ValueError: unknown env id, unsupported spaces, bad arguments.
    """
    if not isinstance(n_envs, int) or isinstance(n_envs, bool) or n_envs <= 0:
        raise ValueError(f"n_envs must be a positive integer, got {n_envs!r}")
    if is_atari(env_id) and ale_vector and fixed_horizon is None and not drop_ctrl_cost and not async_:
        return ale_vector_env(env_id, n_envs, seed)
    # Build one env here so that bad ids / spaces / kwargs fail in this process with a clear error.
    probe = make_env(env_id, None, fixed_horizon, terminal_penalty, drop_ctrl_cost, record_sim_state)
    probe.close()

    def thunk(i: int) -> Callable[[], gym.Env]:
        return lambda: make_env(env_id, seed + i, fixed_horizon, terminal_penalty, drop_ctrl_cost, record_sim_state)

    fns = [thunk(i) for i in range(n_envs)]
    if async_:
        return AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)


class _RepeatResetFrame(gym.vector.VectorWrapper):
    """ale-py stacks zeros before an episode's first frame, Gymnasium's ``FrameStackObservation`` repeats
    that frame: repeat it here too, so that both paths give the networks the same stacks."""

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        obs[:, :-1] = obs[:, -1:]
        return obs, info

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        new = np.nonzero(terminated | truncated)[0]  # SAME_STEP: these rows are already the next episode's reset
        if new.size:
            obs[new, :-1] = obs[new, -1:]
        return obs, reward, terminated, truncated, info


def ale_vector_env(env_id: str, n_envs: int, seed: int = 0) -> gym.vector.VectorEnv:
    """``n_envs`` copies of an Atari game in ale-py's C++ vector env, as :func:`make_env`'s Atari path sees it.

    The same preprocessing (30 no-op resets, skip 4 with max-pooling of the last two frames, 84×84 grey,
    4 frames stacked, no fire reset, rewards unclipped) and the registered id's settings (sticky actions,
    action set, episode cap), in SAME_STEP autoreset mode with ``info["final_obs"]``. Frames are resized
    by ale-py's own code: ≈ 0.3 % of the pixels differ from Gymnasium's wrappers by a grey level or more
    (measured on Pong). Stepping costs ≈ 30–35 % less CPU than the Gymnasium wrappers (docs/benchmarks_control.md).
    The sub-envs step on ``torch.get_num_threads()`` threads (the run's ``--threads``), at most one per env.
    """
    import torch
    from ale_py.vector_env import AtariVectorEnv

    spec = _check_registered(env_id)
    kw = spec.kwargs
    envs = AtariVectorEnv(
        kw["game"], n_envs, num_threads=max(1, min(n_envs, torch.get_num_threads())),
        repeat_action_probability=float(kw.get("repeat_action_probability", 0.25)),
        full_action_space=bool(kw.get("full_action_space", False)),
        max_num_frames_per_episode=int(kw.get("max_num_frames_per_episode", 108_000)),
        frameskip=4, maxpool=True, noop_max=30, img_height=84, img_width=84, grayscale=True, stack_num=4,
        use_fire_reset=False, reward_clipping=False, episodic_life=False, autoreset_mode=AutoresetMode.SAME_STEP,
    )  # fmt: skip
    envs = _RepeatResetFrame(envs)
    envs.reset(seed=seed)
    return envs


def env_dt(envs: Any) -> float | None:
    """The physical time step of a vector env's first sub-env (MuJoCo ``dt``), or None (gymnasium or SB3 vector envs)."""
    for getter in (lambda: envs.get_attr("dt")[0], lambda: envs.envs[0].unwrapped.dt):
        try:
            dt = getter()
        except Exception:  # noqa: BLE001 - envs without dt (Atari, toy envs)
            continue
        if dt is not None:
            return float(dt)
    return None
