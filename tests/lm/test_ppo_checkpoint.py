"""PPO checkpoints are atomic: one directory per save, one symlink switch, the last N kept (#12 item 6)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch

from prefrl.lm.models import load_causal_lm

BUILD = textwrap.dedent(
    """
    import copy, torch
    from prefrl.lm.models import tiny_causal_lm
    from prefrl.lm.ppo import LMPPOConfig, LMPPOTrainer
    from prefrl.lm.reward_functions import TokenFrequencyReward
    from prefrl.lm.reward_model import RewardModel

    PROMPTS = ["hello", "the cat sat", "x", "a good film because"]

    def build():
        torch.set_num_threads(1)
        policy, tok = tiny_causal_lm(seed=0)
        critic = RewardModel.from_causal_lm(tiny_causal_lm(seed=1)[0])
        cfg = LMPPOConfig(batch_size=4, minibatch_size=2, update_epochs=1, max_new_tokens=6, learning_rate=1e-2)
        reward = TokenFrequencyReward(tok.convert_tokens_to_ids("a"), "token")
        return LMPPOTrainer(policy, copy.deepcopy(policy), critic, reward, tok, cfg)
    """
)
ns: dict = {}
exec(BUILD, ns)  # noqa: S102 - the same builder runs in the killed child process
build, PROMPTS = ns["build"], ns["PROMPTS"]


def test_one_directory_per_save_and_the_last_n_kept(tmp_path):
    trainer = build()
    trainer.train(PROMPTS, total_steps=3, checkpoint_dir=tmp_path, save_every=1, keep_checkpoints=2, progress=False)
    steps = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert steps == ["step-00000002", "step-00000003"]
    assert os.readlink(tmp_path / "current") == os.path.join("checkpoints", "step-00000003")
    state = torch.load(tmp_path / "trainer_state.pt", weights_only=False)
    assert state["global_step"] == 3
    model, _ = load_causal_lm(tmp_path / "policy")  # still a loadable HF directory
    for p, q in zip(model.parameters(), trainer.policy.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_kill_during_a_save_resumes_from_the_previous_checkpoint(tmp_path):
    run = tmp_path / "run"
    child = BUILD + textwrap.dedent(
        f"""
        import os, signal
        trainer = build()
        trainer.train(PROMPTS, total_steps=1, checkpoint_dir={str(run)!r}, progress=False)
        def killed(*args, **kwargs):  # the policy of step 2 is on disk, its critic and state are not
            os.kill(os.getpid(), signal.SIGKILL)
        trainer.critic.save_pretrained = killed
        trainer.train(PROMPTS, total_steps=2, checkpoint_dir={str(run)!r}, progress=False)
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [p.name for p in (run / "checkpoints").glob(".tmp-*")]  # the half-written save is there
    assert os.readlink(run / "current") == os.path.join("checkpoints", "step-00000001")

    resumed = build()
    resumed.load_checkpoint(run)
    assert resumed.global_step == 1
    assert resumed.policy_optimizer.state_dict()["state"][0]["step"] == 2  # steps × epochs × minibatches
    resumed.train(PROMPTS, total_steps=2, checkpoint_dir=run, progress=False)
    assert not list((run / "checkpoints").glob(".tmp-*"))

    straight = build()
    straight.train(PROMPTS, total_steps=2, progress=False)
    for p_s, p_r in zip(straight.policy.parameters(), resumed.policy.parameters(), strict=True):
        torch.testing.assert_close(p_s, p_r)
    for p_s, p_r in zip(straight.critic.parameters(), resumed.critic.parameters(), strict=True):
        torch.testing.assert_close(p_s, p_r)
