"""What the configs of the on-policy LM trainers share (PPO, GRPO, RLOO, REINFORCE++, online DPO).

:class:`LMSamplingConfig` holds what every :class:`prefrl.lm.policy_trainer.LMPolicyTrainer`
needs (rollout, KL estimator, optimiser, seed); :class:`LMRLConfig` adds the KL penalty, its
control and the clipped-update knobs of the RL trainers; :class:`LMRunFields` what a command needs to
build and save a run from files (policy, output directory, resuming, LoRA, gold). The knobs PPO
has in both families carry the control agent's (cleanrl's) names. Every field is documented next
to itself (its ``--help``) and validated when the config is built. Torch-free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from prefrl.names import KLControl, KLEstimator, KLPenalty, check_choice
from prefrl.rl.ppo_config import check_ppo_knobs
from prefrl.utils.config import doc

__all__ = ["LMSamplingConfig", "LMRLConfig", "LMRunFields", "is_import_spec"]


@dataclass
class LMSamplingConfig:
    """What every trainer that samples from its policy shares: the rollout, the KL estimator its
    instruments name, the optimiser and the seed (PPO, the critic-free methods, online DPO)."""

    # --- rollout -------------------------------------------------------------------------
    batch_size: int = doc("Prompts per step.", default=16)
    max_new_tokens: int = doc("Longest response; generation stops earlier at the EOS token.", default=48)
    temperature: float = doc(
        "Sampling temperature; log-probabilities are computed from logits / temperature too (N+ details #16), so the ratio is that of the distribution actually sampled.",
        default=0.7,
    )
    top_k: int = doc(
        "0 = no top-k filtering (the sampling distribution must match the scored one).", default=0
    )
    max_prompt_length: int = doc("Prompts are left-truncated to this many tokens.", default=64)
    forward_batch_size: int = doc(
        "Rows per no-grad forward pass when scoring rollouts (memory knob only).", default=16
    )

    # --- the KL to the reference, as measured and (for the RL methods) penalised ------------
    kl_estimator: KLEstimator = doc(
        "Per-token estimator of the KL to the reference: k1 (−log r), k2, k3 (Schulman 2020); in the penalty of "
        "ppo and rl (where --kl-penalty says), and in every trainer's logged KL (objective/kl*).",
        default="k1",
    )
    support_top_p: float | None = doc(
        "Support constraint: sample only tokens inside the reference's top-p nucleus (None = off). "
        "Needs an explicit reference model (not LoRA); measured, not a guarantee (docs/kl.md).",
        default=None,
    )
    support_min_p: float | None = doc(
        "Support constraint: sample only tokens with reference probability ≥ min_p × the top token's (None = off).",
        default=None,
    )

    # --- optimisation ---------------------------------------------------------------------
    update_epochs: int = doc("Passes over each batch of rollouts.", default=4, aliases=("--ppo-epochs",))
    minibatch_size: int = doc(
        "Rows (responses) per gradient step; must divide the responses per step.",
        default=8,
        aliases=("--mini-batch-size",),
    )
    learning_rate: float = doc("Adam learning rate of the policy.", default=3e-6)
    max_grad_norm: float = doc("Gradient clipping (by global norm, per model).", default=1.0)
    adam_eps: float = doc("Adam ε (N+ details).", default=1e-5)

    # --- bookkeeping -----------------------------------------------------------------------
    seed: int = doc("Seeds the trainer's own generators (sampling, minibatch order).", default=0)

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_new_tokens", "max_prompt_length", "forward_batch_size", "minibatch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        check_ppo_knobs(self)  # update_epochs, learning_rate, clip_coef, max_grad_norm, gamma, gae_lambda, …
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be ≥ 0, got {self.top_k}")
        check_choice("kl_estimator", self.kl_estimator, KLEstimator)
        if self.support_top_p is not None and not 0.0 < self.support_top_p <= 1.0:
            raise ValueError(f"support_top_p must be in (0, 1], got {self.support_top_p}")
        if self.support_min_p is not None and not 0.0 <= self.support_min_p <= 1.0:
            raise ValueError(f"support_min_p must be in [0, 1], got {self.support_min_p}")
        if not self.adam_eps > 0:
            raise ValueError(f"adam_eps must be positive, got {self.adam_eps}")

    @property
    def support_constrained(self) -> bool:
        return self.support_top_p is not None or self.support_min_p is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON checkpoints)."""
        return asdict(self)


