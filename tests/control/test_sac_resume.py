"""Resume of an ``--optimizer sac`` run stopped mid-way (PEBBLE): the replay buffer, the optimiser states,
the counters and the reward model continue, and no comparison is asked twice or lost.

The run is stopped by an exception raised from inside the loop (as a kill would, nothing is saved on the
way out), in the main loop, during the unsupervised pre-training and between the first ask and the
first checkpoint.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_sac_optimizer import sac_config

from prefrl.control.checkpoint import load_checkpoint
from prefrl.control.loop import PreferenceLoop
from prefrl.data.store import PreferenceStore


class Stopped(Exception):
    """Stands in for SIGKILL: raised mid-run, nothing is checkpointed on the way out."""


def _stop_on_call(obj, method: str, n: int) -> list[int]:
    """Make ``obj.method`` raise ``Stopped`` on its ``n``-th call; returns the call counter."""
    original, calls = getattr(obj, method), [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise Stopped
        return original(*args, **kwargs)

    setattr(obj, method, wrapped)
    return calls


def _count_calls(obj, method: str) -> list[int]:
    return _stop_on_call(obj, method, n=-1)


def _adam_steps(optimizer_state: dict) -> list[float]:
    return [float(s["step"]) for s in optimizer_state["state"].values()]


def _assert_every_query_asked_once_and_answered(run_dir, labels: int) -> None:
    store = PreferenceStore(run_dir / "preferences.sqlite")
    try:
        queries = store.queries()
        assert len(queries) == labels  # none asked twice (the budget would be exceeded), none missing
        pairs = [(q.left_id, q.right_id) for q in queries]
        assert len(set(pairs)) == len(pairs)  # no pair asked again after the resume
        assert store.count_comparisons() == labels  # every asked query answered: none lost
    finally:
        store.close()


def test_sac_run_stopped_in_the_main_loop_resumes_with_its_buffer_optimisers_and_reward_model(tmp_path) -> None:
    cfg = sac_config(tmp_path, labels=40, steps=64 * 10, checkpoint_minutes=1e-6)
    loop = PreferenceLoop(cfg)
    _stop_on_call(loop.agent, "update", 4)  # 3 updates (each followed by a checkpoint), stopped in the 4th
    with pytest.raises(Stopped):
        loop.run()
    loop.store.close()
    saved = load_checkpoint(cfg.run_dir)
    assert saved["counters"].iteration == 3 and saved["counters"].global_step < cfg.steps
    sac_state = saved["agent"]

    resumed = PreferenceLoop.resume(cfg.run_dir)
    opt = resumed.agent
    # the replay buffer: every transition (and its relabelled reward) of the first session is back
    n = len(sac_state["buffer"]["obs"])
    assert n == saved["counters"].global_step == len(opt.buffer) > cfg.sac.learning_starts
    for name in ("obs", "actions", "rewards", "next_obs", "terminated"):
        assert np.array_equal(getattr(opt.buffer, name)[:n], sac_state["buffer"][name]), name
    assert opt.buffer.relabel_count == sac_state["buffer"]["relabel_count"] > 0
    # networks, Adam moments and step counts, temperature, update counter
    assert opt.agent.n_updates == sac_state["agent"]["n_updates"] > 0
    for name in ("q_optimizer", "actor_optimizer", "alpha_optimizer"):
        steps = _adam_steps(getattr(opt.agent, name).state_dict())
        assert steps == _adam_steps(sac_state["agent"][name]) and min(steps) > 0, name
    for name in ("actor", "q1", "q2", "q1_target", "q2_target"):
        for key, value in getattr(opt.agent, name).state_dict().items():
            assert torch.equal(value, sac_state["agent"][name][key]), (name, key)
    assert opt.agent.alpha == pytest.approx(np.exp(sac_state["agent"]["log_alpha"]))
    # the reward model the buffer was relabelled with
    for key, value in resumed.ensemble.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, saved["ensemble"][key]), key
    # the stopped iteration had asked (and had answered) a query after the checkpoint: counted, not asked again
    assert resumed.counters.queries_posted == resumed.store.count_queries() > saved["counters"].queries_posted

    resumed.run()
    final = load_checkpoint(cfg.run_dir)["counters"]
    assert final.global_step == cfg.n_rollouts * cfg.steps_per_rollout
    assert final.reward_rounds > saved["counters"].reward_rounds
    # the buffer kept both sessions' transitions (it is larger than the run) ...
    assert len(opt.buffer) == final.global_step
    assert np.array_equal(opt.buffer.obs[:n], sac_state["buffer"]["obs"])
    # ... and SAC went on counting: one update per env step since the checkpoint, Adam's steps too
    new_updates = (final.global_step - saved["counters"].global_step) * cfg.sac.updates_per_step
    assert opt.agent.n_updates == sac_state["agent"]["n_updates"] + new_updates
    assert _adam_steps(opt.agent.q_optimizer.state_dict())[0] == _adam_steps(sac_state["agent"]["q_optimizer"])[0] + new_updates
    # the buffer holds the final ensemble's rewards (relabelled after the last round)
    assert np.allclose(opt.buffer.rewards[: len(opt.buffer)],
                       resumed.reward.rewards(opt.buffer.obs[: len(opt.buffer)], opt.buffer.actions[: len(opt.buffer)]),
                       atol=1e-5)  # fmt: skip
    steps = [row["step"] for row in resumed.history.iterations]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # counters continued, no restart
    resumed.store.close()
    _assert_every_query_asked_once_and_answered(resumed.run_dir, cfg.labels)


def test_pebble_run_stopped_during_pretraining_continues_the_phase_instead_of_restarting(tmp_path) -> None:
    cfg = sac_config(tmp_path, labels=30, steps=64 * 10, pretrain_steps=64 * 5, checkpoint_minutes=1e-6)
    loop = PreferenceLoop(cfg)
    _stop_on_call(loop.agent, "pretrain_update", 4)  # 3 pre-training rollouts done and checkpointed
    with pytest.raises(Stopped):
        loop.run()
    loop.store.close()
    saved = load_checkpoint(cfg.run_dir)
    assert saved["counters"].global_step == 3 * 64 and not saved["counters"].initial_done
    assert saved["agent"]["pretrained"] and saved["agent"]["state_entropy"]["count"] > 0
    assert saved["counters"].queries_posted == 0  # no label is asked before the phase ends

    resumed = PreferenceLoop.resume(cfg.run_dir)
    assert resumed.agent._entropy_reward.state_dict() == saved["agent"]["state_entropy"]  # same normaliser scale
    assert len(resumed.agent.buffer) == 3 * 64
    calls = _count_calls(resumed.agent, "pretrain_update")
    resumed.run()
    assert calls[0] == 2  # only the phase's remaining 2 rollouts, not 5 again
    assert resumed.agent.critic_reset  # and the learned-reward phase still starts from fresh critics
    resumed.store.close()
    _assert_every_query_asked_once_and_answered(resumed.run_dir, cfg.labels)


def test_run_stopped_after_its_first_labels_before_any_checkpoint_keeps_them(tmp_path) -> None:
    cfg = sac_config(tmp_path, labels=20, steps=64 * 6, checkpoint_minutes=1e-6)
    loop = PreferenceLoop(cfg)
    _stop_on_call(loop, "train_reward", 1)  # the up-front queries are asked and answered, then the stop
    with pytest.raises(Stopped):
        loop.run()
    due = loop.counters.queries_posted
    assert due > 0 and loop.store.count_comparisons() == due
    loop.store.close()
    assert load_checkpoint(cfg.run_dir)["counters"].queries_posted == 0  # the checkpoint of step 0

    resumed = PreferenceLoop.resume(cfg.run_dir)
    assert resumed.counters.queries_posted == due  # counted from the store: not asked again
    resumed.run()
    resumed.store.close()
    _assert_every_query_asked_once_and_answered(resumed.run_dir, cfg.labels)
