"""The preference loop: segments, config checks, the labelling path, and learning on a toy task."""

from __future__ import annotations

import ctypes.util
import json
import os
from types import SimpleNamespace

import go_right_env
import numpy as np
import pytest

from prefrl.control.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from prefrl.control.config import ControlConfig
from prefrl.control.loop import PreferenceLoop
from prefrl.control.run_state import EpisodeTracker
from prefrl.control.segments import SegmentPool, cut_segments, resolve_segment_steps
from prefrl.data.store import PreferenceStore
from prefrl.data.types import Segment
from prefrl.reward.trainer import RewardTrainerConfig
from prefrl.rl.ppo import PPOConfig
from prefrl.teachers.queue import answer_queries
from prefrl.teachers.synthetic import make_teacher


def toy_config(tmp_path, **overrides) -> ControlConfig:
    """A tiny GoRight run: 16 rollouts of 128 steps, 60 labels, 10-step segments."""
    kwargs = dict(
        env_id=go_right_env.ENV_ID,
        labels=60,
        steps=128 * 16,
        teacher="rational",
        segment_steps=10,
        n_envs=1,
        pool_size=128,
        reward=RewardTrainerConfig(epochs=5, lr=3e-3),
        ppo=PPOConfig(num_steps=128, num_minibatches=4, update_epochs=10, learning_rate=3e-3),
        run_dir=str(tmp_path / "run"),
        seed=0,
        progress=False,
        checkpoint_minutes=60.0,
    )
    kwargs.update(overrides)
    return ControlConfig(**kwargs)


# ----------------------------------------------------------------------------- segments


@pytest.mark.parametrize(
    ("dt", "expected"),
    [(0.05, 30), (0.008, 60), (0.1, 25), (None, 25), (0.02, 60), (0.04, 38)],
)
def test_resolve_segment_steps(dt, expected):
    assert resolve_segment_steps(dt) == expected


def test_resolve_segment_steps_rejects_bad_dt():
    with pytest.raises(ValueError, match="dt"):
        resolve_segment_steps(-0.1)


def _fake_rollout(t_len=40, n_envs=2, done_at=((15, 0),)):
    rng = np.random.default_rng(0)
    dones = np.zeros((t_len, n_envs), bool)
    for t, n in done_at:
        dones[t, n] = True
    episode_ids = np.zeros((t_len, n_envs), np.int64)
    for n in range(n_envs):
        ep = n * 100
        for t in range(t_len):
            episode_ids[t, n] = ep
            ep += int(dones[t, n])
    return SimpleNamespace(
        obs=rng.normal(size=(t_len, n_envs, 3)).astype(np.float32),
        actions=rng.normal(size=(t_len, n_envs, 2)).astype(np.float32),
        true_rewards=rng.normal(size=(t_len, n_envs)).astype(np.float32),
        dones=dones,
        episode_ids=episode_ids,
        steps=np.tile(np.arange(t_len)[:, None], (1, n_envs)),
        sim_states=rng.normal(size=(t_len, n_envs, 4)),
    )


def test_cut_segments_stay_inside_episodes():
    rollout = _fake_rollout()
    segs = cut_segments(rollout, 10, env_id="toy", policy_version=3)
    # env 0: episode [0..15] holds one window [0, 10) ([10, 20) would cross the end at 15);
    # after the reset at 16 two more fit: [16, 26), [26, 36). env 1: 4 windows of 40 steps.
    assert len(segs) == 3 + 4
    for seg in segs:
        assert seg.obs.shape == (10, 3) and seg.actions.shape == (10, 2)
        assert seg.true_rewards.shape == (10,) and seg.sim_states.shape == (10, 4)
        assert seg.env_id == "toy" and seg.policy_version == 3
        seg.validate()
    starts_env0 = sorted(s.start_step for s in segs if s.episode in (0, 1))
    assert starts_env0 == [0, 16, 26]
    # the data really are the rollout's slices
    first = next(s for s in segs if s.episode == 0)
    np.testing.assert_array_equal(first.obs, rollout.obs[0:10, 0])
    np.testing.assert_allclose(first.true_rewards, rollout.true_rewards[0:10, 0])


