"""GGUF tiers in a Hub repo of their own (issue #14 item 5), the way the Hub's model tree
expects them: `<org>/<repo>-GGUF` holds the .gguf files and a README whose metadata says
`base_model: <org>/<repo>` and `base_model_relation: quantized`; the parent's README links to it.

A target asks for it with a query on the `hf://` URL (docs/publishing.md):

- `hf://org/repo?gguf=separate`: the GGUF tiers go to `org/repo-GGUF`;
- `hf://org/repo?gguf=other-org/name`: they go to that repo.

Without the query every file goes to the one repo, as before.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs

from huggingface_hub import ModelCardData

from foundry.adapters.publishing.cards import card_tags
from foundry.adapters.publishing.cards_sections import as_map, present, table, title
from foundry.domain.errors import InvalidInputError
from foundry.domain.values.artifact import ArtifactDocument

HUB_SCHEME = "hf://"
GGUF_OPTION = "gguf"
SEPARATE = "separate"
SUFFIX = "-GGUF"
# The Hub's own rule for a repo id (owner/name), as domain/commands.py checks a target.
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class HubTarget:
    """An `hf://` target taken apart: the model's repo, and the GGUF tiers' repo if separate."""

    repo: str
    gguf_repo: str | None = None

    @property
    def model_target(self) -> str:
        return HUB_SCHEME + self.repo

    @property
    def gguf_target(self) -> str | None:
        return HUB_SCHEME + self.gguf_repo if self.gguf_repo else None


def parse_hub_target(target: str) -> HubTarget:
    """`hf://org/repo[?gguf=separate|org/name]`; InvalidInputError("target") naming the rule."""
    rest = target.removeprefix(HUB_SCHEME)
    repo, _, query = rest.partition("?")
    if not _REPO_ID.match(repo):
        raise InvalidInputError("target", f"{target}: the repo must be <org>/<name>")
    if not query:
        return HubTarget(repo)
    try:
        options = parse_qs(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise InvalidInputError("target", f"{target}: malformed query") from None
    unknown = sorted(set(options) - {GGUF_OPTION})
    values = options.get(GGUF_OPTION, [])
    if unknown or len(values) != 1:
        raise InvalidInputError("target", f"{target}: the only option is one "
                                f"`{GGUF_OPTION}=separate` or `{GGUF_OPTION}=<org>/<name>`")
    gguf = repo + SUFFIX if values[0] == SEPARATE else values[0]
    if not _REPO_ID.match(gguf) or gguf.lower() == repo.lower():
        raise InvalidInputError("target", f"{target}: `{GGUF_OPTION}` must be `separate` or "
                                "an <org>/<name> other than the model's repo")
    return HubTarget(repo, gguf)


def gguf_readme(artifact: ArtifactDocument, parent: str, parent_url: str,
                files: Mapping[str, str]) -> str:
    """The GGUF repo's README: metadata pointing at the parent repo, then what each file is.
    `files` maps each .gguf name to its sha256, as the provenance recorded it."""
    license_ = artifact.get("license")
    # Not a named ModelCardData field in huggingface_hub 2.x: passed through as metadata.
    data = ModelCardData(license=str(license_) if present(license_) else None,
                         tags=card_tags(artifact) or None, base_model=parent,
                         base_model_relation="quantized")
    name = title(artifact) or parent
    custody = [f"- {label}: `{value}`" for label, value in
               (("Artifact", artifact.get("id")), ("alloyHash", artifact.get("alloyHash")))
               if present(value)]
    run = as_map(artifact.get("provenance")).get("runId")
    custody += [f"- Run: `{run}`"] if present(run) else []
    sections = [
        ["---", data.to_yaml(), "---"],
        [f"# {name} GGUF"],
        [f"GGUF tiers of [{parent}]({parent_url}), quantized from its weights by Foundry. "
         "The full provenance (the `.alloy.json`) and the model cards are in that repo."],
        table(["File", "SHA-256"], [[n, f"`{files[n]}`"] for n in sorted(files)]),
        custody,
    ]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"


def gguf_link(gguf_repo: str, url: str, files: list[str]) -> str:
    """The section the parent's README ends with: where its GGUF tiers are."""
    names = ", ".join(f"`{n}`" for n in sorted(files))
    return f"\n## GGUF\n\nThe GGUF tiers ({names}) are published in [{gguf_repo}]({url}).\n"
