"""Where this machine's signing key lives: one place that the ES256 attestation, the OpenSSF
model signature and the event-log checkpoints all read, so none of them imports another for it."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

ENV_KEYS_DIR = "FOUNDRY_KEYS_DIR"
ENV_PASSPHRASE = "FOUNDRY_KEY_PASSPHRASE"
PRIVATE_KEY_FILE = "signing-key.pem"
PUBLIC_KEY_FILE = "signing-key.pub.pem"


def keys_dir() -> Path:
    """FOUNDRY_KEYS_DIR, else `keys/` in the user's config directory."""
    override = os.environ.get(ENV_KEYS_DIR)
    if override:
        return Path(override)
    return Path(platformdirs.user_config_dir("foundry", appauthor=False)) / "keys"
