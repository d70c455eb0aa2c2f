"""The silent-teacher experiment (Cohen et al. 2024, arXiv 2410.06213, §6) at SmolLM2-135M scale.

The policy plays a teacher; the frozen base model plays the student and is also the PPO
reference. Reward = sentiment of the student's next reply in [0, 1] (see
``chat.py`` beside this script). Each arm trains a fresh copy of the base model with LMPPOTrainer:

- ``penalty``: per-token KL penalty with a fixed β (InstructGPT);
- ``budget_lo`` / ``budget_hi``: a sequence-level KL budget (dual ascent on β).

Per step it logs the trainer's metrics plus what the trainer does not (yet) compute:
the front-loaded share of the KL, the KL position profile, and the rate of silent /
whitespace-only turns. After each arm it evaluates the policy and the base model on
held-out openers (reward, silence, ``degenerate_report`` against the base model's turns).

    .venv/bin/python examples/silent_teacher/run.py --out examples/silent_teacher/results
    .venv/bin/python examples/silent_teacher/run.py --quick --out /tmp/st   # tiny random model, seconds
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from chat import ChatConfig, ChatReward, is_silent  # beside this script (its directory is on sys.path)

from prefrl.diagnostics.degenerate import degenerate_report
from prefrl.diagnostics.kl_profile import kl_metrics, kl_position_profile
from prefrl.diagnostics.report import markdown_table, plot_kl_profiles, plot_metric_curves
from prefrl.lm.encoding import position_ids_from_mask
from prefrl.lm.logprobs import response_logprobs
from prefrl.lm.models import load_causal_lm
from prefrl.lm.ppo import LMPPOConfig, LMPPOTrainer, freeze_all_but_top_layers
from prefrl.lm.reward_model import RewardModel
from prefrl.lm.rollout import RolloutBatch, encode_prompts, sample_responses

TRAIN_OPENERS = [
    "I failed my maths test again.",
    "I don't understand fractions at all.",
    "Can we go over the homework from yesterday?",
    "I think I finally get photosynthesis.",
    "Why do we even have to learn history?",
    "I forgot my essay at home, sorry.",
    "This chemistry lab is so confusing.",
    "I got a B on the quiz!",
    "My group partner didn't do any work.",
    "I'm nervous about the exam next week.",
    "What is the difference between weather and climate?",
    "I stayed up all night and I'm tired.",
    "Could you explain how to find the area of a circle?",
    "I don't like reading the book we were assigned.",
    "I practised the piano piece every day this week.",
    "Everyone else seems to understand this except me.",
    "Is it okay if I hand in the project on Monday?",
    "I wrote a poem for the class magazine.",
    "Why is the sky blue?",
    "I keep making mistakes with long division.",
    "My parents are upset about my report card.",
    "Can you help me choose a topic for my science fair?",
    "I think the test was unfair.",
    "I finished all the extra exercises.",
]
EVAL_OPENERS = [
    "I lost my calculator and the test is today.",
    "I don't get why negative times negative is positive.",
    "We won the debate yesterday!",
    "I'm bored in this class.",
    "How do plants drink water?",
    "I'm worried I'll fail this year.",
    "Can I read my story to the class?",
    "I didn't understand anything in today's lesson.",
]

_WS_RUN = re.compile(r"\s{2,}")


def whitespace_trick(text: str) -> bool:
    """Runs of whitespace, or leading/trailing whitespace, in a non-silent turn."""
    return not is_silent(text) and (text != text.strip() or bool(_WS_RUN.search(text)))


class InstrumentedTrainer(LMPPOTrainer):
    """LMPPOTrainer that keeps the latest rollout and its scores (log-probs under π and π_ref)."""

    last_batch: RolloutBatch | None = None
    last_scored: dict[str, torch.Tensor] | None = None

    def _score_rollouts(self, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        scored = super()._score_rollouts(batch)
        self.last_batch, self.last_scored = batch, scored
        return scored


def extra_metrics(trainer: InstrumentedTrainer, chat: ChatReward) -> tuple[dict[str, float], np.ndarray]:
    """What LMPPOTrainer's metrics lack: front-loaded KL, silence and whitespace rates."""
    batch, scored, step = trainer.last_batch, trainer.last_scored, chat.last
    assert batch is not None and scored is not None and step is not None
    mask = batch.response_mask
    out = kl_metrics(scored["logprobs"], scored["ref_logprobs"], mask, trainer.cfg.kl_estimator, prefix="kl")
    kl_t = (scored["logprobs"] - scored["ref_logprobs"]) * mask  # (B, R) k1
    profile = kl_position_profile(kl_t, mask).numpy()
    turns = step.policy_turns
    out.update(degenerate_report(turns, rewards=step.rewards, prefix="turn"))
    n = len(turns)
    rewards = np.asarray(step.rewards)
    silent = np.asarray([is_silent(t) for t in turns])
    out["turn/silent_rate"] = float(silent.mean())
    out["turn/whitespace_trick_rate"] = sum(whitespace_trick(t) for t in turns) / n
    out["turn/first_token_eos_rate"] = float((batch.last_index == 0).float().mean())
    out["reward/silent_mean"] = float(rewards[silent].mean()) if silent.any() else float("nan")
    out["reward/spoken_mean"] = float(rewards[~silent].mean()) if (~silent).any() else float("nan")
    return out, profile


