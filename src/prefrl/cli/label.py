"""`prefrl label …` commands: the labelling web app for people.

    prefrl label add-labeller ann --store prefs.db          # prints a one-time login link
    prefrl label disable-labeller ann --store prefs.db      # ends ann's sessions (enable-labeller, remove-labeller)
    prefrl label exclude bob --store prefs.db               # keep bob's answers, train rewards without them
    prefrl label push-demo --store prefs.db                 # a few pairs to try the app on
    prefrl label serve --store prefs.db                     # http://127.0.0.1:8000
    prefrl label ai-judge --store prefs.db --url http://127.0.0.1:8080/v1   # RLAIF labels
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)

STORE_HELP = "Preference store: a SQLAlchemy URL (sqlite:///prefs.db, postgresql+psycopg2://…) or a file path."

#: Canned prompts and response pairs for `push-demo --kind text`: (prompt, better, worse).
DEMO_TEXT = [
    ("Explain what a reward model is in one sentence.",
     "A reward model is a network trained on human comparisons to score how much people would like an output.",
     "It is a model. It gives rewards. Rewards are good."),
    ("Write a friendly greeting for a new colleague.",
     "Welcome aboard! We're glad you're here — shout if you need anything while you settle in.",
     "Hello. You have been added to the team."),
    ("What is 17 × 3?", "17 × 3 = 51.", "17 × 3 is 41."),
    ("Suggest a name for a grey cat.", "How about Pebble, Smoke or Earl Grey?", "Cat."),
    ("Summarise: 'The meeting moved from Monday to Wednesday at 10.'",
     "The meeting is now on Wednesday at 10.",
     "There is a meeting on Monday."),
]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _open_store(store: str):  # noqa: ANN202 - heavy import kept inside the command
    from prefrl.data.store import PreferenceStore

    try:
        return PreferenceStore(store)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--store") from None


@app.command()
def serve(
    store: str = typer.Option(..., "--store", help=STORE_HELP),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default; 0.0.0.0 exposes it)."),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
    clips_dir: Path = typer.Option(Path("prefrl-clips"), help="Cache of rendered MP4 clips, one per segment id."),
    lease_seconds: float = typer.Option(300.0, help="How long a shown pair stays reserved for its labeller."),
    prerender: int = typer.Option(8, min=0, help="Pending queries whose clips the render worker renders ahead "
                                  "(besides those being labelled)."),
    undo_seconds: float = typer.Option(30.0, help="How long after answering a labeller may undo."),
    render_processes: int = typer.Option(2, min=1, max=64, help="Child processes rendering clips side by side "
                                         "(one per core you can spare; ~3 HalfCheetah clips/s each)."),
    secure_cookie: bool = typer.Option(False, help="Mark the session cookie Secure (serve behind HTTPS)."),
    allowed_host: list[str] = typer.Option(
        [], "--allowed-host", help="A host name people reach the app by (repeat for several; '*' = any). "
        "Default: --host and the loopback names. Requests with another Host header are refused."),
) -> None:
    """Serve the labelling app: one comparison at a time, answered by button or keyboard.

    Sessions are signed with $PREFRL_APP_SECRET when set (so restarts keep people logged in),
    else with a random key per start.
    """
    import uvicorn

    from prefrl.app.config import AppConfig
    from prefrl.app.middleware import RedactTokenFilter
    from prefrl.app.server import create_app

    secret_env = os.environ.get("PREFRL_APP_SECRET")
    if not allowed_host and host in ("0.0.0.0", "::"):
        raise typer.BadParameter(f"--host {host} serves every interface: name the host people will type with "
                                 "--allowed-host NAME (or --allowed-host '*')", param_hint="--allowed-host")
    hosts = tuple(allowed_host) or (host, "127.0.0.1", "localhost", "::1")
    try:
        cfg = AppConfig(clips_dir=clips_dir, lease_seconds=lease_seconds, undo_window_seconds=undo_seconds,
                        prerender_queries=prerender, render_processes=render_processes,
                        secure_cookie=secure_cookie, secret=secret_env.encode() if secret_env else None,
                        allowed_hosts=hosts)
        from prefrl.app.auth import SessionSigner

        SessionSigner(cfg.secret)  # fail now on a short secret, not at the first login
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if not _is_loopback(host):
        typer.secho(f"warning: binding {host}: the app is reachable from other machines; use HTTPS in front "
                    "of it and --secure-cookie.", fg=typer.colors.YELLOW, err=True)
    pref_store = _open_store(store)
    typer.echo(f"prefrl labelling on http://{host}:{port}  (store {pref_store.url}, clips in {cfg.clips_dir})")
    typer.echo("Add people with: prefrl label add-labeller NAME --store ...")
    config = uvicorn.Config(create_app(pref_store, cfg), host=host, port=port, log_level="info")
    # uvicorn configured its loggers in Config(); the login link's token must not reach the access log.
    logging.getLogger("uvicorn.access").addFilter(RedactTokenFilter())
    uvicorn.Server(config).run()


@app.command("add-labeller")
def add_labeller(
    name: str = typer.Argument(..., help="The labeller's name (unique)."),
    store: str = typer.Option(..., "--store", help=STORE_HELP),
    admin: bool = typer.Option(False, "--admin", help="Give the admin role (sees the progress and agreement page)."),
    host: str = typer.Option("127.0.0.1", help="Host of the login link printed."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port of the login link printed."),
) -> None:
    """Register a labeller and print their login link and token (shown once; only a hash is kept)."""
    pref_store = _open_store(store)
    try:
        token = pref_store.add_labeller(name, role="admin" if admin else "labeller")
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="NAME") from None
    _print_link(name, token, host, port, admin)


def _print_link(name: str, token: str, host: str, port: int, admin: bool = False) -> None:
    typer.echo(f"Login link for {name}{' (admin)' if admin else ''}: http://{host}:{port}/login?token={token}")
    typer.echo(f"Token: {token}")
    typer.echo("Send it privately; it works once and is not shown again (a new one: prefrl label login-link NAME).")


@app.command("login-link")
def login_link(
    name: str = typer.Argument(..., help="An existing labeller's name."),
    store: str = typer.Option(..., "--store", help=STORE_HELP),
    host: str = typer.Option("127.0.0.1", help="Host of the login link printed."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port of the login link printed."),
) -> None:
    """Issue a new one-time login link for an existing labeller (the previous link and every
    session of theirs stop working)."""
    pref_store = _open_store(store)
    try:
        token = pref_store.reissue_token(name)
    except KeyError as e:
        raise typer.BadParameter(str(e.args[0]), param_hint="NAME") from None
    _print_link(name, token, host, port)


def _change_labeller(store: str, name: str, change: str) -> None:
    pref_store = _open_store(store)
    try:
        if change == "remove":
            pref_store.remove_labeller(name)
        else:
            pref_store.set_labeller_disabled(name, disabled=change == "disable")
    except KeyError as e:
        raise typer.BadParameter(str(e.args[0]), param_hint="NAME") from None
    typer.echo(f"{name}: {change}d; their answers are kept" + (", their sessions ended." if change != "enable" else
                                                                 "; send a new link: prefrl label login-link NAME."))


@app.command("disable-labeller")
def disable_labeller(
    name: str = typer.Argument(..., help="An existing labeller's name."),
    store: str = typer.Option(..., "--store", help=STORE_HELP),
) -> None:
    """Stop a labeller: every session of theirs ends now and their login link stops working."""
    _change_labeller(store, name, "disable")


@app.command("enable-labeller")
def enable_labeller(
    name: str = typer.Argument(..., help="A disabled labeller's name."),
    store: str = typer.Option(..., "--store", help=STORE_HELP),
) -> None:
    """Let a disabled labeller log in again (with a new link from login-link)."""
    _change_labeller(store, name, "enable")


@app.command("remove-labeller")
def remove_labeller(
    name: str = typer.Argument(..., help="An existing labeller's name."),
    store: str = typer.Option(..., "--store", help=STORE_HELP),
) -> None:
    """Remove a labeller: their sessions end now; the answers they gave stay in the store."""
    _change_labeller(store, name, "remove")


@app.command("exclude")
def exclude(
    name: str = typer.Argument(..., help="A labeller's name (registered or not: e.g. ai_judge)."),
    store: str = typer.Option(..., "--store", help=STORE_HELP),
) -> None:
    """Leave a labeller's answers out of reward training; they stay in the store (undo: label include)."""
    pref_store = _open_store(store)
    try:
        pref_store.exclude_labeller(name)
    except (KeyError, ValueError) as e:
        raise typer.BadParameter(str(e.args[0]), param_hint="NAME") from None
    n = len(pref_store.comparisons(labeller=name))
    typer.echo(f"{name}: {n} answers kept in the store, no longer used to train rewards.")


