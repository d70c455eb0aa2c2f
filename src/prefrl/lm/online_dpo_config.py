"""Configuration of online (iterative) DPO: ``prefrl lm online-dpo``.

``OnlineDPOConfig`` adds to what every sampling trainer shares
(:class:`prefrl.lm.rl_config.LMSamplingConfig`: rollout, KL estimator of the instruments,
optimiser, seed) DPO's knobs, the reference it is pulled towards, and how long a round waits for
people. ``OnlineDPORunConfig`` adds the run from files and the choice of teacher. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefrl.lm.rl_config import LMRunFields, LMSamplingConfig
from prefrl.names import DPOLossType, DPOReference, OnlineTeacher, check_choice
from prefrl.utils.config import doc

__all__ = ["OnlineDPOConfig", "OnlineDPORunConfig"]


@dataclass
class OnlineDPOConfig(LMSamplingConfig):
    """Hyper-parameters of :class:`prefrl.lm.online_dpo.OnlineDPOTrainer` (two responses per prompt per round)."""

    batch_size: int = doc("Prompts per round; each gets two fresh responses, one pair asked.", default=16)
    update_epochs: int = doc("Passes of DPO over each round's answered pairs.", default=2)
    minibatch_size: int = doc("Pairs per gradient step (the last one of an epoch may be smaller).", default=8)
    learning_rate: float = doc("Adam learning rate of the policy.", default=1e-6)
    beta: float = doc("DPO's β: the implicit KL penalty's strength (the pull towards the reference).", default=0.1)
    loss_type: DPOLossType = doc(
        "'sigmoid' (DPO; cDPO with label_smoothing) or 'ipo' (Azar et al. 2023).", default="sigmoid"
    )
    label_smoothing: float = doc("Assumed label-noise rate; > 0 gives conservative DPO (cDPO).", default=0.0)
    reference: DPOReference = doc(
        "What DPO's log-ratios are taken against: 'initial' (the starting policy, throughout) or 'previous' "
        "(the policy that sampled the round, i.e. the previous round's: iterative DPO, Xu et al. 2023). "
        "The logged KL (objective/kl*) is always to the starting policy.",
        default="initial",
    )
    answer_wait_s: float = doc(
        "How long a round waits for people's answers (teacher=human) before training on those given; "
        "the rest stay queued and are trained on in the round after they are answered.",
        default=600.0,
    )
    settle_s: float = doc(
        "People's answers are trained on only once this old (the web app's undo window); machine "
        "teachers' answers at once.",
        default=30.0,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("loss_type", self.loss_type, DPOLossType)
        check_choice("reference", self.reference, DPOReference)
        if not self.beta > 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        for name in ("answer_wait_s", "settle_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)!r}")

    @property
    def max_length(self) -> int:
        """Longest prompt ‖ response a DPO pass encodes: max_prompt_length + max_new_tokens + 1 (EOS)."""
        return self.max_prompt_length + self.max_new_tokens + 1


@dataclass
class OnlineDPORunConfig(OnlineDPOConfig, LMRunFields):
    """Online DPO from files: policy, prompts, a teacher, and the store that keeps every pair and answer."""

    teacher: OnlineTeacher = doc(
        "Who answers each round's pairs, through the store's query queue: 'reward-model' (the frozen "
        "--reward-model prefers the higher-scored response), 'judge' (an AI judge asked in both orders: "
        "--judge is a local model or an OpenAI-compatible URL) or 'human' (people in the web app: serve the "
        "same --store with --serve, or `prefrl label serve --store …` beside the run; each round waits up to "
        "--answer-wait-s).",
        default="reward-model",
    )
    judge: str | None = doc(
        "teacher=judge: a local causal LM ('smollm2', a directory) or an OpenAI-compatible base URL "
        "(http://…/v1).",
        default=None,
    )
    judge_model: str = doc("teacher=judge with a URL: the model name sent to the endpoint.", default="default")
    store: str | None = doc(
        "The preference store (SQLite path or SQLAlchemy URL) that keeps every pair and answer "
        "(None = output_dir/prefs.db).",
        default=None,
    )
    labeller: str | None = doc(
        "teacher=human: only this labeller may answer the run's pairs (None = anyone logged in; --serve "
        "--labellers names who gets a login link).",
        default=None,
    )
    output_dir: str = doc(
        "Where checkpoints (checkpoints/step-N, with policy/, trainer_state.pt reachable at the top), "
        "metrics.jsonl and, by default, the store go.",
        default="runs/online-dpo",
    )
    total_steps: int = doc("Rounds to run in total, counting resumed ones.", default=20)
    save_every: int = doc(
        "Write a resumable checkpoint every this many rounds (1: a kill loses at most the round in flight, "
        "whose pairs and answers the store keeps); 0 only at the end.",
        default=1,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("teacher", self.teacher, OnlineTeacher)
        if self.teacher == "reward-model" and not self.reward_model:
            raise ValueError("reward_model: teacher=reward-model needs a reward-model directory (--reward-model)")
        if self.teacher == "judge" and not self.judge:
            raise ValueError("judge: teacher=judge needs --judge (a local model or an http(s):// URL)")
        if self.teacher != "judge" and self.judge:
            raise ValueError(f"judge: --judge applies to teacher=judge only, not teacher={self.teacher}")
        if self.labeller is not None and self.teacher != "human":
            raise ValueError(f"labeller: --labeller applies to teacher=human only, not teacher={self.teacher}")
        self.check_run_fields(need_reward_model=False)

    @property
    def store_url(self) -> str:
        """The store this run keeps its pairs and answers in."""
        return self.store or f"{self.output_dir.rstrip('/')}/prefs.db"

    def trainer_config(self) -> OnlineDPOConfig:
        """The trainer's hyper-parameters alone."""
        return OnlineDPOConfig(**{k: getattr(self, k) for k in OnlineDPOConfig.__dataclass_fields__})
