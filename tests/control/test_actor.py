"""actors=1: an actor process collects (env + policy + reward scoring) while the learner learns."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import go_right_env
import numpy as np
import pytest
import torch
from run_helpers import prefrl_train as _prefrl
from run_helpers import wait_for_checkpoint
from test_loop import _mean_return, toy_config

from prefrl.control.actor import ActorAgent
from prefrl.control.checkpoint import load_checkpoint
from prefrl.control.loop import PreferenceLoop
from prefrl.data.store import PreferenceStore


def test_split_loop_learns_go_right_with_the_learners_labels_and_reward_rounds(tmp_path):
    cfg = toy_config(tmp_path, actors=1)
    loop = PreferenceLoop(cfg)
    assert isinstance(loop.agent, ActorAgent)
    before = [p.detach().clone() for p in loop.agent.policy.parameters()]
    run_dir = loop.run()

    assert loop.agent.process is None  # the actor was stopped and waited for
    episodes = loop.history.episodes
    first, last = _mean_return(episodes, True), _mean_return(episodes, False)
    assert abs(first) < 10
    assert last > first + 15, (first, last)
    assert any(not torch.equal(a, b) for a, b in zip(before, loop.agent.policy.parameters()))
    store = PreferenceStore(run_dir / "preferences.sqlite")
    assert loop.counters.queries_posted == cfg.labels
    assert store.count_comparisons() == cfg.labels
    assert loop.counters.reward_rounds > 1
    assert loop.reward_metrics["reward/true_agreement"] > 0.8
    assert loop.counters.global_step == cfg.n_rollouts * cfg.steps_per_rollout
    # the actor scored every step with the reward model of some finished round (never a newer one)
    # (query selection drops the scores of segments more than score_reuse_rounds old)
    segments = loop.pool.segments()
    scored = [s for s in segments if s.member_rewards is not None]
    assert scored and all(s.member_rewards.shape == (cfg.reward_members, 10) for s in scored)
    assert 0 < max(s.member_rewards_round for s in scored) <= loop.counters.reward_rounds
    # the learner's copy of the obs normaliser follows the actor's
    assert loop.agent.learner.obs_rms.count > cfg.steps / 2


def test_actor_scores_match_the_learners_ensemble(tmp_path):
    """The rollout's member scores, made in the child, are what the parent's ensemble gives those steps."""
    cfg = toy_config(tmp_path, actors=1, steps=128 * 2, labels=4)
    loop = PreferenceLoop(cfg)
    try:
        rollout = loop.agent.collect(cfg.rollout_steps)
        raw, rewards, _ = loop.reward.predict(rollout)
        obs, act = rollout.obs.reshape(-1, *rollout.obs.shape[2:]), rollout.actions.reshape(-1, *rollout.actions.shape[2:])
        here = loop.ensemble.predict_members(obs, act, normalised=False).reshape(raw.shape)
        np.testing.assert_allclose(raw, here, rtol=1e-5, atol=1e-6)
        assert rewards.shape == rollout.true_rewards.shape
        assert rollout.global_step == loop.agent.global_step == cfg.steps_per_rollout
    finally:
        loop.agent.close()


class _FailingGoRight(go_right_env.GoRightEnv):
    """GoRight whose 300th step fails with the env's own error."""

    calls = 0

    def step(self, action):
        type(self).calls += 1
        if type(self).calls == 300:
            raise ValueError("the env's own one-line error at step 300")
        return super().step(action)


def test_an_error_in_the_actor_is_the_learners_error_and_stops_the_actor(tmp_path):
    import gymnasium as gym

    env_id = "prefrl-test/FailingGoRight-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=_FailingGoRight)  # in the parent: the forked actor sees it
    _FailingGoRight.calls = 0
    loop = PreferenceLoop(toy_config(tmp_path, env_id=env_id, actors=1, steps=128 * 4, labels=4, eval_episodes=0, clip_steps=0))
    with pytest.raises(ValueError, match="the env's own one-line error at step 300"):
        loop.run()
    assert loop.agent.process is None
    assert _FailingGoRight.calls < 300  # it failed in the child, not here


def test_a_rollout_of_frames_crosses_the_pipe_once():
    from prefrl.control.actor import _pack, _unpack
    from prefrl.control.rollout import Rollout

    T, N = 3, 2
    frames = np.random.default_rng(0).integers(0, 255, (T, N, 4, 8, 8), dtype=np.uint8)
    z = np.zeros((T, N))
    rollout = Rollout(obs=frames, actions=np.zeros((T, N), np.int64), true_rewards=z, dones=z > 0, terminated=z > 0,
                      truncated=z > 0, episode_ids=z.astype(np.int64), steps=z.astype(np.int64), sim_states=None,
                      episode_returns=np.zeros(0), episode_lengths=np.zeros(0, np.int64), global_step=6,
                      policy_obs=torch.from_numpy(frames), logprobs=torch.zeros(T, N))  # fmt: skip
    packed = _pack(rollout)
    assert packed.policy_obs is None and isinstance(packed.logprobs, np.ndarray)  # the frames once, no tensors
    back = _unpack(packed)
    assert isinstance(back.policy_obs, torch.Tensor) and np.shares_memory(back.policy_obs.numpy(), back.obs)
    assert torch.equal(back.policy_obs, torch.from_numpy(frames)) and isinstance(back.logprobs, torch.Tensor)


def test_actors_need_ppo_and_are_0_or_1(tmp_path):
    with pytest.raises(ValueError, match="actors must be 0 or 1, got 2"):
        toy_config(tmp_path, actors=2)
    with pytest.raises(ValueError, match="actors=1 .* needs optimizer 'ppo', got 'sac'"):
        toy_config(tmp_path, actors=1, optimizer="sac")


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the process tree from /proc (Linux)")
def test_kill_9_of_the_learner_leaves_no_actor_and_the_run_resumes(tmp_path):
    run = tmp_path / "run"
    n_steps, rollouts, labels = 128, 16, 30
    args = ["--env", go_right_env.ENV_ID, "--labels", str(labels), "--steps", str(n_steps * rollouts), "--n-envs", "1",
            "--n-steps", str(n_steps), "--n-minibatches", "4", "--segment-steps", "10", "--no-progress", "--actors", "1"]  # fmt: skip
    proc = _prefrl(*args, "--run-dir", str(run), "--checkpoint-minutes", "0.0001")
    actors: list[int] = []

    def actor_alive() -> bool:
        actors[:] = _children(proc.pid)
        return bool(actors)

    wait_for_checkpoint(proc, run, iterations=2, also=actor_alive)
    assert all(_alive(pid) for pid in actors)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in actors) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in actors), f"actor process(es) {actors} outlived the learner"

    before = load_checkpoint(run)["counters"]
    resumed = _prefrl("--resume", str(run))
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    after = load_checkpoint(run)["counters"]
    assert after.iteration > before.iteration and after.global_step >= n_steps * (rollouts - 1)
    assert after.queries_posted == labels
    assert (run / "report.html").is_file()


def test_cli_actors_out_of_range_is_one_line(tmp_path):
    proc = _prefrl("--env", go_right_env.ENV_ID, "--actors", "3", "--run-dir", str(tmp_path / "r"), "--no-progress")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "actors must be 0 or 1, got 3" in out and "Traceback" not in out
