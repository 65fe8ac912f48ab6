"""Publishing to a Hugging Face Hub (or anything speaking its API, e.g. HF_ENDPOINT).

The only module that catches huggingface_hub's errors: each becomes a `PublishError` with the
HTTP status and the hub's request id. Every string that comes back from the hub (messages,
headers such as X-Request-Id, the repo URL) is scrubbed of the token here, at the boundary,
before it can reach an event, a view, a log or an envelope: a hub (or a proxy in front of it)
may echo the Authorization header anywhere. Endpoint, token and timeout come in as the
`HubSettings` bootstrap read when the Foundry opened; nothing here reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundry.domain.errors import FoundryError

if TYPE_CHECKING:
    from foundry.adapters.settings import HubSettings


class PublishError(FoundryError):
    """Raised when a publish target refuses or fails; the run stays sealed, unpublished."""

    code = "publish_failed"

    def __init__(self, target: str, message: str, *, status: int | None = None,
                 request_id: str | None = None, kind: str = "PublishError") -> None:
        self.target, self.status, self.request_id, self.kind = target, status, request_id, kind
        detail = f" (HTTP {status}" + (f", request id {request_id}" if request_id else "") + ")" \
            if status else (f" (request id {request_id})" if request_id else "")
        super().__init__(f"publish to {target} failed{detail}: {message}")


def hub_token(hub: HubSettings) -> str | None:
    """The token HF_TOKEN held when the Foundry opened, else `huggingface_hub`'s stored login
    (read only when a publish needs it); never logged or stored."""
    if hub.token:
        return hub.token
    from huggingface_hub import get_token

    return get_token()


def scrub(text: str, token: str | None) -> str:
    """`text` without the token, written plainly or URL-encoded."""
    if not token:
        return text
    from urllib.parse import quote, quote_plus

    for form in {token, quote(token, safe=""), quote_plus(token)}:
        text = text.replace(form, "***")
    return text


def _scrub_optional(text: str | None, token: str | None) -> str | None:
    return None if text is None else scrub(text, token)


def _client_factory(seconds: float) -> Any:
    """huggingface_hub's default client waits forever; a hub that stops answering must not
    hang a publish: its clients time out after `seconds` (FOUNDRY_HUB_TIMEOUT, default 60)."""
    import httpx2
    from huggingface_hub.utils._http import default_client_factory

    def build() -> Any:
        client = default_client_factory()
        client.timeout = httpx2.Timeout(seconds)
        return client

    return build


def upload_to_hub(repo_id: str, folder: Path, card_files: tuple[str, ...], *,
                  hub: HubSettings, private: bool = False) -> str:
    """create_repo(exist_ok) + one commit of everything but the cards, then the cards last.
    Returns the repo URL."""
    import httpx2
    from huggingface_hub import HfApi, set_client_factory
    from huggingface_hub.errors import HfHubHTTPError

    set_client_factory(_client_factory(hub.timeout_seconds))

    token = hub_token(hub)
    target = f"hf://{repo_id}"
    api = HfApi(endpoint=hub.endpoint, token=token, library_name="foundry")
    try:
        url = api.create_repo(repo_id, exist_ok=True, private=private)
        api.upload_folder(repo_id=repo_id, folder_path=folder, ignore_patterns=list(card_files),
                          commit_message="foundry: weights, GGUF tiers and the alloy")
        api.upload_folder(repo_id=repo_id, folder_path=folder, allow_patterns=list(card_files),
                          commit_message="foundry: model cards")
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        raise PublishError(target, scrub(str(e).splitlines()[0], token), status=status,
                           request_id=_scrub_optional(e.request_id, token),
                           kind=type(e).__name__) from None
    except (httpx2.TimeoutException, TimeoutError) as e:
        raise PublishError(target, f"timed out: {scrub(str(e), token)}",
                           kind="PublishTimeoutError") from None
    except (httpx2.HTTPError, OSError, ValueError) as e:
        # ValueError: huggingface_hub's own checks of what the hub answered (a malformed URL)
        raise PublishError(target, scrub(str(e), token), kind=type(e).__name__) from None
    return scrub(str(url), token)
