"""The process's configuration, read from the environment once, by bootstrap, into one value.

Everything else is handed a `Settings` (or a part of it): no module reads an environment
variable behind its caller's back, so two `Foundry` objects in one process can differ, and a
test sets what it wants by building one rather than by patching the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from foundry.domain.errors import InvalidInputError

ENV_STATE_DIR = "FOUNDRY_STATE_DIR"
ENV_EXECUTORS = "FOUNDRY_EXECUTORS"
ENV_DISPATCHER = "FOUNDRY_DISPATCHER"
ENV_FAKE_SLEEP = "FOUNDRY_FAKE_SLEEP"
ENV_FAKE_FAIL_ON = "FOUNDRY_FAKE_FAIL_ON"
ENV_SIGNING = "FOUNDRY_SIGNING"
SIGNING_MODES = ("auto", "existing", "off")
EXECUTOR_KINDS = ("real", "fake")
ENV_HUB_ENDPOINT = "HF_ENDPOINT"
ENV_HUB_TOKEN = "HF_TOKEN"
ENV_HUB_TIMEOUT = "FOUNDRY_HUB_TIMEOUT"
ENV_KEYS_DIR = "FOUNDRY_KEYS_DIR"
ENV_KEY_PASSPHRASE = "FOUNDRY_KEY_PASSPHRASE"
ENV_NODE_CLASS = "FOUNDRY_NODE_CLASS"
ENV_NODE_SITE = "FOUNDRY_NODE_SITE"
DEFAULT_HUB = "https://huggingface.co"


def default_keys_dir() -> Path:
    """`keys/` in the user's config directory."""
    import platformdirs

    return Path(platformdirs.user_config_dir("foundry", appauthor=False)) / "keys"


@dataclass(frozen=True)
class KeySettings:
    """Where this machine's signing key lives and what unlocks it (adapters/publishing): the
    seal's ES256 signature, the OpenSSF model signature, receipts and checkpoints all use it."""

    dir: Path = field(default_factory=default_keys_dir)
    """FOUNDRY_KEYS_DIR; default `keys/` in the user's config directory."""
    passphrase: str | None = field(default=None, repr=False)
    """FOUNDRY_KEY_PASSPHRASE: the private key is written and read encrypted with it."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KeySettings:
        return cls(dir=Path(env[ENV_KEYS_DIR]) if env.get(ENV_KEYS_DIR) else default_keys_dir(),
                   passphrase=env.get(ENV_KEY_PASSPHRASE) or None)


@dataclass(frozen=True)
class HubSettings:
    """Where `hf://` targets are published and with what credentials (adapters/publishing)."""

    endpoint: str | None = None
    """HF_ENDPOINT: a Hub, or anything speaking its API; None: huggingface.co."""
    # repr=False: a Settings printed in a log line or a traceback never shows the secret.
    token: str | None = field(default=None, repr=False)
    """HF_TOKEN; None: huggingface_hub's stored login, looked up when a publish needs it."""
    timeout_seconds: float = 60.0
    """FOUNDRY_HUB_TIMEOUT: huggingface_hub's own client waits forever on a silent hub."""

    @property
    def base_url(self) -> str:
        """The Hub's address, where a repo's page is `<base_url>/<org>/<repo>`."""
        return (self.endpoint or DEFAULT_HUB).rstrip("/")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HubSettings:
        return cls(endpoint=env.get(ENV_HUB_ENDPOINT) or None,
                   token=env.get(ENV_HUB_TOKEN) or None,
                   timeout_seconds=_timeout(env, ENV_HUB_TIMEOUT, default=60.0))


@dataclass(frozen=True)
class Settings:
    """What the environment said when the system was built."""

    state_dir: Path | None = None
    """Blobs, heartbeats and logs; None: next to the store (SQLite) or the user data dir."""
    executors: str = "real"
    """`real` (torch, transformers, llama.cpp) or `fake` (the deterministic test set)."""
    fake_sleep_seconds: float = 0.0
    fake_fail_on: str | None = None
    dispatcher: str = "in-process"
    """How forge/run gets a run executed: `in-process` or `ray` (adapters/runs/launch.py)."""
    hub: HubSettings = field(default_factory=HubSettings)
    """Publishing to a Hub: endpoint, token, timeout."""
    signing: str = "auto"
    """FOUNDRY_SIGNING: how a sealed run is signed. `auto`: with this machine's key, created
    on first use (`foundry keys create` makes one ahead); `existing`: only when a key already
    exists; `off`: never."""
    keys: KeySettings = field(default_factory=KeySettings)
    """The signing key's directory and passphrase."""
    node_class: str | None = None
    """FOUNDRY_NODE_CLASS: the hardware class this node is (adapters/runs/node_identity.py);
    None: detected (`cpu`, or the GPU's model name)."""
    node_site: str | None = None
    """FOUNDRY_NODE_SITE: where it is; None: the host name."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every FOUNDRY_* setting once; a malformed value names its variable."""
        env = os.environ if environ is None else environ
        executors = env.get(ENV_EXECUTORS) or "real"
        if executors not in EXECUTOR_KINDS:
            raise InvalidInputError(ENV_EXECUTORS, f"must be one of {', '.join(EXECUTOR_KINDS)}"
                                    f", got {executors!r}")
        signing = env.get(ENV_SIGNING) or "auto"
        if signing not in SIGNING_MODES:
            raise InvalidInputError(ENV_SIGNING, f"must be one of {', '.join(SIGNING_MODES)}"
                                    f", got {signing!r}")
        return cls(
            state_dir=Path(env[ENV_STATE_DIR]) if env.get(ENV_STATE_DIR) else None,
            executors=executors,
            fake_sleep_seconds=_seconds(env, ENV_FAKE_SLEEP),
            fake_fail_on=env.get(ENV_FAKE_FAIL_ON) or None,
            # Checked when a run first needs it, so that data/* works whatever it says.
            dispatcher=env.get(ENV_DISPATCHER) or "in-process",
            hub=HubSettings.from_env(env),
            signing=signing,
            keys=KeySettings.from_env(env),
            node_class=env.get(ENV_NODE_CLASS) or None,
            node_site=env.get(ENV_NODE_SITE) or None,
        )


def _seconds(env: Mapping[str, str], name: str) -> float:
    raw = env.get(name) or "0"
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInputError(name, f"must be a number of seconds, got {raw!r}") from None
    if not 0 <= value < 86_400:
        raise InvalidInputError(name, f"must be between 0 and 86400 seconds, got {raw!r}")
    return value


def _timeout(env: Mapping[str, str], name: str, *, default: float) -> float:
    """A positive number of seconds (unset or empty: `default`)."""
    raw = env.get(name) or ""
    if not raw:
        return default
    value = _seconds(env, name)
    if value <= 0:
        raise InvalidInputError(name, f"must be more than 0 seconds, got {raw!r}")
    return value
