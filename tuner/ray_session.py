"""The Ray session of a study: start a local Ray (loopback, token auth) or join a cluster.

`init_ray` is what `run_study` and the tests call; `check_address` and `check_token` fail
with one line before Ray's own retries; `set_ray_switch` sets Ray's import-time switches.
"""

from __future__ import annotations

import os

from contract.errors import ConfigError


def check_address(address: str) -> None:
    """An unreachable `--address` host:port fails here with one line, not after Ray's retries."""
    import socket

    if address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(
            f"--address {address!r}: expected host:port of a Ray head (e.g. 127.0.0.1:6379) or auto"
        )
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise ConfigError(
            f"--address {address!r}: no Ray cluster answers there ({err.strerror or err}); "
            "start one with `ray start --head`, or leave --address out for a local Ray"
        ) from None


def check_token() -> None:
    """Joining a cluster needs its auth token here (every cluster this project starts has one)."""
    from ray._raylet import AuthenticationTokenLoader

    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return  # the user's explicit opt-out, for a cluster without token authentication
    if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        raise ConfigError(
            "no Ray auth token on this machine: copy the cluster's token (the head's "
            "~/.ray/auth_token) here, or point RAY_AUTH_TOKEN_PATH at it (or set RAY_AUTH_TOKEN)"
        )


def set_ray_switch(variable: str, constant: str, default: str) -> None:
    """Set one of Ray's on/off environment switches (the user's value wins over `default`).

    Ray reads these once, when it is imported (usually before us): the variable reaches the
    processes Ray starts, and its cached `ray_constants.<constant>` must be told as well.
    """
    from ray._private import ray_constants

    os.environ.setdefault(variable, default)
    setattr(ray_constants, constant, os.environ[variable].lower() in ("1", "true"))


def init_ray(address: str | None = None, dashboard: bool = True) -> str | None:
    """Start a local Ray (or join `address`); returns the dashboard URL when there is one.

    A local Ray binds to 127.0.0.1 only and runs with token authentication (Ray creates the
    token in ~/.ray/auth_token, or uses RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH), unless the user
    set RAY_AUTH_MODE themselves.
    """
    import ray

    if ray.is_initialized():
        return None
    if address is None:
        # Token authentication: Ray 2.60 turns it on for a new local cluster when RAY_AUTH_MODE
        # is unset (setting the variable here, after `import ray`, would not reach Ray's
        # cached config); RAY_AUTH_MODE=disabled is the user's explicit opt-out.
        # On Linux Ray swaps 127.0.0.1 for the routable address; a local single-node cluster
        # needs no outside address, so keep every port on loopback (else GCS, raylet and
        # agents listen on every interface).
        set_ray_switch("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "ENABLE_RAY_CLUSTER", "0")
        # Workers run this interpreter, whose environment already holds the project: no need
        # for Ray's `uv run` hook to zip and ship the working tree and start every worker
        # through `uv run`.
        set_ray_switch("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
        from tuner.cluster import local_token_path

        token_path = local_token_path()  # HOME read-only or missing: the token goes elsewhere
        if token_path is not None:
            os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_path)
        context = ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            log_to_driver=False,
            configure_logging=True,
            logging_level="WARNING",
        )
    else:
        from ray.exceptions import AuthenticationError

        check_address(address)
        check_token()
        try:
            context = ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        except (AuthenticationError, ConnectionError, RuntimeError, TimeoutError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ConfigError(
                f"--address {address!r}: cannot join the Ray cluster: {first} (is this "
                "machine's Ray auth token the cluster's? RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)"
            ) from None
    url = context.dashboard_url
    return f"http://{url}" if url and not url.startswith("http") else url or None
