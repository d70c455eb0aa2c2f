"""``prefrl control train --teacher human --serve``: train while serving the labelling app (issue #14, item 4).

The loop and the app share the run's store; the app runs in its own process
(:class:`~prefrl.app.live.LiveServer`), so requests never wait for the loop's GIL, and the loop goes on collecting and training on the
answers that have arrived, never waiting for people beyond ``--human-wait`` at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["train_serving"]


def train_serving(loop: Any, labellers: list[str], host: str = "127.0.0.1", port: int = 8000, *,
                  sock: Any = None, renderer: Any = None, echo: Callable[[str], Any] = print,
                  on_serving: Callable[[Any, dict[str, str]], Any] | None = None) -> Path:
    """Serve the app over ``loop.store``, print each labeller's login link, run the loop, stop serving.

    ``sock``: a socket already bound by :func:`prefrl.app.live.bind` (the CLI binds before building the run).
    ``on_serving(server, links)`` is called once the app answers, before training starts (tests
    and benchmarks start their labellers there). ValueError (one line) when the app cannot serve.
    """
    from prefrl.app.live import LiveServer, labeller_links

    if loop.cfg.teacher != "human":
        raise ValueError(f"--serve needs --teacher human (this run's teacher is {loop.cfg.teacher})")
    server = LiveServer(loop.store, host, port, sock=sock, clips_dir=Path(loop.run_dir) / "clips", renderer=renderer)
    with server:
        links = labeller_links(loop.store, labellers, server.url)
        echo(f"prefrl labelling on {server.url} while training (store {loop.store.url})")
        for name, link in links.items():
            echo(f"Login link for {name}: {link}")
        if not links:
            echo("No --labellers given: add people with `prefrl label add-labeller NAME --store "
                 f"{loop.store.url} --port {server.port}`")
        if on_serving is not None:
            on_serving(server, links)
        return loop.run()
