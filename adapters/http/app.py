"""The ASGI application: every command of the registry at POST /v1/commands/{name}, the run
event streams, health and readiness, and the OpenAPI document.

Starlette rather than FastAPI: the commands already have one validator (the bus validates
params against each command's pydantic model and answers with the envelope); FastAPI would
validate the body a second time, in its own error format, per route. Starlette gives routing,
streaming and the ASGI plumbing and nothing that competes with the bus. uvicorn serves it.
"""

from __future__ import annotations

import asyncio
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from foundry.adapters.commands.bus import classify, envelope, failure
from foundry.adapters.http import streams
from foundry.adapters.http.auth import (
    Principal,
    RateLimiter,
    authenticate,
    authorize,
    needed_scope,
    stamp_principal,
)
from foundry.adapters.http.body import (
    declared_too_big,
    last_event_id,
    parse,
    path_run_id,
    read_body,
)
from foundry.adapters.http.console import COOKIE as CONSOLE_COOKIE
from foundry.adapters.http.console_runs import console_routes
from foundry.adapters.http.continuum import continuum_forge_run, is_continuum_call
from foundry.adapters.http.errors import (
    RateLimitedError,
    UnknownCommandError,
    status_for,
)
from foundry.adapters.http.openapi import build_openapi
from foundry.domain.errors import FoundryError

if TYPE_CHECKING:
    from foundry.adapters.bootstrap import Foundry
    from foundry.adapters.store.tokens import ApiTokens

log = structlog.get_logger()
MAX_BODY_BYTES = 1_048_576
LONG_COMMANDS = frozenset({"forge/run", "forge/resume"})


@dataclass(frozen=True)
class ServeOptions:
    """The server's knobs (`foundry serve --help` names each)."""

    max_body_bytes: int = MAX_BODY_BYTES
    rate_per_second: float = 50.0
    """Per token, on average; 0 turns the limit off."""
    burst: int = 100
    poll_seconds: float = 0.1
    """How often an event stream looks for new events in the store."""
    heartbeat_seconds: float = 15.0
    ready_max_lag: int = 1000
    """/readyz fails while a view is more than this many notifications behind its store."""
    run_threads: int = 64
    """How many forge/run and forge/resume calls may execute (or wait) at once."""


class EnvelopeResponse(JSONResponse):
    """An envelope as JSON; a non-finite float (a metric) becomes null, never invalid JSON."""

    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=False, allow_nan=False, default=str)
        except ValueError:
            text = json.dumps(_finite(content), ensure_ascii=False, default=str)
        return text.encode("utf-8")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def answer(body: dict[str, Any]) -> EnvelopeResponse:
    """The envelope with the HTTP status its errorCode maps to (200 on success)."""
    status = 200 if body.get("success") else status_for(str(body.get("errorCode")))
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="foundry"'
    return EnvelopeResponse(body, status_code=status, headers=headers)


def refuse(error: FoundryError) -> EnvelopeResponse:
    response = answer(failure(error))
    if isinstance(error, RateLimitedError):
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return response


