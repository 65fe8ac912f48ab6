"""The web console's HTML: plain server-rendered pages (no build step, no framework), a
little JavaScript for the live run page. Every value is escaped; every control is labelled."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from foundry.domain.values.artifact import ArtifactDocument

CSS = """
*{box-sizing:border-box}body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1b1f24}
header{background:#1f2937;color:#fff;padding:.6rem 1rem;display:flex;gap:1rem;flex-wrap:wrap}
header a{color:#fff}main{padding:1rem;max-width:1200px;margin:auto}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{border-bottom:1px solid #ddd;
padding:.3rem .5rem;text-align:left;vertical-align:top}
.wrap{overflow-x:auto}.alert{background:#fde2e1;border:1px solid #c0392b;padding:.5rem}
.ok{color:#17663a}.bad{color:#b42318;font-weight:600}code{word-break:break-all}
form{margin:.5rem 0}label{display:block;font-weight:600;margin-top:.4rem}
input,textarea,select,button{font:inherit;max-width:100%}textarea{width:100%}
button{padding:.3rem .8rem}a:focus,button:focus,input:focus{outline:3px solid #f59e0b}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:1rem}
svg text{font-size:12px}
"""


def e(value: Any) -> str:
    """Escaped text of any value (None as an empty string)."""
    return "" if value is None else escape(str(value))


def page(title: str, body: str, *, who: str = "", error: str = "", script: str = "") -> str:
    nav = ('<nav aria-label="main"><a href="/console">Recipes</a> · '
           '<a href="/console/runs">Runs</a></nav>') if who else ""
    alert = f'<div class="alert" role="alert">{e(error)}</div>' if error else ""
    user = f"<span>signed in as <strong>{e(who)}</strong></span>" if who else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e(title)} · Foundry</title><style>{CSS}</style></head><body>"
            f"<header><strong>Foundry</strong>{nav}{user}</header>"
            f"<main><h1>{e(title)}</h1>{alert}{body}</main>{script}</body></html>")


def table(headers: list[str], rows: list[list[str]], *, caption: str = "",
          row_ids: list[str] | None = None) -> str:
    """Cells are HTML already (escape with e())."""
    head = "".join(f'<th scope="col">{e(h)}</th>' for h in headers)
    body = "".join(
        f'<tr{f" id={chr(34)}{row_ids[i]}{chr(34)}" if row_ids else ""}>'
        + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for i, row in enumerate(rows))
    cap = f"<caption>{e(caption)}</caption>" if caption else ""
    return f'<div class="wrap"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}' \
           f"</tbody></table></div>"


def short(digest: Any) -> str:
    text = str(digest or "")
    return text.removeprefix("sha256:")[:12]


def value(v: Any) -> str:
    if isinstance(v, dict | list):
        return f"<code>{e(json.dumps(v, ensure_ascii=False)[:400])}</code>"
    return e(v)


def lineage_svg(report: dict[str, Any], artifact: ArtifactDocument) -> str:
    """Base model -> recipe version -> stages (output hashes) -> artifact: a column of boxes
    joined by arrows; each box names what it is and its hash."""
    run = (report.get("runs") or [{}])[0]
    nodes = [("base model", str((run.get("source") or {}).get("baseModel") or ""),
              short((run.get("source") or {}).get("sourceHash")))]
    recipe = report.get("recipe") or {}
    nodes.append(("recipe", f"{recipe.get('name', '')} v{run.get('recipeVersion', '')} "
                  f"(rev {run.get('recipeRevision', '')})", short(run.get("recipeHash"))))
    for stage in run.get("stages") or []:
        nodes.append((f"stage {stage.get('cycle')}:{stage.get('index')}",
                      str(stage.get("type")), short(stage.get("outputHash"))))
    nodes.append(("artifact", str(artifact.get("id", ""))[:18], short(artifact.get("alloyHash"))))
    height, parts = 70 * len(nodes), []
    for i, (kind, label, digest) in enumerate(nodes):
        y = 10 + 70 * i
        parts.append(f'<g class="node" data-kind="{e(kind)}"><rect x="10" y="{y}" width="420" '
                     f'height="46" rx="6" fill="#eef2ff" stroke="#4338ca"/>'
                     f'<text x="20" y="{y + 19}">{e(kind)}: {e(label)}</text>'
                     f'<text x="20" y="{y + 37}">{e(digest)}</text></g>')
        if i:
            parts.append(f'<line x1="220" y1="{y - 24}" x2="220" y2="{y}" stroke="#4338ca" '
                         f'marker-end="url(#arrow)"/>')
    return (f'<svg role="img" aria-label="lineage graph" id="lineage" width="440" '
            f'height="{height}" viewBox="0 0 440 {height}"><defs><marker id="arrow" '
            f'viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" '
            f'orient="auto"><path d="M0,0L10,5L0,10z" fill="#4338ca"/></marker></defs>'
            + "".join(parts) + "</svg>")


LIVE_RUN_JS = """
<script>
(function(){
  const runId = document.body.dataset.run; let last = document.body.dataset.last;
  window.consoleLoaded = window.consoleLoaded || Date.now();
  const status = document.getElementById('run-status');
  const losses = [];
  function row(c, i, type){
    let tr = document.getElementById('stage-' + c + '-' + i);
    if(!tr){ tr = document.createElement('tr'); tr.id = 'stage-' + c + '-' + i;
      tr.innerHTML = '<td>' + c + ':' + i + '</td><td>' + (type||'') + '</td>' +
        '<td class="st"></td><td><progress max="1" value="0"></progress></td>' +
        '<td class="sec"></td><td class="met"></td>';
      document.querySelector('#stages tbody').appendChild(tr); }
    return tr;
  }
  function curve(){
    const svg = document.getElementById('loss'); if(!losses.length){return;}
    const max = Math.max.apply(null, losses), min = Math.min.apply(null, losses);
    const pts = losses.map((v, k) => (10 + k * 380 / Math.max(1, losses.length - 1)) + ',' +
      (110 - 100 * (v - min) / Math.max(1e-9, max - min))).join(' ');
    svg.querySelector('polyline').setAttribute('points', pts);
  }
  const source = new EventSource('/v1/runs/' + runId + '/events?lastEventId=' + last);
  source.onmessage = null;
  ['StageStarted','StageProgressed','StageCompleted','StageFailed','Started','Completed',
   'Failed','Cancelled','Sealed'].forEach(function(name){
    source.addEventListener(name, function(ev){
      const d = JSON.parse(ev.data);
      if(name.startsWith('Stage')){
        const tr = row(d.cycle, d.index, d.stage_type);
        if(name === 'StageStarted'){ tr.querySelector('.st').textContent = 'running'; }
        if(name === 'StageProgressed'){ tr.querySelector('progress').value = d.fraction;
          const m = /loss[=: ]+([0-9.]+)/i.exec(d.message || '');
          if(m){ losses.push(parseFloat(m[1])); curve(); } }
        if(name === 'StageCompleted'){ tr.querySelector('.st').textContent = 'completed';
          tr.querySelector('progress').value = 1;
          tr.querySelector('.met').textContent = JSON.stringify(d.metrics || {});
          const l = (d.metrics || {}).finalLoss; if(l !== undefined){ losses.push(l); curve(); } }
        if(name === 'StageFailed'){ tr.querySelector('.st').textContent = 'failed'; }
      } else {
        status.textContent = {Started:'running', Sealed:'sealed', Completed:'completed',
          Failed:'failed', Cancelled:'cancelled'}[name];
        if(['Completed','Failed','Cancelled'].includes(name)){ source.close();
          document.getElementById('artifact-link').hidden = false; }
      }
    });
  });
})();
</script>
"""
