"""forge/publish end to end with the fake executors, on SQLite and PostgreSQL: to a directory
(file://) and to a local Hub (tests/hubserver.py, hf://), the gate, every Hub error, and a scan
for the Hub token in everything the foundry wrote or logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from foundry.adapters.publishing.cards import render_cards
from foundry.domain.artifact_builder import alloy_hash, artifact_id
from tests.conftest import PG_SERVER, ok, run_events
from tests.hubserver import HUB_CLIENT_TIMEOUT, HUB_TOKEN

A = "forge_artifacts"
R = "forge_recipes"
CARDS = ("README.md", "MODEL_METHODOLOGY.md")
REPO = "org/repo"


# --- fixtures and helpers ------------------------------------------------------------------

# The fake executors, a fresh state dir, no signing key (tests/conftest.py forge_env),
# set before the `foundry` fixture opens the store.
pytestmark = pytest.mark.usefixtures("forge_env")


def forged(foundry: Any, recipe: dict[str, Any], **params: Any) -> dict[str, Any]:
    recipe_id = ok(foundry.execute("data/create", {"collection": R, "data": recipe}))["id"]
    result = ok(foundry.execute("forge/run", {"recipeId": recipe_id, **params}))
    assert result["status"] == "completed", result
    return result


def publish(foundry: Any, some_id: str, target: str, **params: Any) -> dict[str, Any]:
    return foundry.execute("forge/publish", {"id": some_id, "target": target, **params})


def read_artifact(foundry: Any, run_id: str) -> dict[str, Any]:
    read = ok(foundry.execute("data/read", {"collection": A, "id": artifact_id(run_id)}))
    assert read["found"], read
    return dict(read["data"])


def names(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def expected_files(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The model files of the last stage and every GGUF of the quant stage, from the artifact's
    provenance: name -> file record."""
    stages = doc["provenance"]["stages"]
    files = {f["path"]: f for f in stages[-1]["files"] if f["role"] == "model"}
    quant = [s for s in stages if s["type"] == "quant"]
    assert len(quant) == 1
    ggufs = {f["path"]: f for f in quant[0]["files"] if f["path"].endswith(".gguf")}
    assert sorted(ggufs) == sorted(f"model-{t}.gguf" for t in quant[0]["config"]["quantTypes"])
    return {**files, **ggufs}


def assert_complete_publication(doc_before: dict[str, Any], files: dict[str, bytes],
                                target: str) -> dict[str, Any]:
    """The exact file set with the recorded bytes, the alloy as sealed plus the receipt of this
    publication, cards rendered from it. Returns the published alloy."""
    name = doc_before["recipeName"]
    records = expected_files(doc_before)
    assert sorted(files) == sorted([*records, f"{name}.alloy.json", *CARDS])
    for path, record in records.items():
        assert sha256(files[path]) == record["sha256"], path
        assert len(files[path]) == record["size"], path
    alloy = json.loads(files[f"{name}.alloy.json"])
    sealed = {k: v for k, v in doc_before.items() if k not in ("status", "receipt")}
    assert {k: v for k, v in alloy.items() if k != "receipt"} == sealed
    assert alloy_hash(alloy) == alloy["alloyHash"] == doc_before["alloyHash"]
    cards = render_cards(alloy)
    assert files["README.md"].decode("utf-8") == cards["README.md"]
    assert files["MODEL_METHODOLOGY.md"].decode("utf-8") == cards["MODEL_METHODOLOGY.md"]
    # The published alloy carries the receipt of this publication (`foundry verify FILE`).
    receipt = alloy["receipt"]
    [publication] = receipt["publications"]
    assert publication["target"] == target
    assert receipt["issuedAt"] == publication["publishedAt"]
    assert receipt["cardHash"] == sha256(files["README.md"])
    assert receipt["alloyHash"] == doc_before["alloyHash"]
    return dict(alloy)


def same_publication(a: dict[str, bytes], b: dict[str, bytes]) -> None:
    """Byte-identical but for the alloy's receipt, which names its own target and time."""
    assert sorted(a) == sorted(b)
    for name in a:
        if name.endswith(".alloy.json"):
            strip = [{k: v for k, v in json.loads(x[name]).items() if k != "receipt"}
                     for x in (a, b)]
            assert strip[0] == strip[1]
        else:
            assert a[name] == b[name], name


# --- publishing to a directory ---------------------------------------------------------------