@dataclass
class LMRLConfig(LMSamplingConfig):
    """Rollout, KL and clipped-update hyper-parameters shared by the on-policy RL trainers (PPO, GRPO, …)."""

    # --- reward shaping ------------------------------------------------------------------
    kl_penalty: KLPenalty = doc(
        "Where the KL to the reference acts: 'reward' (−β·KL_t added to each token's reward, InstructGPT) or "
        "'loss' (β·mean KL estimate added to the policy loss, GRPO-style; use k2 for the same on-policy "
        "gradient as k1-in-reward, k3 regularises the reverse KL — see docs/kl.md).",
        default="reward",
    )
    kl_control: KLControl = doc(
        "KL coefficient controller: fixed, adaptive (Ziegler et al. 2019) or budget (dual ascent).",
        default="fixed",
    )
    kl_coef: float = doc("Initial KL coefficient β in r_t = score·[t = EOS] − β·KL_t.", default=0.05)
    kl_target: float = doc(
        "Target sequence-summed KL (nats) for the adaptive / budget controllers.", default=6.0
    )
    kl_horizon: int = doc("Horizon of the adaptive controller (Ziegler et al. 2019).", default=10_000)
    missing_eos_penalty: float | None = doc(
        "Subtracted from the score of a response that never emits EOS (None = no penalty).", default=None
    )
    score_clip: float | None = doc(
        "Clip sequence scores to ±score_clip before shaping (None = no clip).", default=None
    )

    # --- clipped updates -----------------------------------------------------------------
    clip_coef: float = doc("PPO ratio clip ε (and the value clip when clip_vloss).", default=0.2)
    ent_coef: float = doc("Weight of the policy-entropy bonus (0 = none).", default=0.0)
    target_kl: float | None = doc(
        "Stop the epochs early once an epoch's mean approx-KL (k3) exceeds this (None = never).", default=None
    )

    def __post_init__(self) -> None:
        # before the shared checks, which would otherwise report the derived num_minibatches = 0 of a
        # minibatch larger than the step's responses instead of the option to change
        mb, rows = self.minibatch_size, self.rows_per_step
        if isinstance(mb, int) and isinstance(rows, int) and mb > 0 and rows > 0 and rows % mb:
            raise ValueError(
                f"minibatch_size (formerly mini_batch_size) = {mb} must divide {self._rows_label} = {rows}: "
                f"pass --minibatch-size {max(d for d in range(1, min(mb, rows) + 1) if rows % d == 0)} or another divisor"
            )
        super().__post_init__()
        check_choice("kl_penalty", self.kl_penalty, KLPenalty)
        check_choice("kl_control", self.kl_control, KLControl)
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be ≥ 0, got {self.kl_coef}")
        if self.kl_target <= 0 or self.kl_horizon <= 0:
            raise ValueError("kl_target and kl_horizon must be positive")
        if self.score_clip is not None and self.score_clip <= 0:
            raise ValueError(f"score_clip must be positive or None, got {self.score_clip}")

    @property
    def rows_per_step(self) -> int:
        """Responses sampled per step (one per prompt unless a subclass samples k)."""
        return self.batch_size

    @property
    def _rows_label(self) -> str:
        return "batch_size"

    @property
    def num_minibatches(self) -> int:
        """Gradient steps per epoch: rows_per_step / minibatch_size."""
        return self.rows_per_step // self.minibatch_size

    @property
    def kl_description(self) -> str:
        """Which KL estimator acts where, in words (logged by the trainers, and in ``--help``)."""
        where = "in the per-token reward (−β·KL_t)" if self.kl_penalty == "reward" else "as a loss term (β·mean KL_t)"
        return f"KL to the reference: estimator {self.kl_estimator}, {where}, β {self.kl_control} from {self.kl_coef}"


