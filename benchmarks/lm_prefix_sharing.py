"""Tokens/s of the k-completions sampler with and without prefix sharing (issue #15 item 4).

Without: the B prompts repeated k times, each copy read by the model. With:
``sample_responses(..., num_generations=k)``: each prompt read once, its KV cache expanded k-fold.
Same seed, same tokens (tested in tests/lm/test_critic_free.py). One thread unless --threads.

    PYTHONPATH=src .venv/bin/python benchmarks/lm_prefix_sharing.py --model smollm2 --k 4
"""

from __future__ import annotations

import argparse
import time

import torch

from prefrl.lm.models import load_causal_lm
from prefrl.lm.rollout import sample_responses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--prompts", type=int, default=4, help="distinct prompts B")
    ap.add_argument("--k", type=int, default=4, help="completions per prompt")
    ap.add_argument("--prompt-words", type=int, default=48)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_causal_lm(args.model, padding_side="left")
    model.eval()
    words = "the film was long and the actors were loud but the music".split()
    prompts = [" ".join(words[(i + j) % len(words)] for j in range(args.prompt_words)) + f" {i}:" for i in range(args.prompts)]
    kw = dict(max_new_tokens=args.max_new_tokens, temperature=1.0, max_prompt_length=512)
    rows = {}
    for name in ("repeated", "shared", "repeated", "shared") * args.repeats:
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        with torch.no_grad():
            if name == "shared":
                batch = sample_responses(model, tok, prompts, num_generations=args.k, generator=g, **kw)
            else:
                batch = sample_responses(model, tok, [p for p in prompts for _ in range(args.k)], generator=g, **kw)
        dt = time.perf_counter() - t0
        rows.setdefault(name, []).append((float(batch.response_mask.sum()), dt, batch.query_ids.shape[1]))
    for name, runs in rows.items():
        best = min(runs, key=lambda r: r[1])
        print(f"{name:9s} prompt {best[2]} tokens, {args.prompts}×{args.k} responses: "
              f"{best[0] / best[1]:8.1f} generated tokens/s (best of {len(runs)}, {best[1]:.3f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