def test_publishing_to_a_directory_writes_the_exact_file_set_and_a_receipt(
        foundry, recipe, tmp_path):
    run = forged(foundry, recipe)
    run_id = run["runId"]
    before = read_artifact(foundry, run_id)
    assert "receipt" not in before
    out = tmp_path / "out"
    target = f"file://{out}"

    result = ok(publish(foundry, run["artifactId"], target))
    files = folder_bytes(out)
    alloy = assert_complete_publication(before, files, target)
    assert sorted(result["files"]) == sorted(files)
    assert result["files"][-2:] == list(CARDS)  # the cards go last
    assert result["url"] == out.resolve().as_uri() and result["forced"] is False
    readme_hash = sha256(files["README.md"])
    assert result["cardHash"] == readme_hash

    after = read_artifact(foundry, run_id)
    receipt = after["receipt"]
    published = run_events(foundry, run_id)[-1]
    assert type(published).__name__ == "Published"
    assert receipt["publications"] == [
        {"target": target, "url": out.resolve().as_uri(), "publishedAt": published.at}]
    assert receipt == alloy["receipt"]  # the file's receipt is the one recorded
    assert receipt["cardHash"] == readme_hash
    assert receipt["issuedAt"] == published.at
    assert receipt["alloyHash"] == after["alloyHash"] == before["alloyHash"] == run["alloyHash"]
    assert alloy_hash({k: v for k, v in after.items() if k != "status"}) == before["alloyHash"]
    assert {k: v for k, v in after.items() if k != "receipt"} == before
    assert sorted(published.files) == sorted(files) and published.forced is False

    # Publishing again by run id (not artifact id) adds a publication; the first stays the issue.
    again = ok(publish(foundry, run_id, f"file://{tmp_path / 'again'}"))
    same_publication(folder_bytes(tmp_path / "again"), files)
    receipt2 = read_artifact(foundry, run_id)["receipt"]
    assert [p["target"] for p in receipt2["publications"]] == [target, again["target"]]
    assert receipt2["issuedAt"] == receipt["issuedAt"]
    assert receipt2["alloyHash"] == before["alloyHash"]

    # A target that is neither file:// nor hf:// is refused before anything is written.
    events = len(run_events(foundry, run_id))
    refused = publish(foundry, run_id, "ftp://example.org/x")
    assert refused["success"] is False and refused["errorCode"] == "invalid_input"
    assert "target" in refused["error"]
    assert len(run_events(foundry, run_id)) == events


def test_forge_run_with_a_publish_target_publishes_once_the_run_completed(
        foundry, recipe, tmp_path):
    out = tmp_path / "out"
    run = forged(foundry, recipe, publishTarget=f"file://{out}")
    assert run["publication"]["target"] == f"file://{out}"
    assert names(run_events(foundry, run["runId"]))[-2:] == ["Completed", "Published"]
    doc = read_artifact(foundry, run["runId"])
    assert [p["target"] for p in doc["receipt"]["publications"]] == [f"file://{out}"]
    assert_complete_publication({k: v for k, v in doc.items() if k != "receipt"},
                                folder_bytes(out), f"file://{out}")


# --- publishing to the Hub -------------------------------------------------------------------

def test_publishing_to_the_hub_sends_the_same_files_in_two_commits_cards_last(
        hub, foundry, recipe, tmp_path):
    run = forged(foundry, recipe)
    before = read_artifact(foundry, run["runId"])
    ok(publish(foundry, run["artifactId"], f"file://{tmp_path / 'out'}"))
    local = folder_bytes(tmp_path / "out")

    result = ok(publish(foundry, run["artifactId"], f"hf://{REPO}"))
    assert result["url"] == f"{hub.url}/{REPO}"
    assert list(hub.repos) == [REPO]
    assert hub.created == [{"name": "repo", "organization": "org", "visibility": "public"}]
    commits = hub.commits_to(REPO)
    assert len(commits) == 2
    weights, cards = commits
    assert sorted(weights.files) == sorted(set(local) - set(CARDS))
    assert sorted(cards.files) == sorted(CARDS)
    assert weights.message == "foundry: weights, GGUF tiers and the alloy"
    assert cards.message == "foundry: model cards"
    same_publication(hub.files(REPO), local)  # the file:// set, byte for byte
    assert_complete_publication(before, hub.files(REPO), f"hf://{REPO}")
    published = run_events(foundry, run["runId"])[-1]
    assert sorted(published.files) == sorted(local)
    assert hub.unknown == []
    assert hub.auth_headers and set(hub.auth_headers) == {f"Bearer {HUB_TOKEN}"}

    receipt = read_artifact(foundry, run["runId"])["receipt"]
    assert receipt["publications"][-1]["target"] == f"hf://{REPO}"
    assert receipt["publications"][-1]["url"] == f"{hub.url}/{REPO}"
    assert receipt["cardHash"] == sha256(local["README.md"])
    assert receipt["alloyHash"] == before["alloyHash"]

    # Publishing the same artifact again: the repo exists (409 swallowed); only the alloy's
    # receipt changed, so only the alloy is committed, and the publication is recorded.
    ok(publish(foundry, run["artifactId"], f"hf://{REPO}"))
    commits = hub.commits_to(REPO)
    assert len(commits) == 3 and list(commits[2].files) == [f"{before['recipeName']}.alloy.json"]
    assert len(read_artifact(foundry, run["runId"])["receipt"]["publications"]) == 3


