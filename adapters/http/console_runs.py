"""The console's run and artifact pages (adapters/http/console.py has the rest)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from foundry.adapters.http.auth import Principal
from foundry.adapters.http.console import A, Console, Host, _error, signed_in
from foundry.adapters.http.console_html import (
    LIVE_RUN_JS,
    e,
    lineage_svg,
    page,
    short,
    table,
    value,
)
from foundry.domain.errors import FoundryError


class RunPages(Console):
    @signed_in
    async def runs(self, _request: Request, who: Principal) -> Response:
        listed = await self.run(who, "forge/list-runs", {
            "orderBy": [{"field": "forgedAt", "direction": "desc"}], "limit": 200})
        rows = [[f'<a href="/console/runs/{e(r["runId"])}">{e(r["runId"])}</a>',
                 e(r["status"]), f'<a href="/console/recipes/{e(r["recipeId"])}">'
                 f'{e(r["recipeVersion"])}</a>', e(r["hardwareNode"]), e(r.get("forgedAt"))]
                for r in listed.get("runs", [])]
        return HTMLResponse(page("Runs", table(["Run", "Status", "Recipe version", "Node",
                                                "Forged"], rows), who=who.name,
                                 error=_error(listed)))

    @signed_in
    async def run_page(self, request: Request, who: Principal) -> Response:
        run_id = request.path_params["run_id"]
        status = await self.run(who, "forge/status", {"runId": run_id})
        if not status.get("success"):
            return HTMLResponse(page("Run", "", who=who.name, error=_error(status)), 404)
        stages = status["stages"]
        rows = [[e(f"{s['cycle']}:{s['index']}"), e(s["type"]), f'<span class="st">'
                 f'{e(s["status"])}</span>', f'<progress max="1" value="'
                 f'{1 if s["status"] == "completed" else (s.get("progress") or 0)}"></progress>',
                 f'<span class="sec">{e(s.get("seconds"))}</span>', '<span class="met"></span>']
                for s in stages]
        ids = [f"stage-{s['cycle']}-{s['index']}" for s in stages]
        ended = status["status"] in ("completed", "failed", "cancelled")
        act = f"/console/runs/{e(run_id)}"
        body = (f'<p>Status: <strong id="run-status" aria-live="polite">{e(status["status"])}'
                f'</strong> · recipe <a href="/console/recipes/{e(status["recipeId"])}">'
                f'v{e(status["recipeVersion"])}</a> · node {e(status["hardwareNode"])}</p>'
                f'<p id="artifact-link"{"" if ended else " hidden"}><a href="/console/'
                f'artifacts/{e(status["artifactId"])}">Open the artifact</a></p>'
                + table(["Stage", "Type", "Status", "Progress", "Seconds", "Metrics"], rows,
                        row_ids=ids).replace("<table>", '<table id="stages">')
                + '<h2>Loss</h2><svg id="loss" role="img" aria-label="loss curve" width="400" '
                  'height="120"><polyline fill="none" stroke="#b42318" stroke-width="2" '
                  'points=""/></svg>'
                + f'<form method="post" action="{act}/cancel"><label for="why">Why cancel'
                  f'</label><input id="why" name="reason"><button type="submit">Cancel run'
                  f'</button></form><form method="post" action="{act}/resume"><button '
                  f'type="submit">Resume run</button></form>')
        head = str(len(await self._events_so_far(run_id))) if not ended else "0"
        script = LIVE_RUN_JS if not ended else ""
        html = page(f"Run {run_id[:8]}", body, who=who.name, script=script)
        html = html.replace("<body>", f'<body data-run="{e(run_id)}" data-last="{head}">')
        return HTMLResponse(html)

    async def _events_so_far(self, run_id: str) -> list[Any]:
        """The events the page was drawn from: the live stream resumes after them."""
        from uuid import UUID

        from starlette.concurrency import run_in_threadpool

        return list(await run_in_threadpool(
            self.api.foundry.runs.recorder.select_events, UUID(run_id)))

    @signed_in
    async def run_action(self, request: Request, who: Principal) -> Response:
        run_id, action = request.path_params["run_id"], request.path_params["action"]
        try:
            form = await self.form(request)
        except FoundryError as err:
            return HTMLResponse(page("Refused", "", who=who.name, error=str(err)), 400)
        if action == "cancel":
            done = await self.run(who, "forge/cancel", {"runId": run_id,
                                                        "reason": form.get("reason", "")})
        elif action == "resume":
            done = await self.run(who, "forge/resume", {"runId": run_id, "wait": False})
        else:
            return HTMLResponse(page("Not found", "", who=who.name, error=action), 404)
        if not done.get("success"):
            return HTMLResponse(page("Refused", f'<a href="/console/runs/{e(run_id)}">back'
                                     "</a>", who=who.name, error=_error(done)), 409)
        return RedirectResponse(f"/console/runs/{run_id}", status_code=303)

    @signed_in
    async def artifact(self, request: Request, who: Principal) -> Response:
        aid = request.path_params["aid"]
        read = await self.run(who, "data/read", {"collection": A, "id": aid})
        item = read.get("data")
        if not item:
            return HTMLResponse(page("Artifact", "", who=who.name,
                                     error=_error(read) or f"no artifact {aid}"), 404)
        lineage = await self.run(who, "lineage/report", {"id": aid})
        verify = await self.run(who, "artifact/verify", {"subject": aid})
        run_id = item["provenance"]["runId"]
        replay = await self.run(who, "audit/replay", {"runId": run_id})
        results = item.get("results") or {}
        res = table(["Result", "Value"], [[e(k), value(v)] for k, v in results.items()])
        tiers = table(["Format", "Variants", "Devices", "Files"], [
            [e(t.get("format")), e(", ".join(t.get("variants") or [])),
             e(", ".join(t.get("targetDevices") or [])), e(_tier_files(item, t))]
            for t in item.get("quantTiers") or []], caption="Tiers")
        links = table(["Check", "Status", "Detail"], [
            [e(ln["name"]), f'<span class="{"ok" if ln["ok"] else "bad"}">{e(ln["status"])}'
             f"</span>", e(ln.get("detail"))] for ln in verify.get("links", [])],
            caption="Verify")
        verdict = "intact" if verify.get("ok") and replay.get("ok") else "BROKEN"
        css = "ok" if verdict == "intact" else "bad"
        problems = "".join(f"<li>{e(p)}</li>" for p in replay.get("problems") or [])
        body = (f'<p>Status <strong>{e(item.get("status"))}</strong> · run <a href="/console/'
                f'runs/{e(run_id)}">{e(run_id)[:8]}</a> · alloyHash <code>'
                f'{e(short(item.get("alloyHash")))}</code> · hardware '
                f'{value(item.get("hardwareVerified") or item.get("hardwareNode"))}</p>'
                f'<div class="grid"><section><h2>Results</h2>{res}{tiers}</section>'
                f'<section><h2>Lineage</h2>{lineage_svg(lineage, item)}</section></div>'
                f'<h2>Integrity: <span id="verdict" class="{css}">{verdict}</span></h2>'
                f'{links}<h3>Replay</h3><p id="replay">'
                f'{"replay matches the artifact" if replay.get("ok") else e(_error(replay))}'
                f'</p><ul id="problems">{problems}</ul><p><a id="audit-link" href="/console/'
                f'audit/{e(run_id)}">The audit report</a></p>')
        return HTMLResponse(page(f"Artifact {aid[:8]}", body, who=who.name))


    @signed_in
    async def audit(self, request: Request, who: Principal) -> Response:
        """The audit report of a run: replay against the artifact, every integrity link,
        and who changed the recipe it ran, when and why."""
        run_id = request.path_params["run_id"]
        replay = await self.run(who, "audit/replay", {"runId": run_id})
        if not replay.get("success"):
            return HTMLResponse(page("Audit", "", who=who.name, error=_error(replay)), 404)
        verify = await self.run(who, "artifact/verify", {"subject": run_id})
        lineage = await self.run(who, "lineage/report", {"id": run_id})
        ok = bool(replay.get("ok") and verify.get("ok"))
        checks = table(["Check", "Result"], [
            ["replay of the run's events", e("matches" if replay.get("ok") else "differs")],
            ["sealed alloyHash", f"<code>{e(replay.get('sealedAlloyHash'))}</code>"],
            ["replayed alloyHash", f"<code>{e(replay.get('replayedAlloyHash'))}</code>"],
            ["events replayed", e(replay.get("events"))],
            *[[e(f"verify: {ln['name']}"), f'<span class="{"ok" if ln["ok"] else "bad"}">'
               f'{e(ln["status"])}</span> {e(ln.get("detail"))}']
              for ln in verify.get("links", [])]])
        problems = "".join(f"<li>{e(p)}</li>" for p in replay.get("problems") or [])
        edits = table(["Revision", "Event", "Who", "When", "Why"], [
            [e(x.get("revision")), e(x.get("event")), e(x.get("author") or "-"), e(x.get("at")),
             e(x.get("reason"))] for x in lineage.get("edits") or []],
            caption="Who changed the recipe")
        verdict = "intact" if ok else "BROKEN"
        body = (f'<p>Run <a href="/console/runs/{e(run_id)}">{e(run_id)}</a>: <strong '
                f'id="verdict" class="{"ok" if ok else "bad"}">{verdict}</strong></p>{checks}'
                f'<ul id="problems">{problems}</ul>{edits}')
        return HTMLResponse(page("Audit report", body, who=who.name))


def _tier_files(item: dict[str, Any], tier: dict[str, Any]) -> str:
    files = [f for s in (item.get("provenance") or {}).get("stages") or []
             for f in s.get("files") or [] if str(tier.get("format")) in str(f.get("path", ""))]
    return ", ".join(f"{f.get('path')} ({f.get('size', '?')} B)" for f in files) or "-"


def console_routes(api: Host) -> list[Route]:
    c = RunPages(api)
    return [
        Route("/console/login", c.login, methods=["GET", "POST"]),
        Route("/console", c.recipes, methods=["GET"]),
        Route("/console/recipes", c.create, methods=["POST"]),
        Route("/console/recipes/{rid}", c.recipe, methods=["GET"]),
        Route("/console/recipes/{rid}/{action}", c.recipe_action, methods=["POST"]),
        Route("/console/runs", c.runs, methods=["GET"]),
        Route("/console/runs/{run_id}", c.run_page, methods=["GET"]),
        Route("/console/runs/{run_id}/{action}", c.run_action, methods=["POST"]),
        Route("/console/artifacts/{aid}", c.artifact, methods=["GET"]),
        Route("/console/audit/{run_id}", c.audit, methods=["GET"]),
    ]
