"""`run_study.py dashboard NAME`: optuna-dashboard on a study's journal, on 127.0.0.1.

The journal (`tuner.journal`) is read on every request, so a running study's new trials
show up as they are told. Loopback only: the dashboard has no authentication and can edit
studies (notes, deletes), so it is not for a network; tunnel it (ssh -L) to look from
elsewhere. Imports neither Ray nor torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from contract.errors import ConfigError
from results.remote import is_uri
from tuner.journal import JOURNAL, journal_path

HOST = "127.0.0.1"


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # one line per request would drown the URL line
        pass


def study_journal(name: str, storage: str = "runs") -> Path:
    """The journal of study NAME, or a one-line error naming where it looked and why."""
    if is_uri(storage):
        raise ConfigError(
            f"--storage {storage!r}: the dashboard reads a local journal; copy "
            f"{storage.rstrip('/')}/{name}/{JOURNAL} here and give its folder"
        )
    study_dir = Path(storage) / name
    path = journal_path(study_dir)
    if not path.is_file():
        if not study_dir.is_dir():
            raise ConfigError(
                f"no study {name!r}: {study_dir} does not exist (is --storage right?)"
            )
        raise ConfigError(
            f"{path} does not exist: the study's searches write no Optuna journal (only "
            "Optuna searchers do: nsga2, tpe, gp, random) or it has not told a trial yet"
        )
    return path


def make_dashboard(path: str | Path, port: int = 0) -> WSGIServer:
    """A WSGI server for optuna-dashboard on the journal, bound to 127.0.0.1 (port 0: any)."""
    from optuna_dashboard import wsgi

    from tuner.journal import open_journal

    app = wsgi(open_journal(path))
    return make_server(HOST, port, app, handler_class=QuietHandler)


def serve_dashboard(name: str, storage: str = "runs", port: int = 0) -> int:
    path = study_journal(name, storage)
    server = make_dashboard(path, port)
    url = f"http://{HOST}:{server.server_port}/dashboard"
    print(f"optuna-dashboard for study {name!r} ({path}): {url}", flush=True)
    print(f"port {server.server_port}; Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("dashboard stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
