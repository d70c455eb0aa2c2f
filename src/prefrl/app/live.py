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
import os
import pickle
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

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


def serve_child() -> None:
    """The app's process (``python -c "from prefrl.app.live import serve_child; serve_child()"``): reads
    its settings pickled on stdin, serves on the inherited socket until SIGTERM, or until its parent is
    gone (then its render children follow it). It writes a byte to the ready pipe once it answers."""
    import uvicorn

    fd, ready_fd, store_url, config, renderer, parent = pickle.load(sys.stdin.buffer)
    exit_with_parent(parent)
    logging.getLogger("uvicorn.access").addFilter(RedactTokenFilter())
    sock = socket.socket(fileno=fd)
    with PreferenceStore(store_url) as store:
        server = uvicorn.Server(uvicorn.Config(create_app(store, config, renderer=renderer), log_level="warning"))

        def signal_ready() -> None:
            while not server.started and not server.should_exit:
                time.sleep(0.01)
            os.write(ready_fd, b"1")
            os.close(ready_fd)

        threading.Thread(target=signal_ready, name="prefrl-app-ready", daemon=True).start()
        server.run(sockets=[sock])  # SIGTERM: uvicorn's graceful shutdown (requests, then the render worker)


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
        self._process: subprocess.Popen | None = None

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
        ready_r, ready_w = os.pipe()
        try:
            settings = pickle.dumps((self._sock.fileno(), ready_w, self.store.url, self.config, self.renderer,
                                     os.getpid()))
        except (TypeError, AttributeError, pickle.PicklingError) as e:
            os.close(ready_r)
            os.close(ready_w)
            raise ValueError(f"the renderer must be picklable (it is sent to the app's process): {e}") from None
        # A fresh interpreter, not a fork (this process has threads, PyTorch's among them) nor a
        # multiprocessing spawn (that re-imports the caller's __main__, which needs a main guard).
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", "from prefrl.app.live import serve_child; serve_child()"],
                stdin=subprocess.PIPE, pass_fds=(self._sock.fileno(), ready_w), env=env)
        finally:
            os.close(ready_w)
        try:
            self._process.stdin.write(settings)
            self._process.stdin.close()
            started = select.select([ready_r], [], [], timeout)[0] and os.read(ready_r, 1) == b"1"
        except OSError:
            started = False
        finally:
            os.close(ready_r)
        if not started:
            self.stop()
            raise RuntimeError(f"the labelling app did not start on {self.url}")
        # The app's process listens on its own copy; this one, left open, would queue connections
        # nobody accepts once the app has stopped (then reset them) instead of refusing them.
        self._sock.close()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop serving and rendering (idempotent): the app finishes its requests and its renders in progress."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()  # SIGTERM: uvicorn shuts down gracefully
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        self._sock.close()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
