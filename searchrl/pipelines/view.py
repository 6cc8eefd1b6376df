"""``searchrl view RUN_DIR``: the run directory as a static site (:mod:`searchrl.view`), optionally
served on localhost.

The site opens from ``file://`` as it is; ``--serve`` only spares copying a path into a browser
(and suits a run on a remote machine reached through an SSH tunnel). The server binds to
``127.0.0.1`` and serves the site's directory and nothing else.
"""

from __future__ import annotations

import functools
import os
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..view import DEFAULT_PAGE_SIZE, collect, write_site


def site_dir(run_dir: str | os.PathLike, out: str | os.PathLike | None) -> Path:
    """Where the site goes: ``out``, else ``<run_dir>/view``."""
    return Path(out) if out else Path(run_dir) / "view"


def run_view(run_dir: str | os.PathLike, out: str | os.PathLike | None = None,
             page_size: int = DEFAULT_PAGE_SIZE) -> Path:
    """Write the site of ``run_dir`` (into ``out``, default ``<run_dir>/view``); returns its ``index.html``."""
    dest = site_dir(run_dir, out)
    model = collect(run_dir, exclude=dest)
    return write_site(model, dest, page_size=page_size)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


def serve(site: str | os.PathLike, port: int = 8000) -> ThreadingHTTPServer:
    """An HTTP server for the site directory on ``127.0.0.1:port`` (0: any free port), not yet started
    (``serve_forever``); its address is ``server.server_address``."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    return ThreadingHTTPServer(("127.0.0.1", port), handler)
