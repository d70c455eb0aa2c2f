"""``--teacher human --serve``: train while serving the labelling app, in one command (issue #14, item 4; #15).

``prefrl control train`` and ``prefrl lm online-dpo`` share this mechanism. The run and the app
share the run's store; the app runs in its own process (:class:`~prefrl.app.live.LiveServer`), so
its requests never wait for the training's GIL, and the run trains on the answers as they arrive. The options (:data:`SERVE_OPTIONS`) are checked
and the port bound (:func:`open_serving`) before the run writes anything, so a busy port or a bad
name changes nothing; :func:`serve_while` prints each labeller's login link and runs the training.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

__all__ = ["SERVE_OPTIONS", "open_serving", "serve_while", "train_serving"]

T = TypeVar("T")

SERVE_NICE = 10  # --serve-nice

#: The command-line options of ``--serve`` (keyword-only parameters for ``command_from_config``'s ``extra``).
SERVE_OPTIONS = (
    inspect.Parameter("serve", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        False, "--serve", help="With --teacher human: serve the labelling app from this run while it trains "
        "(one command; a login link is printed per --labellers name).")),
    inspect.Parameter("labellers", inspect.Parameter.KEYWORD_ONLY, annotation=str, default=typer.Option(
        "", "--labellers", help="With --serve: comma-separated labeller names; a login link is printed for each.")),
    inspect.Parameter("host", inspect.Parameter.KEYWORD_ONLY, annotation=str, default=typer.Option(
        "127.0.0.1", "--host", help="With --serve: the interface the app listens on.")),
    inspect.Parameter("port", inspect.Parameter.KEYWORD_ONLY, annotation=int, default=typer.Option(
        8000, "--port", min=0, max=65535, help="With --serve: the app's TCP port (0: a free one).")),
    inspect.Parameter("serve_nice", inspect.Parameter.KEYWORD_ONLY, annotation=int, default=typer.Option(
        SERVE_NICE, "--serve-nice", min=0, max=19, help="With --serve: how much the training lowers its CPU priority "
        "(nice) once the app runs, so that on a busy machine the app and its clip rendering go first (0: not at all).")),
)  # fmt: skip


def open_serving(serve: bool, labellers: str, host: str, port: int, teacher: str | None) -> tuple[list[str], Any]:
    """``(labeller names, bound socket)`` for ``--serve`` (``([], None)`` without it); ValueError in one line.

    ``teacher``: the run's teacher (None: not known yet, e.g. a control ``--resume``, checked later).
    """
    if not serve:
        if labellers:
            raise ValueError("--labellers needs --serve")
        return [], None
    from prefrl.app.live import bind, parse_labellers

    names = parse_labellers(labellers)
    if teacher is not None and teacher != "human":
        raise ValueError(f"--serve needs --teacher human, got --teacher {teacher}")
    return names, bind(host, port)


def serve_while(store: Any, labellers: list[str], run: Callable[[], T], host: str = "127.0.0.1", port: int = 8000,
                *, sock: Any = None, clips_dir: str | Path = "clips", renderer: Any = None, nice: int = 0,
                echo: Callable[[str], Any] = print,
                on_serving: Callable[[Any, dict[str, str]], Any] | None = None) -> T:
    """Serve the app over ``store``, print each labeller's login link, return ``run()``, stop serving.

    ``sock``: a socket from :func:`open_serving` (bound before the run was built).
    ``on_serving(server, links)`` is called once the app answers, before training starts (tests
    and benchmarks start their labellers there). ``nice``: once the app (and its render children) runs
    at this process's priority, the training lowers its own by that much: people wait on the app,
    nobody waits on a training step.
    """
    from prefrl.app.live import LiveServer, labeller_links

    server = LiveServer(store, host, port, sock=sock, clips_dir=clips_dir, renderer=renderer)
    with server:
        links = labeller_links(store, labellers, server.url)
        echo(f"prefrl labelling on {server.url} while training (store {store.url})")
        for name, link in links.items():
            echo(f"Login link for {name}: {link}")
        if not links:
            echo("No --labellers given: add people with `prefrl label add-labeller NAME --store "
                 f"{store.url} --port {server.port}`")
        if on_serving is not None:
            on_serving(server, links)
        if nice:
            os.nice(nice)
        return run()


def train_serving(loop: Any, labellers: list[str], host: str = "127.0.0.1", port: int = 8000, *,
                  sock: Any = None, renderer: Any = None, nice: int = 0, echo: Callable[[str], Any] = print,
                  on_serving: Callable[[Any, dict[str, str]], Any] | None = None) -> Path:
    """``control train --serve``: :func:`serve_while` around a control ``PreferenceLoop``'s ``run()``.

    ValueError (one line) when the loop's teacher is not people.
    """
    if loop.cfg.teacher != "human":
        raise ValueError(f"--serve needs --teacher human (this run's teacher is {loop.cfg.teacher})")
    return serve_while(loop.store, labellers, loop.run, host, port, sock=sock, clips_dir=Path(loop.run_dir) / "clips",
                       renderer=renderer, nice=nice, echo=echo, on_serving=on_serving)  # fmt: skip