@app.command("include")
def include(
    name: str = typer.Argument(..., help="An excluded labeller's name."),
    store: str = typer.Option(..., "--store", help=STORE_HELP),
) -> None:
    """Use an excluded labeller's answers for reward training again."""
    pref_store = _open_store(store)
    if name not in pref_store.excluded_labellers():
        raise typer.BadParameter(f"{name!r} is not excluded", param_hint="NAME")
    pref_store.include_labeller(name)
    typer.echo(f"{name}: answers used to train rewards again.")


@app.command("push-demo")
def push_demo(
    store: str = typer.Option(..., "--store", help=STORE_HELP),
    kind: str = typer.Option("both", help="What to add: text, segments or both."),
    pairs: int = typer.Option(5, min=1, max=100, help="Number of pairs of each kind."),
    env_id: str = typer.Option("HalfCheetah-v5", "--env", help="Gymnasium env for the segment pairs."),
    segment_steps: int = typer.Option(50, min=2, max=1000, help="Steps per segment."),
    seed: int = typer.Option(0, help="Random seed of the demo rollouts."),
) -> None:
    """Fill a store with a few pairs (text and/or random-policy segments) to try the app right away."""
    if kind not in ("text", "segments", "both"):
        raise typer.BadParameter(f"kind must be text, segments or both, got {kind!r}", param_hint="--kind")
    pref_store = _open_store(store)
    added = []
    if kind in ("text", "both"):
        added.append(f"{push_demo_text(pref_store, pairs)} text queries")
    if kind in ("segments", "both"):
        try:
            n = push_demo_segments(pref_store, pairs, env_id, segment_steps, seed)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--env") from None
        added.append(f"{n} segment queries ({env_id})")
    typer.echo(f"Added {' and '.join(added)} to {pref_store.url}.")


