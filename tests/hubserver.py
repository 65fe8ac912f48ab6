"""A local Hugging Face Hub for tests: a real HTTP server on 127.0.0.1 speaking the few routes
huggingface_hub 2.4 calls for `create_repo(exist_ok=True)` and `upload_folder`.

What huggingface_hub 2.4 sends (read from hf_api.py, _commit_api.py and _upload_pipeline.py; with
hf_xet installed `upload_folder` goes through `_upload_pipeline.pipelined_upload`):

- `POST /api/repos/create` JSON {name, organization, visibility?, type?} -> {url}; 409 when the
  repo exists (create_repo(exist_ok=True) swallows it). On 401/402/403 with exist_ok, the client
  asks `GET /api/models/{repo}` whether the repo exists and re-raises the 401 when it does not.
- `POST /api/models/{repo}/preupload/{rev}` JSON {files: [{path, sample, size}]} -> {files:
  [{path, uploadMode, shouldIgnore, oid}]}. Every file is answered "regular" (no LFS, no Xet);
  `oid` is the git blob sha1 of the file already there, so unchanged files are not re-sent.
  Sent through `http_backoff`: 408/429/5xx are retried 5 times (1, 2, 4, 8, 8 s apart).
- `POST /api/models/{repo}/commit/{rev}` NDJSON: a {"key": "header", "value": {summary,
  description}} line then {"key": "file", "value": {path, content (base64), encoding}} lines
  -> {commitUrl: http://host/{repo}/commit/{oid}, commitOid}. Also sent with retries.
- `POST /api/validate-yaml` before a commit holding README.md, `GET /api/models/{repo}[/revision/
  {rev}]` (repo_info: after an all-unchanged upload, or the exist_ok check above), `GET
  /api/whoami-v2`, and `GET /api/agent-harnesses` (answered 404).

Anything else is answered 404 and remembered in `unknown`, so a test can show what the client
asked for. `fail_next(route_prefix, status, request_id=..., delay=...)` makes the next request
whose path starts with `route_prefix` answer `status` with an `X-Request-Id` header and a JSON
error body, after sleeping `delay` seconds if given (longer than the client's timeout: a
timeout).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

HUB_TOKEN = "hf_test_SECRET_abc123"
# The read timeout the tests give huggingface_hub's shared client (its own default is none).
HUB_CLIENT_TIMEOUT = 2.0

_REPO = r"(?P<repo>[^/]+/[^/]+)"
ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("GET", re.compile(rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "repo_info"),
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    # Best-effort agent detection (utils/_detect_agent.py), fetched once per process from
    # constants.ENDPOINT; answered 404 so nothing is cached under HF_HOME.
    ("GET", re.compile(r"^/api/agent-harnesses$"), "agent_harnesses"),
]


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    repo: str
    revision: str
    oid: str
    message: str
    description: str
    files: dict[str, bytes]
    deleted: list[str]


@dataclass
class Failure:
    prefix: str
    status: int | None
    request_id: str
    delay: float | None
    message: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    head: str = "0" * 40


class HubServer:
    """Start with `start()` (or `with HubServer() as hub:`); `url` is the HF_ENDPOINT."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.created: list[dict[str, Any]] = []  # create_repo payloads that created a repo
        self.commits: list[Commit] = []
        self.auth_headers: list[str] = []  # every Authorization header seen, in order
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.unknown: list[tuple[str, str]] = []
        # (path, status, request id) of each request that met an injected failure
        self.injected: list[tuple[str, int | None, str]] = []
        self._failures: list[Failure] = []
        # When set, every response carries this string in every field a client reads: the
        # headers (X-Request-Id, X-Error-Message, X-Error-Code), the error text and the repo
        # URL. A hub or proxy that echoes the Authorization token looks like this.
        self.echo: str | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- control --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "the hub is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True,
                                        name="test-hub")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # wakes handlers sleeping in an injected delay
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, route_prefix: str, status: int | None = 500, *,
                  request_id: str = "req-123", delay: float | None = None,
                  message: str = "injected failure") -> None:
        """The next request whose path starts with `route_prefix` (e.g. "/api/repos/create",
        "/api/models/org/repo/commit") sleeps `delay` seconds if given, then answers `status`
        with `X-Request-Id: request_id` and {"error": message}; status None after a delay
        answers 504."""
        with self._lock:
            self._failures.append(Failure(route_prefix, status, request_id, delay, message))

    def heal(self) -> None:
        """Forget every failure not yet answered."""
        with self._lock:
            self._failures.clear()

    def files(self, repo_id: str) -> dict[str, bytes]:
        """The repo's files as of its last commit."""
        return dict(self.repos[repo_id].files)

    def commits_to(self, repo_id: str) -> list[Commit]:
        return [c for c in self.commits if c.repo == repo_id]

    # --- handling (called from the handler threads) ----------------------------------------

    def _take_failure(self, path: str) -> Failure | None:
        with self._lock:
            for i, failure in enumerate(self._failures):
                if path.startswith(failure.prefix):
                    return self._failures.pop(i)
        return None

    def handle(self, h: _Handler, method: str) -> None:
        path = unquote(urlsplit(h.path).path)
        body = h.read_body()
        with self._lock:
            self.requests.append((method, path))
            if "Authorization" in h.headers:
                self.auth_headers.append(h.headers["Authorization"])
        failure = self._take_failure(path)
        if failure is not None:
            with self._lock:
                self.injected.append((path, failure.status, failure.request_id))
            if failure.delay:
                self._closing.wait(failure.delay)
            h.send_json(failure.status or 504, {"error": failure.message},
                        request_id=failure.request_id)
            return
        for route_method, pattern, name in ROUTES:
            match = pattern.match(path)
            if route_method == method and match:
                getattr(self, f"_{name}")(h, body, **match.groupdict())
                return
        with self._lock:
            self.unknown.append((method, path))
        h.send_json(404, {"error": f"test hub: no route for {method} {path}"})

    def _repo_or_404(self, h: _Handler, repo: str) -> Repo | None:
        found = self.repos.get(repo)
        if found is None:
            h.send_json(404, {"error": "Repository not found"},
                        headers={"X-Error-Code": "RepoNotFound"})
        return found

    def _create_repo(self, h: _Handler, body: bytes) -> None:
        payload = json.loads(body or b"{}")
        org, name = payload.get("organization"), payload["name"]
        repo_id = f"{org}/{name}" if org else name
        url = f"{self.url}/{repo_id}" + (f"?echo={self.echo}" if self.echo else "")
        with self._lock:
            if repo_id in self.repos:
                h.send_json(409, {"error": "You already created this model repo", "url": url})
                return
            self.repos[repo_id] = Repo(repo_id, payload.get("visibility") == "private")
            self.created.append(payload)
        h.send_json(200, {"url": url, "name": repo_id, "id": hashlib.md5(
            repo_id.encode()).hexdigest()})

    def _preupload(self, h: _Handler, body: bytes, repo: str, rev: str) -> None:  # noqa: ARG002
        found = self._repo_or_404(h, repo)
        if found is None:
            return
        files = json.loads(body)["files"]
        h.send_json(200, {"files": [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": git_blob_oid(found.files[f["path"]]) if f["path"] in found.files else None}
            for f in files]})

    def _commit(self, h: _Handler, body: bytes, repo: str, rev: str) -> None:
        found = self._repo_or_404(h, repo)
        if found is None:
            return
        header: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        deleted: list[str] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                assert value.get("encoding") == "base64", value
                files[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            else:
                h.send_json(400, {"error": f"test hub: unsupported commit line {key!r}"})
                return
        with self._lock:
            oid = hashlib.sha1(f"{repo}:{len(self.commits)}:{found.head}".encode()
                               ).hexdigest()
            self.commits.append(Commit(repo, rev, oid, str(header.get("summary", "")),
                                       str(header.get("description", "")), files, deleted))
            for path in deleted:
                found.files.pop(path, None)
            found.files.update(files)
            found.head = oid
        echo = f"?echo={self.echo}" if self.echo else ""
        h.send_json(200, {"commitUrl": f"{self.url}/{repo}/commit/{oid}{echo}",
                          "commitOid": oid, "success": True})

    def _repo_info(self, h: _Handler, body: bytes, repo: str,  # noqa: ARG002
                   rev: str | None = None) -> None:  # noqa: ARG002
        found = self._repo_or_404(h, repo)
        if found is None:
            return
        h.send_json(200, {"id": repo, "modelId": repo, "sha": found.head,
                          "private": found.private,
                          "siblings": [{"rfilename": p} for p in sorted(found.files)]})

    def _whoami(self, h: _Handler, body: bytes) -> None:  # noqa: ARG002
        if h.headers.get("Authorization") != f"Bearer {HUB_TOKEN}":
            h.send_json(401, {"error": "Invalid credentials in Authorization header"})
            return
        h.send_json(200, {"type": "user", "name": "foundry-test", "orgs": [{"name": "org"}],
                          "auth": {"type": "access_token",
                                   "accessToken": {"displayName": "test", "role": "write"}}})

    def _validate_yaml(self, h: _Handler, body: bytes) -> None:  # noqa: ARG002
        h.send_json(200, {"errors": [], "warnings": []})


    def _agent_harnesses(self, h: _Handler, body: bytes) -> None:  # noqa: ARG002
        h.send_json(404, {"error": "test hub: no agent harness registry"})


class _Handler(BaseHTTPRequestHandler):
    server_hub: HubServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the default handler prints every request to stderr."""

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, status: int, payload: Any, *, request_id: str | None = None,
                  headers: dict[str, str] | None = None) -> None:
        echo = self.server_hub.echo
        if echo:
            request_id = f"req-{echo}"
            headers = {**(headers or {}), "X-Error-Message": f"echo {echo}",
                       "X-Error-Code": f"Echo{echo}"}
            if isinstance(payload, dict) and "error" in payload:
                payload = {**payload, "error": f"{payload['error']} (token {echo})"}
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if request_id:
                self.send_header("X-Request-Id", request_id)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout): nobody is listening any more

    def do_GET(self) -> None:
        self.server_hub.handle(self, "GET")

    def do_POST(self) -> None:
        self.server_hub.handle(self, "POST")

    def do_PUT(self) -> None:
        self.server_hub.handle(self, "PUT")

    def do_DELETE(self) -> None:
        self.server_hub.handle(self, "DELETE")
