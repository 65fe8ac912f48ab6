"""Reads stay inside what a run should read (#17 item 10): the attacks of the issue, real files.

`calibrationCorpus.sourceUrl: /etc/passwd` was hashed (the hash printed in the error), `/usr`
hashed for minutes, and a `baseModel` directory copied whole into the blob store, a `.ssh/`
inside it included. Each test below fails against that code.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from foundry.adapters.store.blobs import BlobStore
from foundry.executors.read_roots import ReadRefusedError
from foundry.executors.real.data import resolve_corpus, resolve_source_url
from foundry.executors.real.sources import resolve_source


def _recipe(url: str, content_hash: str = "sha256:" + "0" * 64) -> dict[str, object]:
    return {"calibrationCorpus": {"name": "c", "contentHash": content_hash, "sizeBytes": 1,
                                  "sourceUrl": url}}


def test_etc_passwd_as_a_corpus_is_refused_before_it_is_hashed() -> None:
    real_hash = "sha256:" + hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    with pytest.raises(ReadRefusedError) as raised:
        resolve_corpus(_recipe("/etc/passwd"))
    message = str(raised.value)
    assert "calibrationCorpus.sourceUrl" in message and "/etc/passwd" in message
    assert "FOUNDRY_MODEL_ROOTS" in message
    assert real_hash.removeprefix("sha256:") not in message and "sha256:" not in message
    with pytest.raises(ReadRefusedError):
        resolve_source_url("file:///etc/passwd")


def test_a_system_directory_as_a_corpus_is_refused_at_once() -> None:
    start = time.monotonic()
    with pytest.raises(ReadRefusedError):
        resolve_corpus(_recipe("/usr"))
    assert time.monotonic() - start < 2.0  # nothing under /usr was read


def test_a_corpus_under_a_read_root_still_resolves(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.txt").write_text("def f():\n    return 1\n")
    assert resolve_source_url(str(corpus)) == corpus.resolve()


def test_a_root_is_the_operators_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("text")
    monkeypatch.setenv("FOUNDRY_MODEL_ROOTS", str(tmp_path / "elsewhere"))
    with pytest.raises(ReadRefusedError):
        resolve_source_url(str(corpus))
    monkeypatch.setenv("FOUNDRY_MODEL_ROOTS", os.pathsep.join(["/nonexistent", str(tmp_path)]))
    assert resolve_source_url(str(corpus)) == corpus.resolve()


def test_a_corpus_holding_a_fifo_or_a_link_out_is_refused(tmp_path: Path) -> None:
    fifo_dir = tmp_path / "fifo"
    fifo_dir.mkdir()
    (fifo_dir / "a.txt").write_text("a")
    os.mkfifo(fifo_dir / "pipe.txt")
    with pytest.raises(ReadRefusedError, match=r"pipe\.txt"):
        resolve_source_url(str(fifo_dir))

    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "secret.txt").symlink_to("/etc/passwd")
    with pytest.raises(ReadRefusedError, match=r"secret\.txt"):
        resolve_source_url(str(linked))

    # A corpus file that is itself a link to a file outside every root.
    (tmp_path / "passwd.txt").symlink_to("/etc/passwd")
    with pytest.raises(ReadRefusedError):
        resolve_source_url(str(tmp_path / "passwd.txt"))


def test_a_corpus_over_the_size_cap_is_refused(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 2048)
    monkeypatch.setenv("FOUNDRY_CORPUS_MAX_BYTES", "1024")
    with pytest.raises(ReadRefusedError, match="limits"):
        resolve_source_url(str(big))
    monkeypatch.setenv("FOUNDRY_CORPUS_MAX_BYTES", "4096")
    assert resolve_source_url(str(big)) == big.resolve()


def test_a_base_model_outside_the_roots_is_refused(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert resolve_source({"baseModel": str(model)}) == model.resolve()
    with pytest.raises(ReadRefusedError, match=r"source\.baseModel"):
        resolve_source({"baseModel": "/etc"})
    monkeypatch.setenv("FOUNDRY_MODEL_ROOTS", str(tmp_path / "elsewhere"))
    with pytest.raises(ReadRefusedError, match=r"source\.baseModel"):
        resolve_source({"baseModel": str(model)})


def test_only_the_models_files_are_stored_from_a_source_dir(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / ".ssh").mkdir(parents=True)
    (model / ".ssh" / "id_rsa").write_text("PRIVATE KEY")
    (model / ".env").write_text("HF_TOKEN=hf_secret")
    (model / "notes.md").write_text("not a model file")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer.model",
                 "generation_config.json", "merges.txt"):
        (model / name).write_text(name)

    records = BlobStore(tmp_path / "blobs").put_dir(model, role="source")

    assert sorted(r.path for r in records) == [
        "config.json", "generation_config.json", "merges.txt", "model.safetensors",
        "tokenizer.json", "tokenizer.model"]
    # A stage's own output directory is stored whole, as before.
    outputs = BlobStore(tmp_path / "blobs").put_dir(model, role="model")
    assert "notes.md" in {r.path for r in outputs}


def test_the_state_dir_a_foundry_opens_is_a_read_root(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Rehearsal twins and stand-in corpora live in the state dir, which by default is not
    FOUNDRY_STATE_DIR but next to the store: opening the store grants it."""
    from foundry.adapters.bootstrap import Foundry

    monkeypatch.setenv("FOUNDRY_MODEL_ROOTS", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("FOUNDRY_STATE_DIR", raising=False)
    state = tmp_path / "state-next-to-store"
    corpus = state / "rehearsal" / "stand-in.txt"
    corpus.parent.mkdir(parents=True)
    corpus.write_text("text")
    with pytest.raises(ReadRefusedError):
        resolve_source_url(str(corpus))
    with Foundry.open(f"sqlite:///{tmp_path}/f.db", state_dir=state):
        assert resolve_source_url(str(corpus)) == corpus.resolve()
