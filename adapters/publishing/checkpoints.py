"""Signed checkpoints over both event logs (#17 item 3): a consistent rewrite becomes detectable.

Someone with write access to the database can rewrite events so that every replay agrees with
itself (a metric and the Sealed hash changed together, a recipe and its pin). A checkpoint
pins the logs as they were: for each log (recipes, runs) a SHA-256 chained over every stored
row up to a notification id (id, aggregate, version, topic and state bytes, length-prefixed),
each checkpoint's digest starting from the previous one's, so a checkpoint covers the whole
log before it while hashing only the rows added since. The record is signed with the store's
signing key (`foundry keys create`) and appended to `checkpoints.jsonl` in the state directory,
outside the database: a database writer can neither forge one (no key) nor remove one.

`verify_checkpoints` recomputes every digest from the database and checks every signature
against the key in the keys directory; a row changed, inserted or deleted at or before a
checkpoint's position is reported naming the log and checkpoint. Rows after the last
checkpoint are covered by nothing yet: the report says how many.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from foundry.adapters.clock import utc_now
from foundry.domain.errors import InvalidInputError
from foundry.domain.hashing import canonical_json

if TYPE_CHECKING:
    from eventsourcing.application import Application

CHECKPOINTS_FILE = "checkpoints.jsonl"
PAGE = 500


def _logs(services: Any) -> dict[str, Application[Any]]:
    return {"recipes": services.recipes, "runs": services.runs}


def _chain(app: Application[Any], prev: str, after: int, upto: int | None
           ) -> tuple[str, int, int]:
    """(digest, last notification id, rows) chained from `prev` over ids in (after, upto]."""
    h = hashlib.sha256(bytes.fromhex(prev) if prev else b"")
    last, rows, start = after, 0, after + 1
    while True:
        page = app.recorder.select_notifications(start=start, limit=PAGE, stop=upto)
        for n in page:
            head = f"{n.id}\x1f{n.originator_id}\x1f{n.originator_version}\x1f{n.topic}\x1f"
            state = bytes(n.state)
            h.update(head.encode() + len(state).to_bytes(8, "big") + state)
            last, rows = n.id, rows + 1
        if len(page) < PAGE or (upto is not None and last >= upto):
            return h.hexdigest(), last, rows
        start = last + 1


def _read(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / CHECKPOINTS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def write_checkpoint(services: Any) -> dict[str, Any]:
    """Append a signed checkpoint of both logs as they are now."""
    from foundry.adapters.publishing.attestation import load_key

    keys = services.settings.keys
    key = load_key(keys.dir, keys.passphrase)
    if key is None:
        raise InvalidInputError("key", "no signing key: checkpoints are signed (run `foundry "
                                "keys create` first)")
    private_key, info = key
    previous = _read(services.state_dir)
    last = previous[-1] if previous else None
    logs: dict[str, Any] = {}
    for name, app in _logs(services).items():
        before: dict[str, Any] = last["logs"][name] if last else {"upto": 0, "digest": ""}
        digest, upto, rows = _chain(app, before["digest"], before["upto"], None)
        logs[name] = {"upto": upto, "digest": digest, "rows": before.get("rows", 0) + rows}
    body = {"seq": len(previous) + 1, "at": utc_now(), "keyId": info.key_id, "logs": logs}
    signature = private_key.sign(canonical_json(body), ec.ECDSA(hashes.SHA256()))
    record = {**body, "signature": base64.b64encode(signature).decode()}
    services.state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(services.state_dir / CHECKPOINTS_FILE,
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    return record


def verify_checkpoints(services: Any) -> dict[str, Any]:
    """Every checkpoint's signature and digests, recomputed from the database."""
    from foundry.adapters.publishing.key_files import PUBLIC_KEY_FILE

    records = _read(services.state_dir)
    public_path = services.settings.keys.dir / PUBLIC_KEY_FILE
    public = (serialization.load_pem_public_key(public_path.read_bytes())
              if public_path.is_file() else None)
    problems: list[str] = []
    prev: dict[str, dict[str, Any]] = {name: {"upto": 0, "digest": ""}
                                       for name in _logs(services)}
    for record in records:
        seq = record.get("seq")
        body = {k: v for k, v in record.items() if k != "signature"}
        if not isinstance(public, ec.EllipticCurvePublicKey):
            problems.append(f"checkpoint {seq}: no public key in {public_path} to check it")
        else:
            try:
                public.verify(base64.b64decode(record["signature"]), canonical_json(body),
                              ec.ECDSA(hashes.SHA256()))
            except (InvalidSignature, ValueError, KeyError):
                problems.append(f"checkpoint {seq}: signature does not verify")
        for name, app in _logs(services).items():
            pinned = record["logs"][name]
            digest, _last, _rows = _chain(app, prev[name]["digest"], prev[name]["upto"],
                                          pinned["upto"])
            if digest != pinned["digest"]:
                problems.append(f"checkpoint {seq}: the {name} log up to notification "
                                f"{pinned['upto']} is not what was checkpointed (a row was "
                                "changed, inserted or deleted)")
            prev[name] = {"upto": pinned["upto"], "digest": pinned["digest"]}
    uncovered = {name: _chain(app, "", prev[name]["upto"], None)[2]
                 for name, app in _logs(services).items()}
    return {"ok": not problems, "checkpoints": len(records), "problems": problems,
            "rowsAfterLastCheckpoint": uncovered}
