"""``actors=1``: the paper's asynchronous design on two cores — an actor process collects while the learner learns.

Christiano et al. 2017 run the policy, the reward predictor's training and the labelling as
asynchronous processes. Here one child process (:func:`_actor_main`) owns its own vector env, a
copy of the policy and a copy of the reward ensemble: it steps the envs, runs the policy and scores
every step with every reward member (the whole of *collect*), while the learner (this process)
asks, trains the reward model and runs the PPO update on the rollout before.

Staleness, bounded at one rollout: as soon as rollout k arrives, :meth:`ActorAgent.collect` asks for
rollout k+1 with the learner's weights as they are then (θ_k, before the update on rollout k) and
the reward ensemble of the last finished round. The behaviour log-probabilities PPO's importance
ratio divides by are the actor's own, so the update on rollout k+1 corrects for the one update the
behaviour policy lags (the clipped ratio bounds it). The policy's reward, and the scores query
selection reuses, come from the reward model one round older than in a synchronous run.

The child dies with its parent: it asks the kernel for SIGKILL when the parent exits
(``PR_SET_PDEATHSIG``) and exits on end-of-file of its pipe. It is forked, so a user's env
registered in the parent (``module:EnvId`` or a ``gym.register`` call) is registered in the child.
A checkpoint holds the learner's state only: on resume a fresh actor starts from it and the
rollout in flight at the kill is collected again.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from typing import Any

import numpy as np
import torch

from prefrl.control.rollout import Rollout

__all__ = ["ActorAgent"]

_TORCH_FIELDS = ("policy_obs", "policy_actions", "logprobs", "values", "final_values", "last_values")


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent exits (Linux); exit now if the parent is already gone."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: end-of-file on the pipe still ends the child
        pass
    if os.getppid() != parent_pid:
        os._exit(0)


def _pack(rollout: Rollout) -> Rollout:
    """The rollout with its torch tensors as numpy (pickled through the pipe, not torch's shared memory)."""
    for name in _TORCH_FIELDS:
        value = getattr(rollout, name)
        if isinstance(value, torch.Tensor):
            setattr(rollout, name, value.numpy())
    if np.may_share_memory(rollout.policy_obs, rollout.obs):
        rollout.policy_obs = None  # an image policy reads the raw frames (a view of obs): send them once
    return rollout


def _unpack(rollout: Rollout) -> Rollout:
    """:func:`_pack` undone: torch tensors again, an image policy's inputs a view of the frames."""
    if rollout.policy_obs is None:
        rollout.policy_obs = rollout.obs
    for name in _TORCH_FIELDS:
        value = getattr(rollout, name)
        if isinstance(value, np.ndarray):
            setattr(rollout, name, torch.from_numpy(value))
    return rollout


def _actor_main(conn: Any, parent_pid: int, cfg: Any, seed: int, agent_state: dict, ensemble: Any) -> None:
    """The actor process: build its own envs and policy, then answer each request with one scored rollout."""
    from prefrl.control.learned_reward import score_members
    from prefrl.control.optimizers import build_optimizer

    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the learner's to handle; it then closes the pipe
    torch.set_num_threads(1)
    try:
        agent = build_optimizer(cfg, seed=seed)
        agent.load_state_dict(agent_state)
        while True:
            try:
                request = conn.recv()
            except (EOFError, OSError):
                return
            if request is None:
                return
            policy_state, reward_state, reward_round, n_steps = request
            agent.policy.load_state_dict(policy_state)
            if reward_state is not None:
                ensemble.load_state_dict(reward_state)
            rollout = agent.collect(n_steps)
            raw, offset, scale = score_members(ensemble, rollout)
            rollout.member_rewards, rollout.member_norm, rollout.reward_round = raw, (offset, scale), reward_round
            extra = {"obs_rms": agent.obs_rms.state_dict(), "next_episode_id": agent._next_episode_id,
                     "generator": agent.generator.get_state()}  # what the learner checkpoints
            conn.send(("ok", _pack(rollout), extra))
    except (EOFError, BrokenPipeError):
        return
    except Exception as e:  # noqa: BLE001 - re-raised in the learner, as the single-process loop would raise it
        try:
            conn.send(("error", e, None))
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its type and message
            try:
                conn.send(("error", RuntimeError(f"{type(e).__name__}: {e}"), None))
            except OSError:
                pass
    finally:
        envs = getattr(locals().get("agent"), "envs", None)
        if envs is not None:
            envs.close()


class ActorAgent:
    """A :class:`~prefrl.control.ppo_agent.PPOAgent` (the learner) whose ``collect`` runs in an actor process.

    Everything but ``collect`` is the learner's (``update``, ``act``, ``evaluate``, checkpoints).
    ``collect`` returns the rollout the actor collected with the weights of one call before (see the
    module docstring), with every reward member's raw scores attached (``Rollout.member_rewards``).

    Args:
        agent: the learner; its envs give the spaces and are closed when the actor starts.
        cfg: the run's ``ControlConfig`` (the actor builds its envs and policy from it).
        seed: the envs' seed (the learner's).
        reward: the run's :class:`~prefrl.control.learned_reward.LearnedReward` (the policy's ensemble is shipped).
        reward_round: a callable giving the number of finished reward rounds (ships new weights when it changes).
    """

    def __init__(self, agent: Any, cfg: Any, seed: int, reward: Any, reward_round: Any) -> None:
        self.learner = agent
        self.cfg, self.seed, self.reward, self.reward_round = cfg, seed, reward, reward_round
        self.process: mp.process.BaseProcess | None = None
        self._conn: Any = None
        self._pending = False
        self._shipped_round: int | None = None

    def __getattr__(self, name: str) -> Any:  # envs, obs_space, policy, act, evaluate … are the learner's
        if name == "learner":
            raise AttributeError(name)
        return getattr(self.learner, name)

    @property
    def global_step(self) -> int:
        return self.learner.global_step

    # ------------------------------------------------------------------ the actor process

    def start(self) -> None:
        """Fork the actor (once; also on the first ``collect``)."""
        if self.process is not None:
            return
        ctx = mp.get_context("fork")  # the child inherits the parent's env registry and imports
        parent_conn, child_conn = ctx.Pipe()
        with self.reward.lock:
            ensemble = self.reward.ensemble
            self._shipped_round = self.reward_round()
            self.process = ctx.Process(
                target=_actor_main, name="prefrl-actor", daemon=True,
                args=(child_conn, os.getpid(), self.cfg, self.seed, self.learner.state_dict(), ensemble),
            )  # fmt: skip
            self.process.start()
        child_conn.close()
        self._conn = parent_conn
        self.learner.envs.close()  # the actor steps its own envs

    def close(self) -> None:
        """Stop the actor (the rollout in flight is dropped) and wait for it."""
        if self.process is None:
            return
        try:
            self._conn.send(None)
        except OSError:
            pass
        self._conn.close()
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.process, self._conn, self._pending = None, None, False

    def _request(self, n_steps: int) -> None:
        """Ask for the next rollout with the learner's current policy (and the reward weights if a round ended)."""
        round_now = self.reward_round()
        reward_state = None
        if round_now != self._shipped_round:
            with self.reward.lock:
                reward_state = {k: v.clone() for k, v in self.reward.ensemble.state_dict().items()}
            self._shipped_round = round_now
        policy_state = {k: v.detach().clone() for k, v in self.learner.policy.state_dict().items()}
        self._conn.send((policy_state, reward_state, self._shipped_round, n_steps))
        self._pending = True

    def _receive(self) -> Rollout:
        try:
            status, payload, extra = self._conn.recv()
        except (EOFError, OSError):
            code = self.process.exitcode if self.process is not None else None
            self.close()
            raise RuntimeError(f"the actor process ended without a rollout (exit code {code})") from None
        self._pending = False
        if status == "error":  # the actor's exception, e.g. the env's own ValueError: the CLI's one-line errors hold
            self.close()
            raise payload
        self.learner.obs_rms.load_state_dict(extra["obs_rms"])
        self.learner._next_episode_id = int(extra["next_episode_id"])
        self.learner.generator.set_state(extra["generator"])
        return _unpack(payload)

    def collect(self, n_steps: int | None = None) -> Rollout:
        """The next rollout from the actor; the one after it is requested before this returns."""
        n_steps = self.cfg.ppo.num_steps if n_steps is None else n_steps
        self.start()
        if not self._pending:
            self._request(n_steps)
        rollout = self._receive()
        self._request(n_steps)  # collected while the learner asks, learns and updates on this one
        self.learner.global_step += rollout.n_steps * rollout.n_envs
        rollout.global_step = self.learner.global_step
        return rollout

    def state_dict(self) -> dict[str, Any]:
        return self.learner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.process is not None:
            raise RuntimeError("load the learner's state before the actor starts")
        self.learner.load_state_dict(state)
