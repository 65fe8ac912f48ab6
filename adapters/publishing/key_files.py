"""The signing key's file names, in the directory Settings.keys names: one place that the ES256
attestation, the OpenSSF model signature and the event-log checkpoints all read, so none of
them imports another for it."""

from __future__ import annotations

PRIVATE_KEY_FILE = "signing-key.pem"
PUBLIC_KEY_FILE = "signing-key.pub.pem"