def test_segment_pool_rolls_and_pairs_distinct_segments():
    pool = SegmentPool(capacity=5)
    segs = [Segment(obs=np.full((2, 1), i, np.float32), actions=np.zeros((2, 1), np.float32)) for i in range(8)]
    pool.extend(segs)
    assert len(pool) == 5
    assert [int(s.obs[0, 0]) for s in pool.segments()] == [3, 4, 5, 6, 7]
    pairs = pool.candidate_pairs(200, np.random.default_rng(0))
    assert all(a is not b for a, b in pairs)
    assert {int(a.obs[0, 0]) for a, _ in pairs} == {3, 4, 5, 6, 7}


def test_episode_tracker_sums_across_rollouts():
    tracker = EpisodeTracker(n_envs=2)
    r = np.ones((3, 2))
    d = np.zeros((3, 2), bool)
    assert tracker.update(r, d, 0) == []
    d[1, 1] = True
    finished = tracker.update(r, d, 6)
    assert finished == [(6 + 2 * 2, 5.0)]  # env 1: 3 + 2 steps of reward 1


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"labels": 0}, "labels must be ≥ 1"),
        ({"teacher": "oracle"}, "unknown teacher"),
        ({"selector": "greedy"}, "unknown selector"),
        ({"steps": 100}, "at least one rollout"),
        ({"segment_steps": 500}, "segment_steps"),
        ({"teacher_kwargs": {"temperature": 1.0}}, "unknown teacher parameter"),
        ({"env_id": " "}, "env_id"),
    ],
)
def test_config_rejects_bad_input(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        toy_config(tmp_path, **overrides)


def test_config_round_trips_through_json(tmp_path):
    cfg = toy_config(tmp_path, teacher_kwargs={"beta": 2.0}, teacher="stochastic")
    back = ControlConfig.from_dict(json.loads(cfg.to_json()))
    assert back == cfg
    assert back.ppo.total_steps == cfg.steps  # lr annealing follows the run length


# ----------------------------------------------------------------------------- teacher path


def test_synthetic_teacher_answers_through_the_query_queue(tmp_path):
    store = PreferenceStore(tmp_path / "p.sqlite")
    rng = np.random.default_rng(1)
    segs = [
        Segment(obs=rng.normal(size=(5, 2)), actions=rng.normal(size=(5, 1)), true_rewards=np.full(5, float(i)), env_id="e")
        for i in range(6)
    ]
    ids = store.add_segments(segs)
    for i in range(0, 6, 2):
        store.add_query(left_id=ids[i + 1], right_id=ids[i])  # left always has the larger return
    n = answer_queries(store, make_teacher("rational", rng), env_id="e")
    assert n == 3
    assert store.count_queries(status="answered") == 3
    assert [mu for _, _, mu in store.training_pairs()] == [1.0, 1.0, 1.0]
    assert answer_queries(store, make_teacher("rational", rng)) == 0


# ----------------------------------------------------------------------------- checkpoints


def test_corrupted_checkpoint_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path, {"x": 1})
    assert load_checkpoint(tmp_path)["x"] == 1
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")


# ----------------------------------------------------------------------------- the loop


def _mean_return(episodes, first: bool, n: int = 10) -> float:
    chosen = episodes[:n] if first else episodes[-n:]
    return float(np.mean([r for _, r in chosen]))