_WS_IDS: dict[int, torch.Tensor] = {}


def whitespace_token_ids(tokenizer: Any) -> torch.Tensor:
    """Ids of the (non-special) tokens that decode to whitespace only."""
    key = id(tokenizer)
    if key not in _WS_IDS:
        special = set(tokenizer.all_special_ids)
        ids = [i for i in range(len(tokenizer)) if i not in special and is_silent(tokenizer.decode([i])) and tokenizer.decode([i]) != ""]
        _WS_IDS[key] = torch.tensor(ids, dtype=torch.long)
    return _WS_IDS[key]


@torch.no_grad()
def first_token_silence(model: torch.nn.Module, batch: RolloutBatch, tokenizer: Any, temperature: float) -> tuple[float, float]:
    """Mean probability (at the sampling temperature) that the turn starts with EOS (= silence) or a whitespace token."""
    ids, mask = batch.query_ids, batch.query_mask
    logits = torch.cat([
        model(input_ids=ids[s : s + 8], attention_mask=mask[s : s + 8], position_ids=position_ids_from_mask(mask[s : s + 8]),
              logits_to_keep=1, use_cache=False).logits[:, -1].float()
        for s in range(0, len(ids), 8)
    ])  # (B, V); prompts are left-padded, so the last column is the last prompt token
    probs = torch.softmax(logits / temperature, dim=-1)
    p_eos = probs[:, tokenizer.eos_token_id].mean()
    p_ws = probs[:, whitespace_token_ids(tokenizer)].sum(-1).mean()
    return float(p_eos), float(p_ws)


@torch.no_grad()
def evaluate(
    policy: torch.nn.Module,
    base: torch.nn.Module,
    tokenizer: Any,
    chat: ChatReward,
    prompts: list[str],
    cfg: LMPPOConfig,
    seed: int,
) -> tuple[dict[str, Any], np.ndarray, list[dict[str, str]]]:
    """Sample the policy and the base model on held-out prompts; reward, silence, degenerate outputs, KL."""
    g = torch.Generator().manual_seed(seed)
    kw = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, max_prompt_length=cfg.max_prompt_length)
    pol = sample_responses(policy, tokenizer, prompts, generator=g, **kw)
    ref = sample_responses(base, tokenizer, prompts, generator=g, **kw)
    step = chat.play(prompts, pol.responses)
    ids, attn, p = pol.input_ids, pol.attention_mask, pol.n_query
    lp = torch.cat([response_logprobs(policy, ids[s : s + 8], attn[s : s + 8], p, cfg.temperature)[0] for s in range(0, len(ids), 8)])
    rlp = torch.cat([response_logprobs(base, ids[s : s + 8], attn[s : s + 8], p, cfg.temperature)[0] for s in range(0, len(ids), 8)])
    mask = pol.response_mask
    out: dict[str, Any] = {
        "reward": float(np.mean(step.rewards)),
        "silent_rate": float(np.mean([is_silent(t) for t in pol.responses])),
        "replaced_rate": float(np.mean(step.replaced)),
        "whitespace_trick_rate": float(np.mean([whitespace_trick(t) for t in pol.responses])),
        "ref_whitespace_trick_rate": float(np.mean([whitespace_trick(t) for t in ref.responses])),
        "response_tokens": float(mask.sum(1).float().mean()),
        **kl_metrics(lp, rlp, mask, cfg.kl_estimator, prefix="kl"),
        **degenerate_report(pol.responses, references=ref.responses, rewards=step.rewards),
    }
    out["p_first_eos"], out["p_first_ws"] = first_token_silence(policy, pol, tokenizer, cfg.temperature)
    out["ref_p_first_eos"], out["ref_p_first_ws"] = first_token_silence(base, pol, tokenizer, cfg.temperature)
    profile = kl_position_profile((lp - rlp) * mask, mask).numpy()
    samples = [
        {"opener": chat.history(pr)[-1][1], "agent": t, "spoken": a, "partner": r, "reward": f"{w:.3f}"}
        for pr, t, a, r, w in zip(prompts, pol.responses, step.agent_turns, step.partner_replies, step.rewards, strict=True)
    ]
    return out, profile, samples


