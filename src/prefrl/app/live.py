"""The labelling app served from inside another run: ``prefrl control train --teacher human --serve``.

One command trains and serves (issue #14, item 4): the app (uvicorn, with its render worker and
render children) runs in a child process over the run's own store, while the training loop keeps
collecting and training on whatever people have answered so far — asynchronously, as in
Christiano et al. 2017. The loop never imports the app; the CLI starts a :class:`LiveServer`
around ``loop.run()``.

Why a process and not a thread: in a thread, every request waited for the training loop's GIL
(PyTorch and NumPy release it only in their kernels), and one labeller's answer took p95 229 ms
(docs/benchmarks.md, "People in the loop"). The store is multi-process safe (SQLite in WAL mode
with a busy timeout, or PostgreSQL); the child exits when this process dies, as render children do.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from prefrl.app.clips import exit_with_parent
from prefrl.app.config import AppConfig
from prefrl.app.middleware import RedactTokenFilter
from prefrl.app.server import Renderer, create_app
from prefrl.data.store import PreferenceStore

__all__ = ["LiveServer", "bind", "labeller_links", "parse_labellers"]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def parse_labellers(value: str | None) -> list[str]:
    """``"ann,bob"`` → ``["ann", "bob"]`` (blank entries dropped, duplicates refused)."""
    names = [n.strip() for n in (value or "").split(",") if n.strip()]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"--labellers names {', '.join(duplicated)} more than once")
    return names


def labeller_links(store: PreferenceStore, names: Iterable[str], base_url: str) -> dict[str, str]:
    """A fresh one-time login link per name: new labellers are added, existing ones get a new token.

    Reissuing ends the labeller's earlier sessions and links (the store's session epoch).
    """
    links = {}
    for name in names:
        try:
            token = store.reissue_token(name)
        except KeyError:
            token = store.add_labeller(name)
        links[name] = f"{base_url}/login?token={token}"
    return links


def bind(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: a free port), before anything else is built; ValueError in one line."""
    if host in ("0.0.0.0", "::"):
        raise ValueError(f"--host {host} serves every interface: serve a public app with `prefrl label serve "
                         "--allowed-host NAME` beside the run instead")
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {port}")
    # IPPROTO_TCP, or asyncio leaves Nagle on and every keep-alive request waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
    except OSError as e:
        sock.close()
        raise ValueError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    return sock


def _serve_in_child(sock: socket.socket, store_url: str, config: AppConfig, renderer: Renderer | None,
                    parent: int, ready: Any, stop: Any) -> None:
    """The app's process: uvicorn on ``sock`` over its own connection to the store, until ``stop`` is set
    or the parent is gone (then its render children follow it)."""
    import uvicorn

    exit_with_parent(parent)
    logging.getLogger("uvicorn.access").addFilter(RedactTokenFilter())
    with PreferenceStore(store_url) as store:
        server = uvicorn.Server(uvicorn.Config(create_app(store, config, renderer=renderer), log_level="warning"))

        def watch() -> None:
            while not server.started and not stop.is_set():
                time.sleep(0.01)
            ready.set()
            stop.wait()
            server.should_exit = True

        threading.Thread(target=watch, name="prefrl-app-stop", daemon=True).start()
        server.run(sockets=[sock])


class LiveServer:
    """The labelling app on ``host:port`` in a child process (a context manager).

    Args:
        store: the store the app serves (the training run's own; a file or a database server, not
            ``:memory:``: the app opens its own connection to it).
        host, port: where to listen; port 0 picks a free one (see :attr:`url`).
        sock: a socket from :func:`bind` to listen on instead (``host`` still names the allowed host).
        clips_dir: cache of rendered clips.
        renderer: renders a segment's clip (picklable: it is sent to the app's process); ``None`` =
            MuJoCo replay in render children of the app's process.
        app_config: other settings of the app (``clips_dir``/``allowed_hosts`` are set from the above).
    """

    def __init__(self, store: PreferenceStore, host: str = "127.0.0.1", port: int = 8000, *,
                 sock: socket.socket | None = None, clips_dir: str | Path = "clips",
                 renderer: Renderer | None = None, app_config: AppConfig | None = None) -> None:
        if store.is_memory:
            raise ValueError("an in-memory store cannot be served beside a run: give the store a file "
                             "(the app opens its own connection to it)")
        self._sock = sock if sock is not None else bind(host, port)
        secret = os.environ.get("PREFRL_APP_SECRET")
        base = app_config or AppConfig(secret=secret.encode() if secret else None)
        base.clips_dir = Path(clips_dir)
        base.allowed_hosts = tuple(dict.fromkeys((host.lower(), *LOOPBACK_NAMES)))
        self.store, self.host, self.config, self.renderer = store, host, base, renderer
        self.port = int(self._sock.getsockname()[1])
        self._process: multiprocessing.process.BaseProcess | None = None
        self._stop: Any = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The app's process id while it serves."""
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float = 60.0) -> LiveServer:
        """Start the app's process (the render worker with it); returns once requests are answered."""
        # Spawned, not forked: this process has threads (and, in a run, PyTorch's).
        ctx = multiprocessing.get_context("spawn")
        ready, self._stop = ctx.Event(), ctx.Event()
        self._process = ctx.Process(
            target=_serve_in_child, name="prefrl-app", daemon=False,
            args=(self._sock, self.store.url, self.config, self.renderer, os.getpid(), ready, self._stop))
        try:
            self._process.start()
        except (TypeError, AttributeError, pickle.PicklingError) as e:
            self._process = None
            raise ValueError(f"the renderer must be picklable (it is sent to the app's process): {e}") from None
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if not self._process.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the labelling app did not start on {self.url}")
        # The app's process listens on its own copy; this one, left open, would queue connections
        # nobody accepts once the app has stopped (then reset them) instead of refusing them.
        self._sock.close()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and rendering (idempotent): the app finishes its requests and its renders in progress."""
        if self._process is not None:
            self._stop.set()
            self._process.join(timeout)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(5.0)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._process = None
        self._sock.close()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
