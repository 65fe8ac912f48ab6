"""`foundry serve` and `foundry tokens create|list|revoke` (docs/http.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from foundry.adapters.cli.common import print_json
from foundry.domain.api_token import SCOPES


def add_serve_commands(sub: Any) -> None:
    from foundry.adapters.http.app import MAX_BODY_BYTES

    p = sub.add_parser("serve", help="serve every command over HTTP (tokens required)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback; any "
                   "other needs --tls-cert/--tls-key or --insecure-bind)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--tls-cert", type=Path, help="PEM certificate: serve HTTPS")
    p.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    p.add_argument("--insecure-bind", action="store_true",
                   help="allow a non-loopback bind without TLS (logs a warning)")
    p.add_argument("--rate-limit", type=float, default=50.0,
                   help="requests per second per token, on average (0: no limit)")
    p.add_argument("--burst", type=int, default=100, help="requests a token may send at once")
    p.add_argument("--poll", type=float, default=0.1,
                   help="seconds between an event stream's looks at the store")
    p.add_argument("--max-body", type=int, default=MAX_BODY_BYTES, help=argparse.SUPPRESS)
    p.set_defaults(run=_serve)

    t = sub.add_parser("tokens", help="API tokens for `foundry serve`")
    ts = t.add_subparsers(metavar="ACTION")
    c = ts.add_parser("create", help="issue a token; it is printed once, only its hash is kept")
    c.add_argument("--name", required=True, help="the principal: history authors and run "
                   "requesters are recorded under this name")
    c.add_argument("--scope", required=True, choices=SCOPES,
                   help="read < write < run < admin: each allows what the ones before allow")
    c.set_defaults(run=_create)
    ls = ts.add_parser("list", help="every token: name, scope, issued, revoked (no secrets)")
    ls.set_defaults(run=_list)
    r = ts.add_parser("revoke", help="revoke a token (by id or name); refused from the next "
                      "request on")
    r.add_argument("token", help="token id, or the name of an active token")
    r.add_argument("--reason", default="")
    r.set_defaults(run=_revoke)


def _tokens(foundry: Any) -> Any:
    from foundry.adapters.store.tokens import ApiTokens

    return ApiTokens.open(foundry.config)


def _create(foundry: Any, args: argparse.Namespace) -> int:
    issued = _tokens(foundry).issue(args.name, args.scope, issued_by=foundry.principal)
    print_json({"success": True, **issued,
            "note": "the token is shown this once; the store keeps only its hash"})
    return 0


def _list(foundry: Any, _args: argparse.Namespace) -> int:
    tokens = _tokens(foundry).list_tokens()
    print_json({"success": True, "tokens": tokens, "count": len(tokens)})
    return 0


def _revoke(foundry: Any, args: argparse.Namespace) -> int:
    revoked = _tokens(foundry).revoke(args.token, by=foundry.principal, reason=args.reason)
    print_json({"success": True, **revoked})
    return 0


def _serve(foundry: Any, args: argparse.Namespace) -> int:
    from foundry.adapters.http.app import ServeOptions
    from foundry.adapters.http.server import Bind, check_bind, serve

    bind = Bind(host=args.host, port=args.port, tls_cert=args.tls_cert, tls_key=args.tls_key,
                insecure_bind=args.insecure_bind)
    check_bind(bind)  # before the first line: a refused bind prints only its envelope
    options = ServeOptions(max_body_bytes=args.max_body, rate_per_second=args.rate_limit,
                           burst=args.burst, poll_seconds=args.poll)
    scheme = "https" if args.tls_cert else "http"
    print_json({"success": True, "serving": f"{scheme}://{args.host}:{args.port}",
            "store": foundry.config.display_url})
    sys.stdout.flush()
    serve(foundry.foundry, _tokens(foundry), bind, options)
    return 0
