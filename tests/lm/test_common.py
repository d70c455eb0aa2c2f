from __future__ import annotations

import math

import pytest
import torch

from prefrl.lm.encoding import (
    collate_prompt_completion,
    last_token_index,
    pad_sequences,
    position_ids_from_mask,
)
from prefrl.lm.logprobs import completion_logprobs, token_logprobs
from prefrl.lm.models import tiny_causal_lm
from prefrl.lm.training import batch_indices, load_training_state, save_training_state
from prefrl.utils.rng import PrivateTorchRNG


def test_pad_and_masks() -> None:
    ids, mask = pad_sequences([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert last_token_index(mask).tolist() == [2, 2]
    assert position_ids_from_mask(mask).tolist() == [[0, 1, 2], [0, 0, 0]]
    _, mask_r = pad_sequences([[5, 6, 7], [8]], pad_id=0, side="right")
    assert last_token_index(mask_r).tolist() == [2, 0]
    with pytest.raises(ValueError, match="side"):
        pad_sequences([[1]], 0, side="up")  # type: ignore[arg-type]


def test_completion_mask_and_logprobs_match_manual_sum() -> None:
    model, tok = tiny_causal_lm()
    model.eval()
    batch = collate_prompt_completion(tok, ["Q: hi", "Q: a longer prompt"], [" yes", " no"])
    ids, mask, cmask = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    # completion = " yes" + EOS → 5 tokens under the byte tokenizer
    assert cmask[0].sum().item() == 5 and ids[0, cmask[0].bool()][-1].item() == tok.eos_token_id
    with torch.no_grad():
        lp = completion_logprobs(model, ids, mask, cmask)
        logits = model(ids[:1, : int(mask[0].sum())]).logits[0]
    logp = torch.log_softmax(logits, -1)
    start = int((cmask[0] == 1).nonzero()[0])
    manual = sum(logp[t - 1, ids[0, t]] for t in range(start, int(mask[0].sum())))
    assert math.isclose(lp[0].item(), manual.item(), rel_tol=1e-5)
    # left padding gives the same log-probs
    left = collate_prompt_completion(tok, ["Q: hi", "Q: a longer prompt"], [" yes", " no"], side="left")
    with torch.no_grad():
        lp_left = completion_logprobs(
            model, left["input_ids"], left["attention_mask"], left["completion_mask"]
        )
        assert token_logprobs(model, ids, mask).shape == (2, ids.shape[1] - 1)
    torch.testing.assert_close(lp, lp_left, atol=1e-4, rtol=1e-5)


def test_truncation_keeps_prompt_end() -> None:
    _, tok = tiny_causal_lm()
    batch = collate_prompt_completion(tok, ["abcdefgh"], ["xy"], max_length=6)
    assert batch["input_ids"].shape == (1, 6)
    assert tok.decode(batch["input_ids"][0]) == "fghxy" + tok.eos_token


def test_batch_indices_resume_and_shard() -> None:
    full = batch_indices(10, 4, seed=3)
    first = [next(full) for _ in range(7)]
    resumed = batch_indices(10, 4, seed=3, start_step=4)
    assert [next(resumed) for _ in range(3)] == first[4:]
    assert sorted(first[0] + first[1] + first[2]) == list(range(10))  # one epoch covers all
    shard0 = next(batch_indices(10, 4, seed=3, process_index=0, num_processes=2))
    shard1 = next(batch_indices(10, 4, seed=3, process_index=1, num_processes=2))
    assert sorted(shard0 + shard1) == sorted(first[0])


def test_training_state_roundtrip(tmp_path) -> None:
    # The run's own RNG stream round-trips; the global torch RNG is neither saved nor restored (#11).
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    p.grad = torch.ones(3)
    opt.step()
    sched.step()
    rng = PrivateTorchRNG(123)
    save_training_state(tmp_path, step=7, optimizer=opt, scheduler=sched, extra={"epoch": 1}, rng=rng)
    with rng.active():
        expected = torch.rand(2)
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0 / (s + 1))
    rng2 = PrivateTorchRNG(0)
    global_before = torch.get_rng_state()
    state = load_training_state(tmp_path, opt2, sched2, rng=rng2)
    assert torch.equal(torch.get_rng_state(), global_before)
    assert state["step"] == 7 and state["extra"] == {"epoch": 1}
    with rng2.active():
        assert torch.equal(torch.rand(2), expected)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert sched2.last_epoch == 1
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        load_training_state(tmp_path / "nope")