@app.command("ai-judge")
def ai_judge(
    store: str = typer.Option(..., "--store", help=STORE_HELP),
    url: str | None = typer.Option(None, "--url", help="OpenAI-compatible API base, e.g. http://127.0.0.1:8080/v1."),
    model: str = typer.Option("default", "--model", help="Model name sent to the --url endpoint."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", help="Environment variable holding the API key (if any)."),
    model_path: Path | None = typer.Option(None, "--model-path", help="Local transformers causal LM to judge with instead of --url."),
    labeller: str = typer.Option("ai_judge", help="Labeller name the answers are stored under."),
    limit: int | None = typer.Option(None, min=0, help="Answer at most this many queries."),
) -> None:
    """RLAIF: answer the store's text-pair queries with an LLM judge asked in both orders."""
    from prefrl.teachers.ai_judge import AIJudgeTeacher, HTTPJudge, LocalLMJudge
    from prefrl.teachers.queue import answer_queries

    if (url is None) == (model_path is None):
        raise typer.BadParameter("give exactly one of --url or --model-path")
    try:
        if url is not None:
            judge = HTTPJudge(url, model=model, api_key=os.environ.get(api_key_env))
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
            lm = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True)
            judge = LocalLMJudge(lm, tokenizer, use_chat_template=getattr(tokenizer, "chat_template", None) is not None)
    except (ValueError, OSError) as e:
        raise typer.BadParameter(str(e)) from None
    pref_store = _open_store(store)
    n = answer_queries(pref_store, AIJudgeTeacher(judge, lease_as=labeller), limit=limit)
    typer.echo(f"{labeller} answered {n} text queries in {pref_store.url}.")


def push_demo_text(store, n: int) -> int:  # noqa: ANN001 - a PreferenceStore
    """Add ``n`` canned text pairs as queries (sides alternate, so 'better' is not always left)."""
    from prefrl.data.types import TextPair

    for i in range(n):
        prompt, good, bad = DEMO_TEXT[i % len(DEMO_TEXT)]
        a, b = (good, bad) if i % 2 == 0 else (bad, good)
        pair_id = store.add_text_pair(TextPair(prompt, a, b, meta={"demo": True, "better": "a" if i % 2 == 0 else "b"}))
        store.add_query(text_pair_id=pair_id, priority=0.0)
    return n


def push_demo_segments(store, n: int, env_id: str, segment_steps: int, seed: int) -> int:  # noqa: ANN001
    """Roll out a random policy in ``env_id`` and add ``n`` pairs of segments (with sim states) as queries."""
    import gymnasium as gym
    import numpy as np

    from prefrl.control.envs import get_sim_state, sim_state_supported
    from prefrl.data.types import Segment

    try:
        env = gym.make(env_id)
    except gym.error.Error as e:
        raise ValueError(f"cannot make env {env_id!r}: {e}") from None
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    if not sim_state_supported(env):  # checked after reset: classic envs have no state before it
        env.close()
        raise ValueError(f"env {env_id!r} exposes no simulator state: its clips could not be rendered")
    segments: list[Segment] = []
    rng = np.random.default_rng(seed)
    try:
        while len(segments) < 2 * n:
            # a random "effort" per segment so the pairs differ visibly
            scale = float(rng.uniform(0.2, 1.0))
            o, a, r, s = [], [], [], []
            for _ in range(segment_steps):
                action = env.action_space.sample()
                if isinstance(env.action_space, gym.spaces.Box):
                    action = (action * scale).astype(env.action_space.dtype)
                o.append(np.asarray(obs))
                s.append(get_sim_state(env))
                a.append(np.asarray(action))
                obs, reward, terminated, truncated, _ = env.step(action)
                r.append(float(reward))
                if terminated or truncated:
                    obs, _ = env.reset()
                    break
            if len(o) < 2:
                continue
            segments.append(Segment(obs=np.stack(o), actions=np.stack(a), true_rewards=np.asarray(r, np.float32),
                                    sim_states=np.stack(s), env_id=env_id, meta={"demo": True}))
    finally:
        env.close()
    ids = store.add_segments(segments)
    for i in range(n):
        store.add_query(left_id=ids[2 * i], right_id=ids[2 * i + 1], priority=0.0)
    return n
