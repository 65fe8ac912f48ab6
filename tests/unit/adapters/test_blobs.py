"""The blob store: atomic puts, no overwrites, verification, materialization, tree hashes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO

import pytest
from structlog.testing import capture_logs

from foundry.adapters.store import blobs
from foundry.adapters.store.blobs import (
    BlobCorruptError,
    BlobMissingError,
    BlobRef,
    BlobStore,
    FileRecord,
    hash_dir,
    tree_hash,
)
from foundry.domain.hashing import content_hash


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "config.json": b'{"a": 1}',
        "model.safetensors": os.urandom(3 * 1024 + 7),
        "sub/dir/tokenizer.json": b"tok" * 100,
        "empty.txt": b"",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def flip_first_byte(path: Path) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


def leftovers(store: BlobStore) -> list[Path]:
    return [p for p in store.root.rglob("*") if p.is_file() and p.name.endswith(".tmp")]


def test_put_file_stores_under_its_hash(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    src = tmp_path / "a.bin"
    src.write_bytes(b"hello")
    ref = store.put_file(src)
    hexdigest = hashlib.sha256(b"hello").hexdigest()
    assert ref == BlobRef(sha256="sha256:" + hexdigest, size=5)
    assert store.path_of(ref.sha256) == tmp_path / "store" / "sha256" / hexdigest[:2] / hexdigest
    assert store.path_of(hexdigest) == store.path_of(ref.sha256)
    assert store.path_of(ref.sha256).read_bytes() == b"hello"
    assert store.has(ref.sha256) and store.verify(ref.sha256)
    assert not store.has(sha(b"other"))
    assert leftovers(store) == []
    with pytest.raises(ValueError, match="not a sha256"):
        store.path_of("sha256:../../etc/passwd")


def test_a_crash_mid_copy_leaves_no_final_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BlobStore(tmp_path / "store")
    src = tmp_path / "big.bin"
    data = os.urandom(10_000)
    src.write_bytes(data)
    monkeypatch.setattr(blobs, "_CHUNK", 1024)
    calls: list[int] = []

    def crashing_write(fh: IO[bytes], chunk: bytes) -> None:
        calls.append(len(chunk))
        if len(calls) == 3:
            raise OSError("disk full")
        fh.write(chunk)

    monkeypatch.setattr(blobs, "_write_chunk", crashing_write)
    with pytest.raises(OSError, match="disk full"):
        store.put_file(src)
    assert len(calls) == 3
    assert not store.has(sha(data))
    assert not store.path_of(sha(data)).exists()
    assert [p for p in store.root.rglob("*") if p.is_file()] == []


def test_an_existing_blob_is_not_overwritten(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    src = tmp_path / "a.bin"
    src.write_bytes(b"same bytes")
    ref = store.put_file(src)
    final = store.path_of(ref.sha256)
    before = final.stat()
    assert store.put_file(src) == ref
    after = final.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert leftovers(store) == []


def test_a_corrupt_blob_is_repaired_on_put_and_logged(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    src = tmp_path / "a.bin"
    src.write_bytes(b"precious weights")
    ref = store.put_file(src)
    flip_first_byte(store.path_of(ref.sha256))
    assert not store.verify(ref.sha256)
    with capture_logs() as logs:
        assert store.put_file(src) == ref
    assert store.verify(ref.sha256)
    assert [entry["event"] for entry in logs] == ["blob_repaired"]
    assert logs[0]["sha256"] == ref.sha256 and logs[0]["log_level"] == "warning"
    assert leftovers(store) == []


def test_verify_and_verify_records_detect_a_flipped_byte_and_a_missing_blob(
    tmp_path: Path,
) -> None:
    make_tree(tmp_path / "model")
    store = BlobStore(tmp_path / "store")
    records = store.put_dir(tmp_path / "model", role="model")
    assert store.verify_records(records) == []
    weights = next(r for r in records if r.path == "model.safetensors")
    flip_first_byte(store.path_of(weights.sha256))
    assert not store.verify(weights.sha256)
    config = next(r for r in records if r.path == "config.json")
    store.path_of(config.sha256).unlink()
    assert not store.verify(config.sha256)
    assert store.verify_records(records) == ["config.json", "model.safetensors"]


def test_put_dir_records_every_file_sorted_with_its_role(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "model")
    store = BlobStore(tmp_path / "store")
    records = store.put_dir(tmp_path / "model", role="model")
    assert [r.path for r in records] == sorted(files)
    for record in records:
        assert record.sha256 == sha(files[record.path])
        assert record.size == len(files[record.path])
        assert record.role == "model"
        assert FileRecord.from_dict(record.to_dict()) == record
    assert set(records[0].to_dict()) == {"path", "sha256", "size", "role"}


def test_materialize_reproduces_the_files(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "model")
    store = BlobStore(tmp_path / "store")
    records = store.put_dir(tmp_path / "model", role="model")
    dest = tmp_path / "out"
    store.materialize(records, dest)
    restored = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*")
                if p.is_file()}
    assert restored == files
    assert hash_dir(dest) == tree_hash(records)
    # the copies are the caller's to change; the store is untouched
    (dest / "config.json").write_bytes(b"changed")
    assert store.verify_records(records) == []


def test_materialize_refuses_a_corrupt_or_missing_blob_and_a_path_escape(tmp_path: Path) -> None:
    make_tree(tmp_path / "model")
    store = BlobStore(tmp_path / "store")
    records = store.put_dir(tmp_path / "model", role="model")
    weights = next(r for r in records if r.path == "model.safetensors")
    flip_first_byte(store.path_of(weights.sha256))
    with pytest.raises(BlobCorruptError):
        store.materialize([weights], tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()
    assert [p for p in (tmp_path / "out").iterdir()] == []
    with pytest.raises(BlobMissingError):
        store.materialize([FileRecord("x", sha(b"nope"), 4, "model")], tmp_path / "out")
    escape = FileRecord("../evil", records[0].sha256, records[0].size, "model")
    with pytest.raises(ValueError, match="relative"):
        store.materialize([escape], tmp_path / "out")


def test_tree_hash_is_the_weights_rule_and_equals_hash_dir(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "model")
    store = BlobStore(tmp_path / "store")
    records = store.put_dir(tmp_path / "model", role="model")
    expected = content_hash(
        [{"filename": rel, "sha256": hashlib.sha256(files[rel]).hexdigest()}
         for rel in sorted(files)]
    )
    assert tree_hash(records) == expected == hash_dir(tmp_path / "model")
    assert tree_hash(reversed(records)) == expected
    assert tree_hash(FileRecord(r.path, r.sha256, r.size, "other") for r in records) == expected
    (tmp_path / "model" / "config.json").write_bytes(b"{}")
    assert hash_dir(tmp_path / "model") != expected