def arm_specs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The runs of the experiment by name: KL control and the empty-turn rule."""
    return {
        "penalty": {"kl_control": "fixed", "kl_coef": args.beta},
        "budget_lo": {"kl_control": "budget", "kl_coef": args.beta, "kl_target": args.budget_lo},
        "budget_hi": {"kl_control": "budget", "kl_coef": args.beta, "kl_target": args.budget_hi},
        "budget_hi_silence": {
            "kl_control": "budget", "kl_coef": args.beta, "kl_target": args.budget_hi, "empty_turn": "silence",
        },
    }


def make_critic(base: torch.nn.Module, n_layers: int) -> RewardModel:
    """A value network on a copy of the base model's first ``n_layers`` decoder layers (0 = all): a CPU saving."""
    lm = copy.deepcopy(base).requires_grad_(True)
    if n_layers:
        stack = lm.model
        if n_layers > len(stack.layers):
            raise ValueError(f"critic_layers={n_layers} but the model has {len(stack.layers)} layers")
        stack.layers = stack.layers[:n_layers]
        lm.config.num_hidden_layers = n_layers
    critic = RewardModel.from_causal_lm(lm)
    with torch.no_grad():  # start from V ≡ 0.5, the neutral reward, rather than a random offset
        critic.head.weight.mul_(0.01)
        critic.head.bias.fill_(0.5)
    return critic


def run_arm(name: str, spec: dict[str, Any], args: argparse.Namespace, base: torch.nn.Module, tokenizer: Any,
            out: Path, train_openers: list[str], eval_openers: list[str]) -> dict[str, Any]:
    """Train one arm; writes metrics_<name>.jsonl, results_<name>.json, samples_<name>.json, kl profiles."""
    t0 = time.perf_counter()
    spec = dict(spec)
    empty_turn = spec.pop("empty_turn", "base")
    cfg = LMPPOConfig(
        batch_size=args.batch_size, minibatch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
        learning_rate=args.lr, update_epochs=args.ppo_epochs, seed=args.seed, **spec,
    )
    chat = ChatReward(base, tokenizer, ChatConfig(empty_turn=empty_turn, partner_max_new_tokens=args.max_new_tokens),
                      torch.Generator().manual_seed(args.seed + 17))
    prompts = chat.prompts_for(train_openers)
    eval_prompts = chat.prompts_for(eval_openers)
    policy = copy.deepcopy(base).requires_grad_(True)
    critic = make_critic(base, args.critic_layers)
    if args.train_top_layers:
        freeze_all_but_top_layers(policy, args.train_top_layers)
        freeze_all_but_top_layers(critic, min(args.train_top_layers, len(critic.backbone.layers)))
    trainer = InstrumentedTrainer(policy, base, critic, chat, tokenizer, cfg)
    hist: list[dict[str, float]] = []
    step_profiles: list[np.ndarray] = []
    with (out / f"metrics_{name}.jsonl").open("w") as log:

        def on_step(metrics: dict[str, float]) -> None:
            extra, prof = extra_metrics(trainer, chat)
            row = {**metrics, **extra}
            hist.append(row)
            step_profiles.append(prof)
            log.write(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}) + "\n")
            log.flush()
            print(
                f"[{name}] step {int(row['step'])} score {row['objective/scores']:.3f} kl_seq {row['objective/kl']:.2f} "
                f"kl_tok {row['objective/kl_token']:.3f} front {row['kl/kl_front_loaded']:.2f} beta {row['objective/kl_coef']:.3f} "
                f"silent {row['turn/silent_rate']:.2f} len {row['response/length']:.1f} ({row['time/step_s']:.0f}s)",
                flush=True,
            )

        def past_stop_at(metrics: dict[str, float]) -> bool:
            return args.stop_at is not None and time.time() > args.stop_at

        trainer.train(prompts, args.steps, callback=on_step, stop=past_stop_at, progress=False)
        if trainer.global_step < args.steps:
            print(f"[{name}] stopped at step {trainer.global_step} by --stop-at", flush=True)
    ev, prof, samples = evaluate(policy, base, tokenizer, chat, eval_prompts, cfg, args.seed + 1)
    last = hist[-min(5, len(hist)) :]
    keys = ("objective/scores", "objective/kl", "objective/kl_token", "kl/kl_front_loaded", "objective/kl_coef",
            "turn/silent_rate", "turn/whitespace_trick_rate", "response/length")
    result = {
        "config": {**spec, "empty_turn": empty_turn, "steps": trainer.global_step, "lr": args.lr, "ppo_epochs": args.ppo_epochs},
        "eval": ev,
        "train_last5": {k: float(np.nanmean([r[k] for r in last])) for k in keys},
        "max_silent_rate_during_training": max(r["turn/silent_rate"] for r in hist),
        "silent_samples_during_training": int(round(sum(r["turn/silent_rate"] for r in hist) * args.batch_size)),
        "minutes": (time.perf_counter() - t0) / 60,
    }
    (out / f"results_{name}.json").write_text(json.dumps(result, indent=1))
    (out / f"samples_{name}.json").write_text(json.dumps(samples, indent=1))
    np.save(out / f"kl_profile_eval_{name}.npy", prof)
    np.save(out / f"kl_profile_steps_{name}.npy", _stack(step_profiles))
    print(f"[{name}] eval {json.dumps({k: round(v, 4) for k, v in ev.items()})}", flush=True)
    return result