def test_a_directory_publish_after_a_hub_publish_writes_the_same_file_set(
        hub, foundry, recipe, tmp_path):
    run = forged(foundry, recipe)
    before = read_artifact(foundry, run["runId"])
    ok(publish(foundry, run["artifactId"], f"hf://{REPO}"))
    published = run_events(foundry, run["runId"])[-1]
    assert sorted(published.files) == sorted(hub.files(REPO))
    out = tmp_path / "out"
    result = publish(foundry, run["artifactId"], f"file://{out}")
    assert result["success"], result
    assert_complete_publication(before, folder_bytes(out), f"file://{out}")
    assert sorted(run_events(foundry, run["runId"])[-1].files) == sorted(folder_bytes(out))


# --- the gate --------------------------------------------------------------------------------

def test_a_failed_gate_refuses_to_publish_unless_forced_with_a_reason(foundry, recipe, tmp_path):
    recipe["priorMetricBaselines"] = [{  # no perplexity the fake eval reports is below 0.5
        "metric": "perplexity", "value": 0.5, "source": "an impossible run",
        "measuredAt": "2026-01-01T00:00:00+00:00", "measurementMethod": "fake eval"}]
    out = tmp_path / "out"
    run = forged(foundry, recipe, publishTarget=f"file://{out}")
    run_id = run["runId"]
    assert run["gate"]["passed"] is False
    assert "priorMetricBaselines.perplexity" in run["gate"]["reasons"][0]
    assert "gate failed" in run["publishError"] and "publication" not in run
    assert not out.exists()

    for params in ({}, {"force": True}, {"force": True, "reason": "   "}):
        refused = publish(foundry, run_id, f"file://{out}", **params)
        assert refused["success"] is False, params
        assert refused["errorCode"] == "illegal_transition", refused
        assert "gate failed" in refused["error"] and "reason" in refused["error"]
        assert "priorMetricBaselines.perplexity" in refused["error"]
    assert not out.exists()
    assert names(run_events(foundry, run_id))[-1] == "Completed"
    assert "receipt" not in read_artifact(foundry, run_id)

    reason = "a baseline from a different tokenizer; reviewed by ana"
    result = ok(publish(foundry, run_id, f"file://{out}", force=True, reason=reason))
    assert result["forced"] is True
    published = run_events(foundry, run_id)[-1]
    assert type(published).__name__ == "Published"
    assert published.forced is True and published.force_reason == reason
    doc = read_artifact(foundry, run_id)
    assert doc["receipt"]["publications"][0]["target"] == f"file://{out}"
    assert doc["provenance"]["gate"]["passed"] is False  # forcing does not rewrite the gate
    assert_complete_publication({k: v for k, v in doc.items() if k != "receipt"},
                                folder_bytes(out), f"file://{out}")


# --- Hub errors ------------------------------------------------------------------------------

# The timeout case relies on the `hub` fixture giving huggingface_hub's shared client a short
# timeout: adapters/hub.py sets none, and the library's default client has none, so a hub that
# stops answering would hang forge/publish forever (reported; FOUNDRY_HUB_TIMEOUT is set for a
# fix that reads it).
CREATE = "/api/repos/create"
COMMIT = f"/api/models/{REPO}/commit"
HUB_ERRORS = {
    # create_repo(exist_ok=True) checks whether the repo exists after a 401: it does not.
    "401 on create": (CREATE, 401),
    "500 on create": (CREATE, 500),  # create_repo does not retry
    "404 on commit": (COMMIT, 404),
    "409 on commit": (COMMIT, 409),  # the commit is retried only on 408/429/5xx
    "timeout on create": (CREATE, None),
}


