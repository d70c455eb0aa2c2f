"""``ControlConfig``: everything one preference run of a control agent needs, checked when built."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, get_args

from prefrl.names import OptimizerName, PolicyCNN, SelectorName, TeacherName

TEACHER_NAMES: tuple[str, ...] = get_args(TeacherName)
SYNTHETIC_TEACHERS: tuple[str, ...] = tuple(t for t in TEACHER_NAMES if t not in ("human", "judge"))
SELECTOR_NAMES: tuple[str, ...] = get_args(SelectorName)
OPTIMIZER_NAMES: tuple[str, ...] = get_args(OptimizerName)
POLICY_CNNS: tuple[str, ...] = get_args(PolicyCNN)


def is_atari(env_id: str) -> bool:
    """``ALE/…`` ids (also as ``module:ALE/…``) and the classic ``…NoFrameskip-v4`` ids."""
    name = env_id.rpartition(":")[2]
    return name.startswith("ALE/") or "NoFrameskip" in name

#: The measured best rollout and reward-round sizes (``benchmarks/label_efficiency.py``,
#: docs/benchmarks_control.md): 4 envs × 512 steps and 3 reward epochs per round run ≈ 5× faster
#: than 1 × 2,048 and 50 epochs on Walker2d, at the same return. Defaults of ``ControlConfig``.
DEFAULT_N_ENVS = 4
DEFAULT_ROLLOUT_STEPS = 512
DEFAULT_REWARD_EPOCHS = 3


def _optimizer_help() -> str:
    from prefrl.control.label_defaults import describe

    return ("Policy optimiser: our PPO, our SAC (PEBBLE: replay rewards relabelled after every reward round), or a "
            "Stable-Baselines3 algorithm (sb3-ppo, sb3-sac …; needs stable-baselines3). " + describe())  # fmt: skip


_OPTIMIZER_HELP = _optimizer_help()


def _ppo_config_cls() -> type:
    from prefrl.rl.ppo_config import PPOConfig

    return PPOConfig


def control_ppo_config(**overrides: Any) -> Any:
    """``PPOConfig`` for the control loop: cleanrl's MuJoCo defaults without value clipping and lr annealing.

    cleanrl clips the value change to ±``clip_coef`` per update *because* it also normalises
    rewards (``NormalizeReward``). The loop feeds PPO raw true rewards (baseline) or the
    ensemble's unit-scale per-step rewards, returns in the tens to hundreds, which a clipped
    critic cannot follow; annealing the lr to 0 over a short run also leaves σ large, so the
    policy leans on its noise. HalfCheetah, 150k steps, 3 seeds, PPO on the true reward:
    deterministic return 339 ± 368 with both, 1229 ± 86 without (= Stable-Baselines3's
    settings, which imitation uses). docs/benchmarks_control.md, "vs imitation".
    """
    values: dict[str, Any] = {"clip_vloss": False, "anneal_lr": False}
    values.update(overrides)
    return _ppo_config_cls()(**values)


def _reward_config_cls() -> type:
    from prefrl.reward.trainer_config import RewardTrainerConfig

    return RewardTrainerConfig


def _sac_config_cls() -> type:
    from prefrl.rl.sac_config import SACConfig

    return SACConfig


def _default_sac() -> Any:
    return _sac_config_cls()()


def _default_ppo() -> Any:
    return control_ppo_config(num_steps=DEFAULT_ROLLOUT_STEPS)


def _default_reward() -> Any:
    return _reward_config_cls()(epochs=DEFAULT_REWARD_EPOCHS)


@dataclass
class ControlConfig:
    """One run of Christiano et al. 2017: collect → ask → learn, for a Gymnasium agent."""

    env_id: str = field(default="HalfCheetah-v5", metadata={"aliases": ("--env",)})
    """Gymnasium id (MuJoCo ``HalfCheetah-v5``, ``Hopper-v5``; Atari ``ALE/Pong-v5``, whose options not given take the Atari preset's values, ``prefrl.control.presets.ATARI``; your own ``module:EnvId``)."""
    labels: int = 700
    """Total number of queries asked over the run (the paper: 700 for MuJoCo)."""
    steps: int = 1_000_000
    """Total env steps of the preference run (all envs together)."""
    teacher: TeacherName = "rational"
    """Who answers: a synthetic B-Pref teacher on the hidden env reward, ``human`` (web app), or ``judge`` (your ``--judge`` function)."""
    judge: str | None = None
    """With ``teacher=judge``: MODULE:FUNCTION (or FILE.py:FUNCTION) scoring a segment (obs, actions, sim_states) → a number or (T,) per-step scores; ``--teacher-arg kind=mistake`` etc. apply a B-Pref kind on top."""
    teacher_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"key_value": True, "option": ("--teacher-arg",)}
    )
    """Synthetic teacher parameter KEY=VALUE (beta, gamma, epsilon, skip_spread, equal_spread, skip_threshold, equal_threshold; with teacher=judge also kind=stochastic/mistake/…); repeatable."""
    optimizer: OptimizerName | None = field(default=None, metadata={"help": _OPTIMIZER_HELP})
    sac: Any = field(default_factory=_default_sac, metadata={"flatten": "sac_", "flatten_exclude": ("hidden",)})
    """``SACConfig`` of ``optimizer=sac`` (replay size, batch, τ, learning rates, entropy temperature …)."""
    pretrain_steps: int | None = None
    """PEBBLE's unsupervised phase (``optimizer=sac`` only): env steps spent maximising the k-NN state entropy before the first label is asked, so the first queries compare diverse behaviours; they count toward ``steps``. 0: off; unset: as the label-budget recipe says when --optimizer is unset, else off."""
    pseudo_label_threshold: float | None = None
    """SURF: every reward round also fits the pool's unlabelled pairs that the ensemble is this sure of (max(P, 1 − P) > τ, e.g. 0.99), as pseudo-labels. 0: off; unset: as the label-budget recipe says when --optimizer is unset, else off."""
    crop_fraction: float | None = None
    """SURF: every reward round fits temporal crops of the labelled pairs (μ kept), each a random length between this share of a segment and all of it. 0: off; unset: as the label-budget recipe says when --optimizer is unset, else off."""
    n_envs: int = DEFAULT_N_ENVS
    """Vectorised envs collecting in lockstep."""
    segment_steps: int | None = None
    """Steps per segment; ``None`` = ``segment_seconds`` of env time (clamped to [25, 60]) or 25."""
    segment_seconds: float = 1.5
    """Env time per clip when ``segment_steps`` is None and the env has ``dt``."""
    selector: SelectorName = "disagreement"
    """How queries are chosen among candidates: ensemble disagreement (paper), entropy, uniform."""
    candidate_factor: int = 10
    """Candidate pairs drawn per query asked (the paper samples 10× more pairs than it asks)."""
    initial_fraction: float = 0.25
    """Share of the labels asked up front on segments of the untrained (random) policy."""
    pool_size: int = 256
    """Most recent segments kept in memory as candidates (saved to the store only when queried)."""
    score_reuse_rounds: int = 0
    """Query selection reuses the per-step member rewards the reward model gave a segment when it was collected while at most this many reward rounds have passed since, and scores it again otherwise; 0: only while the model is unchanged (the newest rollout's segments). Older scores save a network pass but are stale, and a less trained ensemble disagrees more, so they favour old segments."""
    reward_members: int = 3
    """Members of the reward ensemble."""
    policy_cnn: PolicyCNN = "a3c"
    """The policy's torso for image observations (Atari): ``a3c`` (16-32 filters, 256 features; the network Christiano et al. 2017 trained with A3C) or ``nature`` (DQN's, 3.1× the compute)."""
    reward_hidden: tuple[int, ...] = field(default=(64, 64), metadata={"cli": False})
    """Hidden sizes of each reward member's MLP (image observations use the CNN)."""
    reward: Any = field(default_factory=_default_reward, metadata={"flatten": "reward_"})
    """``RewardTrainerConfig`` of the reward trainer (epochs, lr, bootstrap, validation share, L2)."""
    ppo: Any = field(
        default_factory=_default_ppo,
        metadata={
            "flatten": "",
            "flatten_exclude": ("total_steps",),
            "flatten_aliases": {"num_steps": ("--n-steps",), "num_minibatches": ("--n-minibatches",), "learning_rate": ("--lr",)},
        },
    )
    """``PPOConfig`` of the policy optimiser (rollout length, lr, clip, GAE, epochs …); see ``control_ppo_config``."""
    store: str | None = None
    """Store URL or path; ``None`` = SQLite file ``RUN_DIR/preferences.sqlite``."""
    run_dir: str | None = None
    """Output directory; ``None`` = ``runs/<env>-<seed>-<time>``."""
    seed: int = 0
    """Seeds the envs, the networks and the loop's rng."""
    asynchronous: bool = field(default=False, metadata={"option": ("--async/--sync",)})
    """Reward training and the teacher run in background threads while the policy collects."""
    actors: int = 0
    """Processes that collect while this one learns (the paper's asynchronous design, ``optimizer=ppo``): 1 = an actor process steps the envs, runs a copy of the policy and scores every step with a copy of the reward model, one rollout ahead of the learner (which asks, trains the reward model and updates PPO meanwhile; the behaviour policy lags one update); 0 = collect and learn in turn in one process. Atari runs default to 1 (``presets.ATARI``, measured in docs/benchmarks_control.md)."""
    fixed_horizon: int | None = None
    """Every episode lasts exactly this many steps (termination hidden), per the paper's App. A."""
    drop_ctrl_cost: bool = False
    """Teacher sees the env reward without the control cost (the paper's MuJoCo teacher)."""
    true_reward_baseline: bool = field(default=False, metadata={"option": ("--baseline/--no-baseline",)})
    """Also run PPO on the true env reward with the same steps, for the report."""
    eval_episodes: int = 3
    """Episodes of the deterministic policy per evaluation (the report's evaluation curve); 0: no evaluations."""
    eval_points: int = 5
    """Evaluations over the run, at evenly spaced steps, the last at its end."""
    clip_steps: int = 300
    """Steps of the final policy's clip in the report (``final_policy.mp4`` and a strip of its frames: the first evaluation episode, seed ``EVAL_SEED``; MuJoCo: ``MUJOCO_GL=osmesa`` or ``egl``); 0: no clip."""
    checkpoint_minutes: float = 10.0
    """Minutes between checkpoints (one is always written at the end)."""
    lease_seconds: float = 60.0
    """How long the synthetic labeller holds a query before another labeller may take it."""
    human_wait_seconds: float = field(default=0.0, metadata={"aliases": ("--human-wait",)})
    """With ``teacher=human``: how long the loop waits at the end for outstanding answers."""
    human_queue_ahead: int = 24
    """With ``teacher=human``: post queries ahead of the label schedule (within ``labels``) so that at least this many wait unanswered after each rollout, and people labelling faster than the schedule never find the queue empty (8 people at one answer per 3 s take ~20 between two HalfCheetah rollouts); 0 = follow the schedule only."""
    report_video: bool = False
    """Deprecated: the report always has the final policy's clip and its strip (``--clip-steps``); this only makes the clip the whole episode (up to ``fixed_horizon`` or 1000 steps)."""
    progress: bool = field(default=True, metadata={"option": ("--progress/--no-progress",)})
    """Show a progress bar."""
    threads: int | None = 1
    """torch intra-op threads of the process (``torch.set_num_threads``, set by the CLI); 1: the policy and reward MLPs are too small to gain from more, and extra threads fight the env stepping and other processes for the cores (docs/benchmarks_control.md); 0 = torch's default (one per core)."""

    def __post_init__(self) -> None:
        if not isinstance(self.env_id, str) or not self.env_id.strip():
            raise ValueError("env_id must be a non-empty Gymnasium id")
        if self.steps < 1:
            raise ValueError(f"steps must be ≥ 1, got {self.steps}")
        if self.labels < 1:
            raise ValueError(f"labels must be ≥ 1 (a preference run needs comparisons), got {self.labels}")
        if self.teacher not in TEACHER_NAMES:
            raise ValueError(f"unknown teacher {self.teacher!r}; choose one of {', '.join(TEACHER_NAMES)}")
        if self.selector not in SELECTOR_NAMES:
            raise ValueError(f"unknown selector {self.selector!r}; choose one of {', '.join(SELECTOR_NAMES)}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZER_NAMES:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZER_NAMES)}")
        if self.policy_cnn not in POLICY_CNNS:
            raise ValueError(f"unknown policy_cnn {self.policy_cnn!r}; choose one of {', '.join(POLICY_CNNS)}")
        if self.n_envs < 1:
            raise ValueError(f"n_envs must be ≥ 1, got {self.n_envs}")
        self._apply_label_recipe()
        if self.pretrain_steps < 0:
            raise ValueError(f"pretrain_steps must be ≥ 0, got {self.pretrain_steps}")
        if self.pretrain_steps and self.optimizer != "sac":
            raise ValueError(f"pretrain_steps needs optimizer 'sac' (PEBBLE's off-policy learner), got {self.optimizer!r}")
        if self.actors not in (0, 1):
            raise ValueError(f"actors must be 0 or 1, got {self.actors}")
        if self.actors and self.optimizer != "ppo":
            raise ValueError(f"actors=1 collects with a copy of a PPO policy: it needs optimizer 'ppo', got {self.optimizer!r}")
        if self.optimizer == "sac" and self.asynchronous:
            raise ValueError("optimizer 'sac' relabels its replay buffer after each reward round: run it synchronously")
        if self.pseudo_label_threshold and not 0.5 <= self.pseudo_label_threshold < 1.0:
            raise ValueError(f"pseudo_label_threshold must lie in [0.5, 1) (0: off), got {self.pseudo_label_threshold}")
        if self.crop_fraction and not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must lie in (0, 1] (0: off), got {self.crop_fraction}")
        if self.segment_steps is not None and self.segment_steps < 2:
            raise ValueError(f"segment_steps must be ≥ 2, got {self.segment_steps}")
        if not (math.isfinite(self.segment_seconds) and self.segment_seconds > 0):
            raise ValueError(f"segment_seconds must be > 0, got {self.segment_seconds}")
        if self.candidate_factor < 1:
            raise ValueError(f"candidate_factor must be ≥ 1, got {self.candidate_factor}")
        if not 0.0 <= self.initial_fraction < 1.0:
            raise ValueError(f"initial_fraction must be in [0, 1), got {self.initial_fraction}")
        if self.pool_size < 2:
            raise ValueError(f"pool_size must be ≥ 2, got {self.pool_size}")
        if self.score_reuse_rounds < 0:
            raise ValueError(f"score_reuse_rounds must be ≥ 0, got {self.score_reuse_rounds}")
        if self.reward_members < 1:
            raise ValueError(f"reward_members must be ≥ 1, got {self.reward_members}")
        self.reward_hidden = tuple(int(h) for h in self.reward_hidden)
        if any(h < 1 for h in self.reward_hidden):
            raise ValueError(f"reward_hidden sizes must be ≥ 1, got {self.reward_hidden}")
        if self.fixed_horizon is not None and self.fixed_horizon < 1:
            raise ValueError(f"fixed_horizon must be ≥ 1, got {self.fixed_horizon}")
        for name in ("eval_episodes", "clip_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if self.eval_points < 1:
            raise ValueError(f"eval_points must be ≥ 1, got {self.eval_points}")
        if self.report_video:
            warnings.warn("report_video (--report-video) is deprecated: the report always shows the final policy's clip "
                          "and its strip (final_policy.mp4); set clip_steps (--clip-steps) for its length",
                          FutureWarning, stacklevel=3)  # fmt: skip (FutureWarning: shown to CLI users by default)
        if not (math.isfinite(self.checkpoint_minutes) and self.checkpoint_minutes > 0):
            raise ValueError(f"checkpoint_minutes must be > 0, got {self.checkpoint_minutes}")
        if self.lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be > 0, got {self.lease_seconds}")
        if self.threads is not None and self.threads < 0:
            raise ValueError(f"threads must be ≥ 0 (0 = torch's default), got {self.threads}")
        if isinstance(self.human_queue_ahead, bool) or not isinstance(self.human_queue_ahead, int) \
                or self.human_queue_ahead < 0:
            raise ValueError(f"human_queue_ahead must be an int ≥ 0, got {self.human_queue_ahead!r}")
        if self.human_wait_seconds < 0:
            raise ValueError(f"human_wait_seconds must be ≥ 0, got {self.human_wait_seconds}")
        if self.teacher == "human" and self.teacher_kwargs:
            raise ValueError("teacher_kwargs apply to synthetic teachers only, not to teacher=human")
        if self.teacher != "human":
            import numpy as np

            from prefrl.teachers.factory import build_teacher

            # checks the kwargs (and imports the judge function, so a bad MODULE:FUNCTION fails now)
            build_teacher(self.teacher, np.random.default_rng(0), judge=self.judge, **self.teacher_kwargs)
        elif self.judge is not None:
            raise ValueError("--judge applies to teacher=judge only, not to teacher=human")
        if getattr(self.ppo, "total_steps", self.steps) != self.steps:
            # lr annealing runs over the preference run's steps (derived, never set by hand).
            self.ppo = dataclasses.replace(self.ppo, total_steps=self.steps)
        steps_per_rollout = self.ppo.num_steps * self.n_envs
        if self.steps < steps_per_rollout:
            raise ValueError(
                f"steps must cover at least one rollout ({self.ppo.num_steps} steps × {self.n_envs} envs "
                f"= {steps_per_rollout}), got {self.steps}"
            )
        if self.segment_steps is not None and self.segment_steps > self.ppo.num_steps:
            raise ValueError(
                f"segment_steps ({self.segment_steps}) must fit in one rollout of {self.ppo.num_steps} steps"
            )

    def _apply_label_recipe(self) -> None:
        """Fill the unset optimiser, PEBBLE and SURF fields: from the label budget's measured recipe when the
        optimiser is unset (:mod:`prefrl.control.label_defaults`), else off. Saved resolved in config.json."""
        from prefrl.control import label_defaults as ld

        recipe = None
        if self.optimizer is None:
            # SAC relabels its buffer between rounds, so an asynchronous run (or one with an actor) keeps PPO
            recipe = ld.RECIPES["ppo"] if self.asynchronous or self.actors else ld.recipe_for(self.env_id, self.labels)[1]
            self.optimizer = recipe.optimizer  # type: ignore[assignment]
        if self.pretrain_steps is None:
            self.pretrain_steps = ld.pebble_steps(self.steps) if recipe is not None and recipe.pebble else 0
        surf = recipe is not None and recipe.surf
        if self.pseudo_label_threshold is None:
            self.pseudo_label_threshold = ld.SURF_THRESHOLD if surf else 0.0
        if self.crop_fraction is None:
            self.crop_fraction = ld.SURF_CROP_FRACTION if surf else 0.0

    @property
    def steps_per_rollout(self) -> int:
        """Env steps of one rollout over all envs (T × N)."""
        return self.ppo.num_steps * self.n_envs

    @property
    def rollout_steps(self) -> int:
        """Env steps per env of one rollout (T, ``ppo.num_steps``); SB3 optimisers use it too."""
        return self.ppo.num_steps

    @property
    def final_clip_steps(self) -> int:
        """Steps of the final policy's clip: ``clip_steps``, or the whole episode with the deprecated ``report_video``."""
        return max(self.clip_steps, self.fixed_horizon or 1000) if self.report_video else self.clip_steps

    @property
    def n_rollouts(self) -> int:
        """PPO iterations of the run (the last partial rollout is dropped)."""
        return self.steps // self.steps_per_rollout

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (nested configs become dicts)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                value = dataclasses.asdict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ControlConfig:
        """Rebuild from ``to_dict`` output (unknown keys → ``ValueError``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown ControlConfig fields: {sorted(unknown)}")
        data = dict(data)
        data.setdefault("policy_cnn", "nature")  # runs saved before the field existed had the Nature CNN
        if isinstance(data.get("ppo"), dict):
            data["ppo"] = _build_nested(_ppo_config_cls(), data["ppo"])
        if isinstance(data.get("sac"), dict):
            data["sac"] = _build_nested(_sac_config_cls(), data["sac"])
        if isinstance(data.get("reward"), dict):
            data["reward"] = _build_nested(_reward_config_cls(), data["reward"])
        if "reward_hidden" in data:
            data["reward_hidden"] = tuple(data["reward_hidden"])
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


def _build_nested(cls: type, values: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in values.items():
        if k not in fields:
            raise ValueError(f"unknown {cls.__name__} field {k!r}")
        if not fields[k].init:
            continue
        kwargs[k] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)