def test_loop_learns_go_right_from_preferences_alone(tmp_path):
    cfg = toy_config(tmp_path)
    loop = PreferenceLoop(cfg)
    run_dir = loop.run()

    episodes = loop.history.episodes
    first, last = _mean_return(episodes, True), _mean_return(episodes, False)
    # A random policy earns ≈ 0 of a possible 50; preferences alone must push it well right.
    assert abs(first) < 10
    assert last > first + 15, (first, last)
    # every label asked was answered and trained on, and the reward model agrees with the truth
    store = PreferenceStore(run_dir / "preferences.sqlite")
    assert loop.counters.queries_posted == cfg.labels
    assert store.count_comparisons() == cfg.labels
    assert store.count_segments() <= 2 * cfg.labels  # only queried segments are stored
    assert loop.reward_metrics["reward/true_agreement"] > 0.8
    pred, true = np.asarray(loop.history.segment_returns).T
    assert np.corrcoef(pred, true)[0, 1] > 0.8
    assert loop.counters.global_step == cfg.n_rollouts * cfg.steps_per_rollout
    for name in ("report.html", "true_return.png", "labels.png", "reward_accuracy.png", "segment_returns.png",
                 "checkpoint.pt", "config.json", "history.json", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    # gold vs proxy on the policy's own steps: the learned reward tracks the hidden one
    last_row = loop.history.iterations[-1]
    assert last_row["reward/proxy_true_corr"] > 0.5
    assert last_row["reward/ensemble_std"] > 0.0


def test_loop_asks_a_quarter_of_the_labels_up_front_from_the_untrained_policy(tmp_path):
    cfg = toy_config(tmp_path, steps=128 * 6, labels=40)
    loop = PreferenceLoop(cfg)
    loop.initial_labels()
    assert loop.counters.queries_posted == 10
    assert loop.counters.iteration == 0  # no policy update yet: these are random-policy segments
    stored = loop.store.training_pairs()
    assert len(stored) == 10 and all(left.policy_version == 0 for left, _, _ in stored)


def test_human_teacher_only_posts_queries(tmp_path):
    cfg = toy_config(tmp_path, teacher="human", steps=128 * 4, labels=12)
    loop = PreferenceLoop(cfg)
    loop.run()
    assert loop.store.count_queries() == 12
    assert loop.store.count_queries(status="pending") == 12
    assert loop.store.count_comparisons() == 0
    assert (loop.run_dir / "report.html").is_file()


def test_async_mode_trains_reward_and_answers_in_background(tmp_path):
    cfg = toy_config(tmp_path, asynchronous=True, steps=128 * 8, labels=30)
    loop = PreferenceLoop(cfg)
    loop.run()
    assert loop.store.count_comparisons() == 30
    assert loop.counters.reward_rounds >= 1
    # the policy's ensemble received the trainer's weights
    a, b = loop.ensemble.state_dict(), loop.train_ensemble.state_dict()
    assert all(np.allclose(a[k].numpy(), b[k].numpy()) for k in a)


def test_existing_run_dir_is_not_overwritten(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("precious")
    with pytest.raises(ValueError, match="already exists"):
        PreferenceLoop(toy_config(tmp_path))
    assert (run / "keep.txt").read_text() == "precious"


def test_unknown_env_fails_before_creating_the_run_dir(tmp_path):
    with pytest.raises(ValueError, match="unknown environment"):
        PreferenceLoop(toy_config(tmp_path, env_id="NoSuchEnv-v0"))
    assert not (tmp_path / "run").exists()


def _skip_without_offscreen_gl() -> None:
    """MuJoCo's off-screen GL is an optional system piece: libOSMesa, unless MUJOCO_GL names another backend."""
    if os.environ.get("MUJOCO_GL", "osmesa") == "osmesa" and ctypes.util.find_library("OSMesa") is None:
        pytest.skip("MuJoCo off-screen rendering needs libOSMesa: apt-get install libosmesa6 and set MUJOCO_GL=osmesa "
                    "(make test sets it when the library is installed), or set MUJOCO_GL=egl")


def test_render_segment_from_sim_states(tmp_path):
    _skip_without_offscreen_gl()
    from prefrl.control.envs import make_env
    from prefrl.control.render import render_segment, segment_frames

    env = make_env("HalfCheetah-v5", seed=0)
    obs, info = env.reset(seed=0)
    states, observations, actions = [], [], []
    for _ in range(6):
        states.append(info["sim_state"])
        observations.append(obs)
        action = env.action_space.sample()
        actions.append(action)
        obs, _, _, _, info = env.step(action)
    seg = Segment(obs=np.array(observations), actions=np.array(actions), sim_states=np.array(states), env_id="HalfCheetah-v5")
    frames = segment_frames(seg)  # with a GL backend present, a rendering error is a failure
    assert len(frames) == 6 and frames[0].shape == (160, 240, 3)
    assert not np.array_equal(frames[0], frames[-1])  # the cheetah moved
    out = render_segment(seg, tmp_path / "clip.mp4")
    assert out.stat().st_size > 1000


def test_atari_segment_renders_from_its_frames(tmp_path):
    from prefrl.control.render import render_segment, segment_frames

    obs = np.random.default_rng(0).integers(0, 255, size=(5, 4, 84, 84), dtype=np.uint8)
    seg = Segment(obs=obs, actions=np.zeros(5, np.int64), env_id="ALE/Pong-v5")
    frames = segment_frames(seg)
    np.testing.assert_array_equal(frames[2], obs[2, -1])
    assert render_segment(seg, tmp_path / "pong.mp4").stat().st_size > 0


def test_up_front_phase_spends_at_most_its_share_of_the_steps_when_segments_are_scarce(tmp_path):
    # episodes of 8 steps never hold a 10-step segment (as Hopper's untrained episodes end before a
    # 60-step clip fits): the up-front phase used to collect until the run's last step, training nothing
    import gymnasium as gym

    env_id = "prefrl-test/GoRightShort-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=go_right_env.GoRightEnv, max_episode_steps=8)
    cfg = toy_config(tmp_path, env_id=env_id, steps=128 * 8, labels=8, initial_fraction=0.25)
    loop = PreferenceLoop(cfg)
    with pytest.warns(RuntimeWarning, match="no reward model was trained"):
        loop.run()
    # a quarter of the 8 rollouts up front (+ one more, the pool being empty), then the policy trains
    assert loop.counters.iteration == 8 - 2 - 1


@pytest.mark.parametrize("reuse", [0, 10])
def test_collected_segments_carry_the_reward_models_scores_and_asking_reuses_recent_ones(tmp_path, reuse):
    """Every step is scored once, at collection: the policy's reward and each segment's cached member
    rewards come from that one pass; query selection reuses the scores ``score_reuse_rounds`` rounds."""
    loop = PreferenceLoop(toy_config(tmp_path, steps=128 * 6, labels=40, score_reuse_rounds=reuse))
    loop.initial_labels()
    assert loop.counters.reward_rounds == 1
    rollout, _, rewards, _ = loop.collect()
    ens = loop.ensemble
    new = [s for s in loop.pool.segments() if s.member_rewards_round == 1]
    old = [s for s in loop.pool.segments() if s.member_rewards_round == 0]  # scored by the untrained ensemble
    assert new and old
    for seg in new[-5:]:
        np.testing.assert_allclose(seg.member_rewards, ens.predict_members(seg.obs, seg.actions, normalised=False),
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(rewards, ens.predict(rollout.obs.reshape(-1, *rollout.obs.shape[2:]),
                                                    rollout.actions.reshape(-1, *rollout.actions.shape[2:])).reshape(rewards.shape),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    scored = []
    inner = ens.segments_member_returns
    ens.segments_member_returns = lambda segs, *a, **k: scored.extend(segs) or inner(segs, *a, **k)
    assert loop.ask(8) == 8
    if reuse:
        assert scored == []  # every pool segment's scores were recent enough
    else:  # only the newest rollout's scores are the current model's: the older ones were scored again
        assert scored and all(s.member_rewards_round == 0 for s in scored)
        assert not any(s is n for s in scored for n in new)