def summarize(out: Path) -> dict[str, Any]:
    """Merge results_*.json into results.json, table.md, kl_profile.png and training.png."""
    results: dict[str, Any] = {"arms": {}}
    if (out / "results_base.json").exists():
        results["base"] = json.loads((out / "results_base.json").read_text())
    histories, profiles = {}, {}
    for path in sorted(out.glob("results_*.json")):
        name = path.stem.removeprefix("results_")
        if name == "base":
            continue
        results["arms"][name] = json.loads(path.read_text())
        histories[name] = [json.loads(x) for x in (out / f"metrics_{name}.jsonl").read_text().splitlines()]
        profiles[name] = np.load(out / f"kl_profile_eval_{name}.npy")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    if profiles:
        plot_kl_profiles(profiles, out / "kl_profile.png", title="Per-token KL by position (held-out eval, after training)")
        train_profiles = {}
        for name in profiles:
            steps = np.load(out / f"kl_profile_steps_{name}.npy")  # (steps, T) NaN-padded
            with np.errstate(all="ignore"):
                train_profiles[name] = np.nanmean(steps[-5:], axis=0) if steps.size else np.zeros(0)
        plot_kl_profiles(train_profiles, out / "kl_profile_train.png",
                         title="Per-token KL by position (last 5 training batches)")
        plot_metric_curves(
            histories,
            ["objective/scores", "objective/kl", "objective/kl_token", "kl/kl_front_loaded", "objective/kl_coef",
             "turn/silent_rate"],
            out / "training.png",
            title="Silent teacher: PPO on the student's sentiment",
        )
    rows = ([{"run": "base model", **results["base"]}] if "base" in results else []) + [
        {"run": n, **a["eval"]} for n, a in results["arms"].items()
    ]
    cols = ["run", "reward", "silent_rate", "p_first_eos", "degenerate/whitespace_only_rate", "whitespace_trick_rate",
            "degenerate/whitespace_change_rate", "kl/kl", "kl/kl_token", "kl/kl_front_loaded", "response_tokens"]
    heads = ["run", "reward", "silent", "p(EOS first)", "ws-only", "ws trick", "ws change vs ref", "KL seq",
             "KL token", "front-loaded", "tokens"]
    table = markdown_table(rows, cols, heads)
    (out / "table.md").write_text(table)
    print(table, flush=True)
    return results


def _stack(profiles: list[np.ndarray]) -> np.ndarray:
    """Per-step profiles of different lengths as one (steps, T_max) array padded with NaN."""
    width = max((p.size for p in profiles), default=0)
    arr = np.full((len(profiles), width), np.nan)
    for i, p in enumerate(profiles):
        arr[i, : p.size] = p
    return arr