class Api:
    """The routes, bound to one Foundry and its tokens."""

    def __init__(self, foundry: Foundry, tokens: ApiTokens, options: ServeOptions) -> None:
        self.foundry, self.tokens, self.options = foundry, tokens, options
        self.limiter = RateLimiter(options.rate_per_second, options.burst)
        # forge/run and forge/resume with wait: true hold a thread until the run ends (hours,
        # for a real forge). They get threads of their own, so that many waiting runs never
        # take the pool that authenticates and answers every other request.
        self.run_threads = ThreadPoolExecutor(options.run_threads, "foundry-http-run")
        commands = foundry.services.commands
        self.scopes = {s.name: needed_scope(s, {}) for s in commands}
        self.openapi = build_openapi(commands, self.scopes)

    @property
    def max_body_bytes(self) -> int:
        return self.options.max_body_bytes

    async def principal(self, request: Request, *, cookie: bool = False) -> Principal:
        """Authenticate (a store read: a revoked token is refused at once), then rate-limit.
        With `cookie`, the console's cookie may stand in for the header (a browser's
        EventSource sends no headers); only the GET streams allow that."""
        header = request.headers.get("authorization")
        if header is None and cookie and request.cookies.get(CONSOLE_COOKIE):
            header = f"Bearer {request.cookies[CONSOLE_COOKIE]}"
        who = await run_in_threadpool(authenticate, header, self.tokens)
        self.limiter.take(who.token_id)
        return who

    async def command(self, request: Request) -> Response:
        name = request.path_params["command"]
        try:
            too_big = declared_too_big(request, self.options.max_body_bytes)
            if too_big is not None:
                return refuse(too_big)
            who = await self.principal(request)
            commands = self.foundry.services.commands
            if name not in commands:
                return refuse(UnknownCommandError(name, commands.names()))
            params = parse(await read_body(request, self.options.max_body_bytes))
            authorize(who, name, needed_scope(commands.get(name), params))
            if name in LONG_COMMANDS:  # may hold its thread for a whole run
                loop = asyncio.get_running_loop()
                body = await loop.run_in_executor(self.run_threads, self._execute, name,
                                                  params, who)
            else:
                body = await run_in_threadpool(self._execute, name, params, who)
        except FoundryError as e:
            log.info("http_refused", command=name, code=e.code, error=str(e))
            return refuse(e)
        except Exception as e:  # a store that fails under authenticate: an envelope
            return refuse(classify(e, name, self.foundry.services))
        return answer(body)

    def _execute(self, name: str, params: Any, who: Principal) -> dict[str, Any]:
        def execute(command: str, raw: Any) -> dict[str, Any]:
            spec = self.foundry.services.commands.get(command)
            stamped = stamp_principal(spec.params, raw, who.name)
            return self.foundry.execute(command, stamped, principal=who.name)

        if is_continuum_call(name, params):
            return continuum_forge_run(params, execute)
        return execute(name, params)

    async def run_stream(self, request: Request) -> Response:
        try:
            await self.principal(request, cookie=True)
            run_id = path_run_id(request.path_params["run_id"])
            after = last_event_id(request)
            run = await run_in_threadpool(self.foundry.runs.get_run, run_id)
        except FoundryError as e:
            return refuse(e)
        except Exception as e:
            return refuse(classify(e, "runs/events", self.foundry.services))
        stream = streams.run_events(self.foundry.runs, run_id, after,
                                    poll=self.options.poll_seconds,
                                    heartbeat=self.options.heartbeat_seconds, ended=run.ended)
        return _event_stream(stream)

    async def all_runs_stream(self, request: Request) -> Response:
        try:
            await self.principal(request, cookie=True)
            after = last_event_id(request, default=None)
            if after is None:  # from now on, unless the client says where it was
                after = await run_in_threadpool(self._runs_head)
        except FoundryError as e:
            return refuse(e)
        except Exception as e:
            return refuse(classify(e, "runs/events", self.foundry.services))
        return _event_stream(streams.all_run_events(
            self.foundry.runs, after, poll=self.options.poll_seconds,
            heartbeat=self.options.heartbeat_seconds))

    def _runs_head(self) -> int:
        return int(self.foundry.runs.recorder.max_notification_id() or 0)

    async def healthz(self, _request: Request) -> Response:
        return answer(envelope(status="ok"))

    async def readyz(self, _request: Request) -> Response:
        try:
            lags = await run_in_threadpool(self._lags)
        except Exception as e:
            return refuse(classify(e, "readyz", self.foundry.services))
        behind = {name: lag for name, lag in lags.items() if lag > self.options.ready_max_lag}
        if behind:
            body = failure(ViewsBehindError(behind, self.options.ready_max_lag), lags=lags)
            return EnvelopeResponse(body, status_code=503)
        return answer(envelope(status="ready", lags=lags))

    def _lags(self) -> dict[str, int]:
        return {name: host.lag for name, host in self.foundry.hosts().items()}

    async def openapi_json(self, _request: Request) -> Response:
        return EnvelopeResponse(self.openapi)


class ViewsBehindError(FoundryError):
    """Raised (as /readyz's answer) when a view lags its store by more than the bound."""

    code = "views_behind"

    def __init__(self, behind: dict[str, int], bound: int) -> None:
        super().__init__(f"views behind their store by more than {bound} notifications: "
                         + ", ".join(f"{k} {v}" for k, v in sorted(behind.items())))


def _event_stream(stream: Any) -> StreamingResponse:
    return StreamingResponse(stream, media_type="text/event-stream", headers={
        "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _http_error(_request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (no such route or method) as envelopes, like everything."""
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else "invalid_input"
    body = {"success": False, "error": f"{exc.detail}", "errorCode": code}
    return EnvelopeResponse(envelope(**body) | {"success": False}, status_code=exc.status_code)


async def _crash(_request: Request, exc: Exception) -> Response:
    return refuse(classify(exc, "http", None))


def build_app(foundry: Foundry, tokens: ApiTokens,
              options: ServeOptions | None = None) -> Starlette:
    api = Api(foundry, tokens, options or ServeOptions())
    routes = [
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
        Route("/v1/openapi.json", api.openapi_json, methods=["GET"]),
        Route("/v1/commands/{command:path}", api.command, methods=["POST"]),
        Route("/v1/runs/events", api.all_runs_stream, methods=["GET"]),
        Route("/v1/runs/{run_id}/events", api.run_stream, methods=["GET"]),
        *console_routes(api),
    ]
    return Starlette(routes=routes, exception_handlers={
        HTTPException: _http_error, Exception: _crash})


__all__ = ["MAX_BODY_BYTES", "ServeOptions", "build_app"]
