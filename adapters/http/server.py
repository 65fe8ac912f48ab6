"""Run the application under uvicorn: loopback by default; any other address only with TLS or
an explicit, logged `--insecure-bind` (tokens travel in a header: in clear text on a network
anyone on it could replay them)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from foundry.adapters.http.app import ServeOptions, build_app
from foundry.domain.errors import InvalidInputError

if TYPE_CHECKING:
    from foundry.adapters.bootstrap import Foundry
    from foundry.adapters.store.tokens import ApiTokens

log = structlog.get_logger()


@dataclass(frozen=True)
class Bind:
    host: str = "127.0.0.1"
    port: int = 8765
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure_bind: bool = False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(bind: Bind) -> None:
    """Refuse a bind that would expose tokens in clear text, naming the option that allows it."""
    if (bind.tls_cert is None) != (bind.tls_key is None):
        raise InvalidInputError("--tls-cert/--tls-key", "give both, or neither")
    for name, path in (("--tls-cert", bind.tls_cert), ("--tls-key", bind.tls_key)):
        if path is not None and not path.is_file():
            raise InvalidInputError(name, f"{path} is not a readable file")
    if not 0 <= bind.port <= 65535:
        raise InvalidInputError("--port", f"must be 0-65535, got {bind.port}")
    if is_loopback(bind.host) or bind.tls_cert is not None:
        return
    if not bind.insecure_bind:
        raise InvalidInputError("--host", f"{bind.host} is not a loopback address: give "
                                "--tls-cert and --tls-key, or --insecure-bind to serve "
                                "tokens in clear text (behind a TLS proxy, say)")
    log.warning("insecure_bind", host=bind.host, port=bind.port,
                hint="tokens cross the network in clear text; put TLS in front")


def serve(foundry: Foundry, tokens: ApiTokens, bind: Bind,
          options: ServeOptions | None = None) -> None:
    """Serve until interrupted (SIGINT/SIGTERM: uvicorn finishes the requests in flight)."""
    import uvicorn

    check_bind(bind)
    config = uvicorn.Config(
        build_app(foundry, tokens, options), host=bind.host, port=bind.port,
        ssl_certfile=str(bind.tls_cert) if bind.tls_cert else None,
        ssl_keyfile=str(bind.tls_key) if bind.tls_key else None,
        lifespan="off", log_level="warning", access_log=False, server_header=False,
        # Streams end when their client goes; this bounds how long shutdown waits for them.
        timeout_graceful_shutdown=5,
    )
    log.info("serving", host=bind.host, port=bind.port, tls=bind.tls_cert is not None)
    uvicorn.Server(config).run()