@torch.no_grad()
def probe_silence(base: torch.nn.Module, tokenizer: Any, openers: list[str], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """What silence would pay if the agent found it: reward and KL cost of an always-silent agent."""
    res: dict[str, Any] = {}
    for rule in ("base", "silence"):
        chat = ChatReward(base, tokenizer, ChatConfig(empty_turn=rule, partner_max_new_tokens=args.max_new_tokens),
                          torch.Generator().manual_seed(args.seed + 29))
        prompts = chat.prompts_for(openers)
        step = chat.play(prompts, [""] * len(prompts))
        res[f"silent_reward_{rule}_rule"] = float(np.mean(step.rewards))
        res[f"samples_{rule}_rule"] = [
            {"opener": o, "spoken": a, "partner": r, "reward": w}
            for o, a, r, w in zip(openers, step.agent_turns, step.partner_replies, step.rewards, strict=True)
        ]
    query_ids, query_mask = encode_prompts(tokenizer, prompts, 256)
    batch = RolloutBatch(query_ids, query_mask, query_ids[:, -1:], query_mask[:, -1:], torch.ones(len(prompts), dtype=torch.bool),
                         torch.zeros(len(prompts), dtype=torch.long), prompts, [""] * len(prompts))
    temperature = LMPPOConfig().temperature
    p_eos, _ = first_token_silence(base, batch, tokenizer, temperature)
    res["ref_p_first_eos"] = p_eos
    res["kl_cost_of_silence_nats"] = float(-math.log(max(p_eos, 1e-300)))
    (out / "probe_silence.json").write_text(json.dumps(res, indent=1))
    print(f"[probe] { {k: v for k, v in res.items() if not k.startswith('samples')} }", flush=True)
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="examples/silent_teacher/results")
    ap.add_argument("--quick", action="store_true", help="tiny random model, 2 steps per arm (smoke test)")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--arms", nargs="*", default=["penalty", "budget_lo", "budget_hi"],
                    help="runs to train (penalty, budget_lo, budget_hi, budget_hi_silence); none = only base/summary")
    ap.add_argument("--probe", action="store_true", help="measure what an always-silent agent would get")
    ap.add_argument("--no-base", action="store_true", help="skip evaluating the base model (another process does)")
    ap.add_argument("--no-summary", action="store_true", help="skip merging results (run --arms with none later)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32, help="agent turn and partner reply length")
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--ppo-epochs", type=int, default=2)
    ap.add_argument("--beta", type=float, default=0.05, help="fixed β, and the budget controllers' initial β")
    ap.add_argument("--budget-lo", type=float, default=0.5, help="sequence KL budget (nats)")
    ap.add_argument("--budget-hi", type=float, default=8.0, help="sequence KL budget (nats)")
    ap.add_argument("--train-top-layers", type=int, default=4)
    ap.add_argument("--critic-layers", type=int, default=4, help="decoder layers of the critic's backbone (0 = all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stop-at", type=str, default=None,
                    help="UTC time HH:MM after which each arm stops training (then evaluates)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.quick:
        args.model, args.steps, args.batch_size, args.max_new_tokens = "tiny", 2, 4, 8
        args.train_top_layers, args.critic_layers = 1, 1
    if args.stop_at is not None:
        hh, mm = (int(x) for x in args.stop_at.split(":"))
        now = datetime.datetime.now(datetime.timezone.utc)
        args.stop_at = now.replace(hour=hh, minute=mm, second=0, microsecond=0).timestamp()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    specs = arm_specs(args)
    unknown = set(args.arms) - set(specs)
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)}; choose from {sorted(specs)}")

    eval_openers = (EVAL_OPENERS[:4] if args.quick else EVAL_OPENERS) * 2  # two samples per opener
    train_openers = TRAIN_OPENERS[:8] if args.quick else TRAIN_OPENERS
    if args.arms or not args.no_base or args.probe:
        base, tokenizer = load_causal_lm(args.model, padding_side="left")
        base.eval().requires_grad_(False)
    if not args.no_base:
        # the base model evaluated as if it were the policy (KL 0 by construction)
        chat0 = ChatReward(base, tokenizer, ChatConfig(partner_max_new_tokens=args.max_new_tokens),
                           torch.Generator().manual_seed(args.seed + 17))
        cfg0 = LMPPOConfig(batch_size=args.batch_size, minibatch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
        ev, _, samples = evaluate(base, base, tokenizer, chat0, chat0.prompts_for(eval_openers), cfg0, args.seed + 1)
        (out / "results_base.json").write_text(json.dumps(ev, indent=1))
        (out / "samples_base.json").write_text(json.dumps(samples, indent=1))
        print(f"[base] {json.dumps({k: round(v, 4) for k, v in ev.items()})}", flush=True)
    if args.probe:
        probe_silence(base, tokenizer, eval_openers, args, out)
    for name in args.arms:
        run_arm(name, specs[name], args, base, tokenizer, out, train_openers, eval_openers)
    return {} if args.no_summary else summarize(out)


if __name__ == "__main__":
    main()
