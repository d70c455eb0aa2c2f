"""`prefrl label …` commands: add-labeller, push-demo, serve (a real process on a free port)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import httpx
from typer.testing import CliRunner

from prefrl.cli import app
from prefrl.data.store import PreferenceStore

runner = CliRunner()


def test_add_labeller_prints_a_working_login_link(tmp_path):
    db = str(tmp_path / "prefs.db")
    r = runner.invoke(app, ["label", "add-labeller", "ann", "--store", db, "--admin", "--port", "8123"])
    assert r.exit_code == 0, r.output
    link = re.search(r"http://127\.0\.0\.1:8123/login\?token=(\S+)", r.output)
    assert link and f"Token: {link.group(1)}" in r.output
    with PreferenceStore(db) as store:
        who = store.authenticate(link.group(1))
        assert who.name == "ann" and who.role == "admin"
        assert link.group(1) not in (tmp_path / "prefs.db").read_bytes().decode("latin-1")  # hashed at rest
    again = runner.invoke(app, ["label", "add-labeller", "ann", "--store", db])
    assert again.exit_code == 2 and "already exists" in again.output


def test_push_demo_fills_a_store(tmp_path):
    db = str(tmp_path / "prefs.db")
    r = runner.invoke(app, ["label", "push-demo", "--store", db, "--kind", "both", "--pairs", "3",
                            "--env", "CartPole-v1", "--segment-steps", "10"])
    assert r.exit_code == 0, r.output
    with PreferenceStore(db) as store:
        assert store.count_queries("pending") == 6 and store.count_text_pairs() == 3
        segs = store.get_segments([1, 2])
        assert all(s.sim_states is not None and s.env_id == "CartPole-v1" and s.true_rewards is not None for s in segs)
    bad = runner.invoke(app, ["label", "push-demo", "--store", db, "--kind", "videos"])
    assert bad.exit_code == 2 and "kind" in bad.output
    bad_env = runner.invoke(app, ["label", "push-demo", "--store", db, "--kind", "segments", "--env", "NoSuchEnv-v9"])
    assert bad_env.exit_code == 2 and "NoSuchEnv-v9" in bad_env.output


def test_serve_runs_on_loopback_and_serves_the_app(tmp_path):
    db = str(tmp_path / "prefs.db")
    with PreferenceStore(db) as store:
        token = store.add_labeller("ann")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "from prefrl.cli import main; main()", "label", "serve", "--store", db, "--port", str(port),
                             "--clips-dir", str(tmp_path / "clips")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        with httpx.Client(base_url=base, follow_redirects=True) as client:
            assert client.get("/login", params={"token": token}).status_code == 200  # the link's page
            r = client.post("/login", data={"token": token})
            assert r.status_code == 200 and "Labelled this session" in r.text  # followed the redirect
            assert client.get("/static/label.js").status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    log = out.decode(errors="replace")
    assert "GET /login?token=[redacted]" in log and token not in log  # no secrets in the access log


def test_ai_judge_command_labels_text_queries_through_an_http_endpoint(tmp_path):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from prefrl.cli.label import DEMO_TEXT

    GOOD = {good for _, good, _ in DEMO_TEXT}  # noqa: N806

    class Judge(BaseHTTPRequestHandler):
        """A fake OpenAI-compatible server that knows the demo's better answers; logs nothing."""

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            text = body["messages"][0]["content"]
            a = text.split("Response A:\n")[1].split("\n\nResponse B:")[0]
            b = text.split("Response B:\n")[1].split("\n\nWhich")[0]
            letter = "A" if a in GOOD and b not in GOOD else "B"
            out = json.dumps({"choices": [{"message": {"role": "assistant", "content": letter}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    db = str(tmp_path / "prefs.db")
    try:
        assert runner.invoke(app, ["label", "push-demo", "--store", db, "--kind", "text", "--pairs", "4"]).exit_code == 0
        r = runner.invoke(app, ["label", "ai-judge", "--store", db, "--url", f"http://127.0.0.1:{server.server_port}/v1"])
        assert r.exit_code == 0, r.output
        assert "answered 4 text queries" in r.output
    finally:
        server.shutdown()
    with PreferenceStore(db) as store:
        prefs = store.text_preferences()
        # push-demo alternates the side of the better response: a, b, a, b
        assert [mu for _, mu in prefs] == [1.0, 0.0, 1.0, 0.0]
        assert [p.meta["better"] for p, _ in prefs] == ["a", "b", "a", "b"]
    bad = runner.invoke(app, ["label", "ai-judge", "--store", db])
    assert bad.exit_code == 2 and "exactly one" in bad.output


def test_ai_judge_command_with_a_local_model(tmp_path):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = ["[UNK]", "A", "B", "Answer", ":"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(words), n_positions=1024, n_embd=8, n_layer=1, n_head=2,
                                       bos_token_id=0, eos_token_id=0))
    model.save_pretrained(tmp_path / "judge")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path / "judge")
    db = str(tmp_path / "prefs.db")
    assert runner.invoke(app, ["label", "push-demo", "--store", db, "--kind", "text", "--pairs", "2"]).exit_code == 0
    r = runner.invoke(app, ["label", "ai-judge", "--store", db, "--model-path", str(tmp_path / "judge")])
    assert r.exit_code == 0, r.output
    with PreferenceStore(db) as store:
        assert store.count_queries("answered") == 2
        assert all(mu in (0.0, 0.5, 1.0, None) for _, mu in store.text_preferences())
        assert {c.labeller for c in store.comparisons()} == {"ai_judge"}
    missing = runner.invoke(app, ["label", "ai-judge", "--store", db, "--model-path", str(tmp_path / "nope")])
    assert missing.exit_code == 2
