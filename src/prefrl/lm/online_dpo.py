"""Online (iterative) DPO with any teacher: fresh pairs from the current policy every round.

Each round (one :meth:`OnlineDPOTrainer.step`) reads top to bottom:

1. **sample** two responses per prompt from the current policy with the KV-cached sampler of
   ``lm rl`` (the prompt's cache shared by both), and measure them: KL per token and per sequence
   to the starting policy (estimator ``kl_estimator``), entropy, length, degenerate outputs, gold;
2. **post** one pair per prompt to the store with its query, in one transaction
   (:mod:`prefrl.lm.online_dpo_store`; a resumed round finds its pairs there instead);
3. **ask** the teacher through the store's queue, as every teacher is asked
   (:func:`prefrl.teachers.queue.answer_queries`): a reward model or an AI judge answers at once;
   people answer in the web app, and the round waits up to ``answer_wait_s`` for them;
4. **learn**: DPO (:func:`prefrl.losses.dpo_loss`) on the run's answers not trained on yet,
   against the starting policy (``reference="initial"``) or the policy that sampled the round
   (``"previous"``: iterative DPO, Xu et al. 2023; Guo et al. 2024, *Direct language model
   alignment from online AI feedback*);
5. **log**: the DPO metrics, the log-ratio margin before and after the update, labels asked /
   trained / tied, the sample instruments.

Checkpoints are those of the RL trainers (:mod:`prefrl.lm.ppo_checkpoint`), with the run's id
and the last answer trained on; ``policy/`` loads with ``transformers``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import torch

from prefrl.diagnostics.degenerate import degenerate_report
from prefrl.diagnostics.kl_profile import kl_summary
from prefrl.lm.data import PreferenceExample
from prefrl.lm.dpo import dpo_batch_metrics, pair_logprobs
from prefrl.lm.online_dpo_config import OnlineDPOConfig, OnlineDPORunConfig
from prefrl.lm.online_dpo_store import RUN_KEY, new_answers, post_round, round_pairs, wait_for_answers
from prefrl.lm.policy_trainer import LMPolicyTrainer
from prefrl.lm.reward_functions import RewardFn, call_reward
from prefrl.lm.training import release_free_memory
from prefrl.losses import dpo_loss, kl_estimate, masked_mean
from prefrl.teachers.base import Teacher
from prefrl.teachers.queue import answer_queries

__all__ = ["OnlineDPOConfig", "OnlineDPORunConfig", "OnlineDPOTrainer", "METRIC_NAMES", "run_online_dpo"]

logger = logging.getLogger(__name__)

#: What every round that trains logs (plus the sample instruments of a freshly sampled round, and ``time/*``).
METRIC_NAMES = (
    "labels/asked",
    "labels/answered",
    "labels/trained",
    "labels/ties",
    "labels/incomparable",
    "labels/waiting",
    "loss/dpo",
    "rewards/chosen",
    "rewards/rejected",
    "reward/accuracy",
    "reward/margin",
    "reward/margin_before",
)


class OnlineDPOTrainer(LMPolicyTrainer):
    """Online DPO for a causal LM: sample pairs → teacher through the store → DPO on the answers.

    Args:
        policy: the causal LM to train (a ``PreTrainedModel`` or a PEFT model).
        ref_policy: the frozen starting policy; ``None``: the LoRA policy's base, or a frozen copy.
        teacher: any text-pair :class:`~prefrl.teachers.base.Teacher` (``lease_as = None``: people,
            who answer in the web app serving ``store``).
        store: the :class:`~prefrl.data.store.PreferenceStore` that keeps every pair and answer.
        tokenizer: the policy's tokenizer (pad and EOS set, left padding for sampling).
        cfg: hyper-parameters.
        gold_fn: optional gold reward of the samples (``objective/gold``).
        labeller: with people, only this labeller may answer the run's pairs (None = anyone).
    """

    name = "online-dpo"
    config_file = "online_dpo_config.json"
    group_size = 2  # the two responses of a prompt are adjacent rows: their prompt is scored once
    progress_postfix = ("reward/margin", "reward/accuracy", "objective/kl", "labels/trained", "labels/waiting")

    def __init__(
        self,
        policy: torch.nn.Module,
        ref_policy: torch.nn.Module | None,
        teacher: Teacher[Any],
        store: Any,
        tokenizer: Any,
        cfg: OnlineDPOConfig,
        gold_fn: RewardFn | None = None,
        labeller: str | None = None,
    ) -> None:
        if teacher.compares not in (None, "text"):
            raise ValueError(f"teacher {teacher.name!r} compares {teacher.compares}, not text pairs")
        super().__init__(policy, ref_policy, None, tokenizer, cfg, gold_fn)  # type: ignore[arg-type]
        self.teacher, self.store = teacher, store
        self.labeller = teacher.lease_as if teacher.lease_as is not None else labeller
        #: Names this run's pairs in the store (saved in checkpoints).
        self.run_id = uuid.uuid4().hex
        #: The newest store answer read by a round (the next one reads after it).
        self.last_comparison_id = 0

    # ------------------------------------------------------------------ one round
    def step(self, prompts: Sequence[str]) -> dict[str, float]:
        """One round on ``prompts`` (``cfg.batch_size`` of them): sample, post, ask, learn."""
        cfg = self.cfg
        if len(prompts) != cfg.batch_size:
            raise ValueError(f"step needs batch_size={cfg.batch_size} prompts, got {len(prompts)}")
        t_start = time.perf_counter()
        round_no = self.global_step + 1

        # 1–2. sample two responses per prompt and post the pairs (or find the round's, when resumed)
        pairs = round_pairs(self.store, self.run_id, round_no)
        sample_metrics: dict[str, float] = {"round/resumed": float(bool(pairs))}
        if not pairs:
            batch = self.rollout(prompts, 2)  # (2·B,) rows: the two responses of a prompt adjacent
            sample_metrics.update(self._sample_instruments(batch))
            r = batch.responses
            pairs = post_round(
                self.store, self.run_id, round_no, prompts, r[0::2], r[1::2],
                policy_step=self.global_step, labeller=self.labeller,
            )  # fmt: skip
            self.n_samples += len(r)
        t_sample = time.perf_counter()

        # 3. ask: the pump answers for a machine teacher; people answer in the app meanwhile
        answered = answer_queries(self.store, self.teacher, lease_seconds=max(60.0, cfg.answer_wait_s))
        people = self.teacher.lease_as is None
        settle = cfg.settle_s if people else 0.0
        waiting = wait_for_answers(self.store, pairs, cfg.answer_wait_s if people else 0.0, settle,
                                   on_change=(lambda n: self.bar_note(waiting=str(n))) if people else None)  # fmt: skip
        answers = new_answers(self.store, self.run_id, self.last_comparison_id, settle)
        t_ask = time.perf_counter()

        # 4. DPO on every answer not trained on yet
        stats = self._update(answers.examples)
        self.last_comparison_id = int(answers.last_id or self.last_comparison_id)
        release_free_memory()
        t_update = time.perf_counter()
        self.global_step += 1

        # 5. metrics
        return {
            **sample_metrics,
            "labels/asked": float(len(pairs)),
            "labels/answered": float(answered),
            "labels/trained": float(len(answers.examples)),
            "labels/ties": float(answers.ties),
            "labels/incomparable": float(answers.incomparable),
            "labels/waiting": float(waiting),
            **stats,
            "time/sample_s": t_sample - t_start,
            "time/ask_s": t_ask - t_sample,
            "time/update_s": t_update - t_ask,
            "time/step_s": t_update - t_start,
            "step": float(self.global_step),
        }

    @torch.no_grad()
    def _sample_instruments(self, batch: Any) -> dict[str, float]:
        """KL to the starting policy (``kl_estimator``, per token and per sequence), entropy, length, gold."""
        scored = self._score_policy(batch)
        mask = batch.response_mask.float()  # (2B, R)
        kl_t = kl_estimate(scored["logprobs"], scored["ref_logprobs"], self.cfg.kl_estimator) * mask  # (2B, R)
        out = {
            **kl_summary(kl_t, mask),  # objective/kl (sequence sum), kl_token, kl_seq_max, kl_front_loaded
            "objective/entropy": float(masked_mean(scored["entropy"], mask)),
            "val/num_eos_tokens": float(batch.has_eos.sum()),
            "response/length": float(mask.sum(1).mean()),
            **degenerate_report(batch.responses),
        }
        if self.gold_fn is not None:
            out["objective/gold"] = float(torch.as_tensor(call_reward(self.gold_fn, batch).rewards, dtype=torch.float32).mean())
        return out

    # ------------------------------------------------------------------ DPO on the answers
    @torch.no_grad()
    def _pair_logprobs(self, model: Any, rows: list[PreferenceExample]) -> torch.Tensor:
        """(N, 2) summed log-probs of (chosen, rejected), no grad, in forward_batch_size chunks."""
        out, fb = [], max(1, self.cfg.forward_batch_size // 2)
        for s in range(0, len(rows), fb):
            chunk = rows[s : s + fb]
            lp = pair_logprobs(model, self.tokenizer, chunk, self.cfg.max_length, self.device)  # (2b,)
            out.append(torch.stack([lp[: len(chunk)], lp[len(chunk) :]], dim=1).float().cpu())
        return torch.cat(out)

    def _margin(self, policy_lp: torch.Tensor, ref_lp: torch.Tensor) -> float:
        """Mean β·[(log π − log π_ref)(chosen) − (log π − log π_ref)(rejected)] over the pairs."""
        h = (policy_lp[:, 0] - ref_lp[:, 0]) - (policy_lp[:, 1] - ref_lp[:, 1])
        return float(self.cfg.beta * h.mean())

    def _update(self, examples: list[PreferenceExample]) -> dict[str, float]:
        """Epochs of DPO minibatches over ``examples``; {} when there is nothing to train on."""
        cfg = self.cfg
        if not examples:
            return {}
        before = self._pair_logprobs(self.policy, examples)  # (N, 2): the policy that sampled the round
        if cfg.reference == "previous":
            ref_lp = before
        else:
            with self._reference() as ref:
                ref_lp = self._pair_logprobs(ref, examples)
        logs: list[dict[str, float]] = []
        params = [p for p in self.policy.parameters() if p.requires_grad]
        for _ in range(cfg.update_epochs):
            order = torch.randperm(len(examples), generator=self.generator)
            for s in range(0, len(examples), cfg.minibatch_size):
                idx = order[s : s + cfg.minibatch_size]
                rows = [examples[int(i)] for i in idx]
                lp = pair_logprobs(self.policy, self.tokenizer, rows, cfg.max_length, self.device)  # (2mb,)
                pc, pr = lp[: len(rows)], lp[len(rows) :]
                mb_ref = ref_lp[idx].to(lp.device)  # (mb, 2)
                loss = dpo_loss(pc, pr, mb_ref[:, 0], mb_ref[:, 1], cfg.beta, cfg.label_smoothing, cfg.loss_type).mean()
                self.policy_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                self.policy_optimizer.step()
                logs.append({"loss/dpo": float(loss.detach()), "policy/grad_norm": float(grad_norm),
                             **dpo_batch_metrics(pc, pr, mb_ref[:, 0], mb_ref[:, 1], cfg.beta)})  # fmt: skip
        after = self._pair_logprobs(self.policy, examples)
        stats = {k: sum(m[k] for m in logs) / len(logs) for k in logs[0]}
        stats.pop("reward/margin")  # the minibatch mean mixes epochs; log the margin before and after instead
        return {
            **stats,
            "reward/margin_before": self._margin(before, ref_lp),
            "reward/margin": self._margin(after, ref_lp),
            "reward/accuracy_after": float(((after[:, 0] - ref_lp[:, 0]) > (after[:, 1] - ref_lp[:, 1])).float().mean()),
        }

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict[str, Any]:
        return {"online_dpo": {"run_id": self.run_id, "last_comparison_id": self.last_comparison_id}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        saved = state.get("online_dpo")
        if saved is None:
            raise ValueError("resume: the checkpoint is not an online-DPO run's (no online_dpo state)")
        self.run_id = str(saved["run_id"])
        self.last_comparison_id = int(saved["last_comparison_id"])
        if self.global_step > 0 and not self.store.text_pairs(meta={RUN_KEY: self.run_id}):
            raise ValueError(f"resume: store {self.store.url} holds none of this run's pairs (run {self.run_id}): "
                             "pass the store it used (--store; by default its output_dir/prefs.db)")  # fmt: skip


# ---------------------------------------------------------------------- building and running


def build_teacher(cfg: OnlineDPORunConfig, store: Any) -> Teacher[Any]:
    """The teacher ``cfg.teacher`` names (reward model, AI judge, or people through ``store``)."""
    if cfg.teacher == "reward-model":
        from prefrl.lm.reward_functions import RewardModelScorer
        from prefrl.lm.reward_model import RewardModel
        from prefrl.lm.reward_teacher import RewardTeacher

        rm = RewardModel.from_pretrained(cfg.reward_model, trainable=False)
        return RewardTeacher(RewardModelScorer(rm, RewardModel.load_tokenizer(cfg.reward_model)))
    if cfg.teacher == "judge":
        from prefrl.teachers.ai_judge import AIJudgeTeacher, HTTPJudge, LocalLMJudge

        assert cfg.judge is not None
        if cfg.judge.startswith(("http://", "https://")):
            return AIJudgeTeacher(HTTPJudge(cfg.judge, model=cfg.judge_model))
        from prefrl.lm.models import load_causal_lm

        lm, tok = load_causal_lm(cfg.judge, merge_adapter=True)
        return AIJudgeTeacher(LocalLMJudge(lm.eval(), tok, use_chat_template=getattr(tok, "chat_template", None) is not None))
    from prefrl.teachers.human import HumanTeacher

    return HumanTeacher(store)


def run_online_dpo(cfg: OnlineDPORunConfig, store: Any = None) -> dict[str, Any]:
    """``prefrl lm online-dpo``: build policy, reference, teacher and store, run the rounds, save.

    The reference is the *starting* policy (``cfg.policy``), also when resuming; a resumed run
    continues its own pairs in the store (its run id is in the checkpoint). ``store``: the open
    ``PreferenceStore`` of ``cfg.store_url`` to use (``--serve`` serves the app over it); None opens it.
    """
    import contextlib

    from prefrl.data.store import PreferenceStore
    from prefrl.lm.data import load_prompts
    from prefrl.lm.launch import require_single_process
    from prefrl.lm.reward_functions import gold_reward
    from prefrl.lm.rl_run import check_resume, load_policy_and_reference, run_trainer

    require_single_process("prefrl lm online-dpo")
    resume = check_resume(cfg, ("train_top_layers", "lora_r", "policy"))
    policy, ref_policy, tokenizer = load_policy_and_reference(cfg, resume)
    prompts = [p.prompt for p in load_prompts(cfg.prompts, tokenizer)]
    if cfg.max_prompts:
        prompts = prompts[: cfg.max_prompts]
    from pathlib import Path

    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    with PreferenceStore(cfg.store_url) if store is None else contextlib.nullcontext(store) as store:
        teacher = build_teacher(cfg, store)
        trainer = OnlineDPOTrainer(
            policy, ref_policy, teacher, store, tokenizer, cfg,  # the run's fields saved too: resume checks them
            gold_fn=gold_reward(cfg.gold), labeller=cfg.labeller,
        )  # fmt: skip
        logger.info("online-dpo: teacher %s, reference %s, store %s", teacher.name, cfg.reference, cfg.store_url)
        result = run_trainer(trainer, cfg, prompts, resume)
        result.update(
            teacher=teacher.name,
            store=cfg.store_url,
            run_id=trainer.run_id,
            text_pairs=len(store.text_pairs(meta={"online_dpo": trainer.run_id})),
        )
    return result
