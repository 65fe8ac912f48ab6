"""`foundry keys create` and `keys show` read the key's directory and passphrase from the
settings (FOUNDRY_KEYS_DIR, FOUNDRY_KEY_PASSPHRASE) once, at the command, like every verb."""

from __future__ import annotations

from pathlib import Path

import pytest

from foundry.adapters.cli.main import main
from foundry.adapters.publishing.attestation import load_key


def test_keys_create_and_show_use_the_settings_directory_and_passphrase(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "node-keys"
    monkeypatch.setenv("FOUNDRY_KEYS_DIR", str(keys))
    monkeypatch.setenv("FOUNDRY_KEY_PASSPHRASE", "correct horse")
    assert main(["keys", "show"]) == 0
    assert f"no key in {keys}" in capsys.readouterr().out
    assert main(["keys", "create"]) == 0
    created = capsys.readouterr().out
    assert b"ENCRYPTED PRIVATE KEY" in (keys / "signing-key.pem").read_bytes()
    loaded = load_key(keys, "correct horse")
    assert loaded is not None and f"key {loaded[1].key_id} in {keys}" in created
    assert main(["keys", "show"]) == 0
    assert f"key {loaded[1].key_id} in {keys}" in capsys.readouterr().out
    assert main(["keys", "create"]) == 1  # one key per directory unless --overwrite
    assert "already exists" in capsys.readouterr().err
    other = tmp_path / "other"
    assert main(["keys", "create", "--dir", str(other)]) == 0  # --dir wins over the setting
    assert load_key(other, "correct horse") is not None
