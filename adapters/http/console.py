"""The web console, served by `foundry serve` at /console: recipes, a recipe's page (fields,
history as field diffs, edit, fork, forge), runs (live stages through the run's SSE stream,
cancel, resume) and an artifact's page (results, tiers, lineage graph, verify and replay).

It calls the same commands as POST /v1/commands, as the signed-in token's principal and
within its scope. The token lives in an HttpOnly, SameSite=Strict cookie set by the sign-in
form; a POST whose Origin is another site is refused as well.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import parse_qs, quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from foundry.adapters.commands.bus import failure
from foundry.adapters.http.auth import Principal, authenticate, authorize, needed_scope
from foundry.adapters.http.body import read_body
from foundry.adapters.http.console_html import e, page, table, value
from foundry.domain.errors import FoundryError, InvalidInputError

if TYPE_CHECKING:
    from foundry.adapters.bootstrap import Foundry
    from foundry.adapters.store.tokens import ApiTokens

COOKIE = "foundry_token"
R, A = "forge_recipes", "forge_artifacts"
SORTS = {"updatedAt:desc": "recently changed", "name:asc": "name", "version:desc": "version"}


class Host(Protocol):
    """What the console needs of the API it is served beside (adapters/http/app.py Api)."""

    foundry: Foundry
    tokens: ApiTokens

    @property
    def max_body_bytes(self) -> int: ...

    def _execute(self, name: str, params: Any, who: Principal) -> dict[str, Any]: ...


C = TypeVar("C", bound="Console")


def signed_in(handler: Callable[[C, Request, Principal], Awaitable[Response]]
              ) -> Callable[[C, Request], Awaitable[Response]]:
    """A console page for a signed-in person: without a valid session cookie, the sign-in
    page instead; with one, the handler gets the principal."""

    @functools.wraps(handler)
    async def page_for(self: C, request: Request) -> Response:
        who = await self.who(request)
        if who is None:
            return RedirectResponse("/console/login", status_code=303)
        return await handler(self, request, who)

    return page_for


class Console:
    def __init__(self, api: Host) -> None:
        self.api = api

    async def who(self, request: Request) -> Principal | None:
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        try:
            return await run_in_threadpool(authenticate, f"Bearer {token}", self.api.tokens)
        except Exception:
            return None

    async def run(self, who: Principal, command: str, params: dict[str, Any]
                  ) -> dict[str, Any]:
        spec = self.api.foundry.services.commands.get(command)
        try:
            authorize(who, command, needed_scope(spec, params))
        except FoundryError as err:
            return failure(err)
        result: dict[str, Any] = await run_in_threadpool(self.api._execute, command, params,
                                                         who)
        return result

    async def form(self, request: Request) -> dict[str, str]:
        origin = request.headers.get("origin")
        if origin and origin.rstrip("/") != f"{request.url.scheme}://{request.url.netloc}":
            raise InvalidInputError("Origin", f"{origin} is not this console")
        raw = await read_body(request, self.api.max_body_bytes)
        return {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}

    # --- sign in ---------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        error = ""
        if request.method == "POST":
            token = (await self.form(request)).get("token", "").strip()
            try:
                await run_in_threadpool(authenticate, f"Bearer {token}", self.api.tokens)
            except FoundryError as err:
                error = str(err)
            else:
                response = RedirectResponse("/console", status_code=303)
                response.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                                    secure=request.url.scheme == "https", path="/")
                return response
        body = ('<form method="post" action="/console/login"><label for="token">API token'
                '</label><input id="token" name="token" type="password" size="60" required '
                'autocomplete="off"><button type="submit">Sign in</button></form>'
                "<p>Create one with <code>foundry tokens create --name NAME --scope run</code>"
                ".</p>")
        return HTMLResponse(page("Sign in", body, error=error), status_code=401 if error
                            else 200)

    # --- recipes ---------------------------------------------------------------------------

    @signed_in
    async def recipes(self, request: Request, who: Principal) -> Response:
        q, sort = request.query_params.get("q", ""), request.query_params.get("sort", "")
        field, _, direction = (sort if sort in SORTS else "updatedAt:desc").partition(":")
        params: dict[str, Any] = {"collection": R, "limit": 200,
                                  "orderBy": [{"field": field, "direction": direction}]}
        if q:
            params["filter"] = {"name": {"$regex": re.escape(q)}}
        listed = await self.run(who, "data/list", params)
        rows = [[f'<a href="/console/recipes/{e(i["id"])}">{e(i.get("name"))}</a>',
                 e(i.get("version")), e(i.get("revision")), e(", ".join(i.get("tags") or [])),
                 e(i.get("updatedAt"))] for i in listed.get("items", [])]
        options = "".join(f'<option value="{k}"{" selected" if k == sort else ""}>{v}</option>'
                          for k, v in SORTS.items())
        body = (f'<form method="get" action="/console"><label for="q">Name contains</label>'
                f'<input id="q" name="q" value="{e(q)}"><label for="sort">Sort by</label>'
                f'<select id="sort" name="sort">{options}</select> '
                f'<button type="submit">Filter</button></form>'
                + table(["Name", "Version", "Revision", "Tags", "Updated"], rows,
                        caption=f"{len(rows)} recipes")
                + '<h2>New recipe</h2><form method="post" action="/console/recipes">'
                  '<label for="recipe-json">Recipe (ForgeRecipe JSON)</label>'
                  '<textarea id="recipe-json" name="data" rows="10" required></textarea>'
                  '<button type="submit" id="create">Create</button></form>')
        return HTMLResponse(page("Recipes", body, who=who.name,
                                 error=_error(listed)))

    @signed_in
    async def create(self, request: Request, who: Principal) -> Response:
        import json

        try:
            data = json.loads((await self.form(request)).get("data", ""))
        except ValueError as err:
            return HTMLResponse(page("Recipes", "", who=who.name, error=f"data: {err}"), 400)
        made = await self.run(who, "data/create", {"collection": R, "data": data})
        if not made.get("success"):
            return HTMLResponse(page("Recipes", '<a href="/console">back</a>', who=who.name,
                                     error=_error(made)), 400)
        return RedirectResponse(f"/console/recipes/{made['id']}", status_code=303)

    @signed_in
    async def recipe(self, request: Request, who: Principal) -> Response:
        rid = request.path_params["rid"]
        read = await self.run(who, "data/read", {"collection": R, "id": rid})
        item = read.get("data")
        if not item:
            return HTMLResponse(page("Recipe", "", who=who.name,
                                     error=_error(read) or f"no recipe {rid}"), 404)
        history = await self.run(who, "data/history", {"collection": R, "id": rid})
        runs = await self.run(who, "forge/list-runs", {"filter": {"recipeId": rid}})
        fields = "".join(f"<dt>{e(k)}</dt><dd>{value(item.get(k))}</dd>" for k in (
            "name", "version", "revision", "description", "tags", "source", "cycles"))
        stages = table(["#", "Type", "Settings"], [
            [e(n), e(s.get("type")), value({k: v for k, v in s.items() if k != "type"})]
            for n, s in enumerate(item.get("stages") or [])], caption="Stages")
        edits = "".join(_history_item(h) for h in history.get("items", []))
        run_rows = [[f'<a href="/console/runs/{e(r["runId"])}">{e(r["runId"])[:8]}</a>',
                     e(r["status"]), e(r["recipeVersion"]), e(r["hardwareNode"])]
                    for r in runs.get("runs", [])]
        act = f"/console/recipes/{e(rid)}"
        body = (f'<div class="grid"><section><h2>Fields</h2><dl>{fields}</dl>{stages}'
                f'</section><section><h2>Edit</h2><form method="post" action="{act}/edit">'
                f'<label for="description">Description</label><textarea id="description" '
                f'name="description" rows="3">{e(item.get("description"))}</textarea>'
                f'<label for="version">Version</label><input id="version" name="version" '
                f'value="{e(item.get("version"))}"><label for="reason">Why</label>'
                f'<input id="reason" name="reason"><input type="hidden" name="revision" '
                f'value="{e(item.get("revision"))}"><button type="submit" id="save">Save'
                f'</button></form><h2>Fork</h2><form method="post" action="{act}/fork">'
                f'<label for="fork-name">Name of the fork</label><input id="fork-name" '
                f'name="name" required><button type="submit">Fork</button></form>'
                f'<h2>Forge</h2><form method="post" action="{act}/forge"><label for="node">'
                f'Hardware node</label><input id="node" name="node" value="cpu@local">'
                f'<button type="submit" id="forge">Forge</button></form></section></div>'
                + table(["Run", "Status", "Version", "Node"], run_rows, caption="Runs")
                + f'<h2>History</h2><ol id="history">{edits}</ol>')
        return HTMLResponse(page(f"Recipe {item.get('name')}", body, who=who.name))

    @signed_in
    async def recipe_action(self, request: Request, who: Principal) -> Response:
        rid, action = request.path_params["rid"], request.path_params["action"]
        try:
            form = await self.form(request)
        except FoundryError as err:
            return HTMLResponse(page("Refused", "", who=who.name, error=str(err)), 400)
        if action == "edit":
            done = await self.run(who, "data/update", {
                "collection": R, "id": rid, "reason": form.get("reason", ""),
                "expectedRevision": int(form.get("revision") or 0) or None,
                "data": {"description": form.get("description", ""),
                         "version": form.get("version", "")}})
            target = f"/console/recipes/{rid}"
        elif action == "fork":
            done = await self.run(who, "recipe/fork", {"id": rid,
                                                       "data": {"name": form.get("name")}})
            target = f"/console/recipes/{done.get('id')}"
        elif action == "forge":
            done = await self.run(who, "forge/run", {"recipeId": rid, "wait": False,
                                                     "hardwareNode": form.get("node") or
                                                     "cpu@local"})
            target = f"/console/runs/{done.get('runId')}"
        else:
            return HTMLResponse(page("Not found", "", who=who.name, error=action), 404)
        if not done.get("success"):
            back = f'<a href="/console/recipes/{quote(rid)}">back to the recipe</a>'
            return HTMLResponse(page("Refused", back, who=who.name, error=_error(done)), 400)
        return RedirectResponse(target, status_code=303)


def _history_item(h: dict[str, Any]) -> str:
    changes = table(["Field", "Before", "After"], [
        [e(c["field"]), value(c.get("old")), value(c.get("new"))]
        for c in h.get("changes") or []]) if h.get("changes") else ""
    why = f" — “{e(h['reason'])}”" if h.get("reason") else ""
    return (f'<li><strong>rev {e(h["revision"])} {e(h["event"])}</strong> by '
            f'<span class="author">{e(h.get("author") or "-")}</span> at {e(h["at"])}'
            f"{why}{changes}</li>")


def _error(body: dict[str, Any]) -> str:
    return "" if body.get("success", True) else str(body.get("error", ""))