@pytest.mark.parametrize("case", list(HUB_ERRORS))
def test_a_hub_error_is_recorded_leaves_the_run_sealed_and_a_retry_publishes(
        hub, foundry, recipe, case):
    prefix, status = HUB_ERRORS[case]
    run = forged(foundry, recipe)
    run_id = run["runId"]
    before = read_artifact(foundry, run_id)
    request_id = f"req-{case.replace(' ', '-')}"
    if status is None:
        hub.fail_next(prefix, None, request_id=request_id, delay=HUB_CLIENT_TIMEOUT + 1.0)
    else:
        hub.fail_next(prefix, status, request_id=request_id)

    failed = publish(foundry, run["artifactId"], f"hf://{REPO}")
    assert failed["success"] is False, failed
    assert failed["errorCode"] == "publish_failed"
    assert f"hf://{REPO}" in failed["error"]
    event = run_events(foundry, run_id)[-1]
    assert type(event).__name__ == "PublishFailed"
    assert event.target == f"hf://{REPO}" and event.message == failed["error"]
    if status is None:
        assert "timed out" in failed["error"]
        assert event.status is None and event.error_type == "PublishTimeoutError"
    else:
        assert f"HTTP {status}" in failed["error"] and request_id in failed["error"]
        assert event.status == status and event.request_id == request_id
    assert hub.commits == []
    path = prefix + ("/main" if prefix == COMMIT else "")
    assert hub.injected == [(path, status, request_id)]

    status_now = ok(foundry.execute("forge/status", {"runId": run_id}))
    assert status_now["status"] == "completed" and status_now["alloyHash"] == run["alloyHash"]
    doc = read_artifact(foundry, run_id)
    assert doc == before  # still sealed and completed, no receipt
    assert doc["status"] == "completed" and "receipt" not in doc

    hub.heal()
    retried = ok(publish(foundry, run["artifactId"], f"hf://{REPO}"))
    assert retried["url"] == f"{hub.url}/{REPO}"
    assert len(hub.commits_to(REPO)) == 2
    assert_complete_publication(before, hub.files(REPO), f"hf://{REPO}")
    assert names(run_events(foundry, run_id))[-2:] == ["PublishFailed", "Published"]
    receipt = read_artifact(foundry, run_id)["receipt"]
    assert [p["target"] for p in receipt["publications"]] == [f"hf://{REPO}"]


# --- the token never lands anywhere ----------------------------------------------------------

def stored_text(store_url: str) -> bytes:
    """Every row of every table in the test's PostgreSQL schema, as text."""
    schema = store_url.rsplit("schema=", 1)[1]
    chunks: list[bytes] = []
    with psycopg.connect(PG_SERVER) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            [schema])]
        assert tables, schema
        for table in tables:
            for (row,) in conn.execute(f'SELECT t::text FROM "{schema}"."{table}" t'):
                chunks.append(row.encode())
    return b"\n".join(chunks)


def event_payloads(foundry: Any, run_id: str) -> bytes:
    return b"\n".join(bytes(s.state) for s in
                      foundry.runs.recorder.select_events(UUID(run_id)))


def test_the_hub_token_is_never_stored_logged_or_published(
        hub, foundry, recipe, tmp_path, store_url, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    hf_logger = logging.getLogger("huggingface_hub")
    hf_logger.addHandler(caplog.handler)
    secret = HUB_TOKEN.encode()
    try:
        run = forged(foundry, recipe, publishTarget=f"file://{tmp_path / 'out'}")
        ok(publish(foundry, run["artifactId"], f"hf://{REPO}"))
        # A hub whose error echoes the token back must not get it recorded either.
        hub.fail_next("/api/repos/create", 401, request_id="req-leak",
                      message=f"invalid token {HUB_TOKEN}")
        failed = publish(foundry, run["artifactId"], "hf://org/other")
        hub.fail_next(COMMIT, 409, request_id="req-leak-2", message=f"bad {HUB_TOKEN}")
        conflict = publish(foundry, run["artifactId"], f"hf://{REPO}")
    finally:
        hf_logger.removeHandler(caplog.handler)
    assert failed["success"] is False and "req-leak" in failed["error"]
    assert conflict["success"] is False and "req-leak-2" in conflict["error"]
    assert HUB_TOKEN not in json.dumps([failed, conflict])
    # The token was really used, so not finding it below means something.
    assert set(hub.auth_headers) == {f"Bearer {HUB_TOKEN}"}
    assert names(run_events(foundry, run["runId"]))[-4:] == [
        "Published", "Published", "PublishFailed", "PublishFailed"]
    assert secret not in event_payloads(foundry, run["runId"])

    scanned = []
    for path in tmp_path.rglob("*"):  # SQLite files (+ WAL), FOUNDRY_STATE_DIR, file:// output
        if path.is_file():
            assert secret not in path.read_bytes(), path
            scanned.append(path.name)
    assert "README.md" in scanned
    if store_url.startswith("sqlite"):
        assert {"foundry.db", "foundry.runs.db", "foundry.views.db"} <= set(scanned)
    else:
        text = stored_text(store_url)
        assert b"PublishFailed" in text and secret not in text
    captured = capsys.readouterr()
    assert "run_completed" in captured.out + captured.err  # the structlog lines were captured
    assert HUB_TOKEN not in captured.out and HUB_TOKEN not in captured.err
    assert any(r.name.startswith("huggingface_hub") for r in caplog.records)  # it was listening
    assert HUB_TOKEN not in caplog.text
    assert all(HUB_TOKEN not in r.getMessage() for r in caplog.records)