@dataclass
class LMRunFields:
    """What a run from files needs besides the trainer's hyper-parameters (mixed into ``*RunConfig``)."""

    policy: str = doc(
        "Policy to start from (and reference): a checkpoint directory, 'smollm2' or 'tiny'.",
        default="smollm2",
    )
    reward_model: str = doc(
        "Reward-model directory (RewardModel.save_pretrained); frozen during training.", default=""
    )
    prompts: str = doc(
        "Prompt file (JSONL/JSON/Parquet or datasets directory with a 'prompt' column).", default=""
    )
    output_dir: str = doc(
        "Where checkpoints (checkpoints/step-N, with policy/, trainer_state.pt reachable at the top) "
        "and metrics.jsonl go.",
        default="runs/rl",
    )
    total_steps: int = doc("Steps (batches of rollouts) to run in total, counting resumed ones.", default=100)
    save_every: int = doc("Write a resumable checkpoint every this many steps; 0 only at the end.", default=0)
    keep_checkpoints: int = doc(
        "Step checkpoints kept under output_dir/checkpoints (the newest; output_dir/current points at the last).",
        default=3,
    )
    resume: str | None = doc(
        "Run (or checkpoint) directory to resume from (models, optimisers, KL controller, counters, RNG); "
        "the run continues in that run's directory unless --output-dir is given.",
        default=None,
    )
    overwrite: bool = doc(
        "Delete what a non-empty output_dir holds and start afresh (without it such a run is refused, "
        "unless it is a --resume).",
        default=False,
    )
    gold: str | None = doc(
        "A gold reward logged beside the proxy as objective/gold, with objective/gold_transfer (the share of the "
        "gold the proxy's gain predicts that the gold gained; ~0 = the reward model is being exploited) and a "
        "divergence warning: "
        "'vader' (VADER sentiment of the response) or 'module:function', fn(prompts, responses) -> scores.",
        default=None,
    )
    lora_r: int = doc(
        "LoRA rank of the policy; 0 trains the weights (the reference is then a frozen copy).", default=0
    )
    lora_alpha: float = doc("LoRA scaling numerator alpha.", default=32.0)
    train_top_layers: int = doc(
        "Train only the last this many decoder layers (0 = all): backward stops there, a CPU speed-up.",
        default=0,
    )
    max_prompts: int = doc("Use only the first this many prompts; 0 uses all.", default=0)

    def check_run_fields(self, need_reward_model: bool = True) -> None:
        """ValueError naming the first bad run field."""
        if need_reward_model and not self.reward_model:
            raise ValueError("reward_model: give a reward-model directory")
        if not self.prompts:
            raise ValueError("prompts: give a prompt file")
        if self.gold is not None and self.gold != "vader" and not is_import_spec(self.gold):
            raise ValueError(f"gold must be 'vader' or 'module:function', got {self.gold!r}")
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be ≥ 1, got {self.keep_checkpoints}")
        for name in ("total_steps", "save_every", "lora_r", "train_top_layers", "max_prompts"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if self.resume is not None and not (Path(self.resume) / "trainer_state.pt").is_file():
            raise ValueError(f"resume: {self.resume} holds no trainer_state.pt")
        output_default = next(f.default for f in fields(self) if f.name == "output_dir")
        if self.resume is not None and self.output_dir == output_default:  # continue where the run was
            resume = Path(self.resume)
            self.output_dir = str(resume.parent.parent if resume.parent.name == "checkpoints" else resume)


def is_import_spec(spec: str) -> bool:
    """Whether ``spec`` reads ``package.module:function``."""
    module, sep, name = spec.partition(":")
    return bool(sep and module and name and all(part.isidentifier() for part in [*module.split("."), *name.split(".")]))
