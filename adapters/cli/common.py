"""What the CLI's command groups share: JSON arguments in, the result envelope out.

Its own module so that `main` (which builds the parser from every group) and the groups
(which use these) import it rather than each other.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from foundry.domain.errors import InvalidInputError

# Far beyond any honest params file (the bus refuses payloads over 1 MB anyway); keeps
# `@/dev/zero` from reading until memory runs out.
MAX_JSON_FILE_BYTES = 16 * 1024 * 1024


def load_json_arg(text: str, what: str = "params") -> Any:
    """Parse inline JSON or @file; a parse error names the line and column. A file that is
    not UTF-8 text, too big, or nested too deep for the parser is refused by name."""
    source = text
    if text.startswith("@"):
        source = _read_text_file(Path(text[1:]), what)
    try:
        return json.loads(source)
    except json.JSONDecodeError as e:
        raise InvalidInputError(
            what, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    except RecursionError:
        raise InvalidInputError(what, "JSON nested too deep to parse") from None
    except ValueError as e:  # e.g. an integer literal of more than 4,300 digits
        raise InvalidInputError(what, f"malformed JSON: {e}") from None


def _read_text_file(path: Path, what: str) -> str:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_JSON_FILE_BYTES + 1)
    except OSError as e:
        raise InvalidInputError(what, f"cannot read {path}: {e.strerror}") from None
    if len(raw) > MAX_JSON_FILE_BYTES:
        raise InvalidInputError(what, f"{path} is over {MAX_JSON_FILE_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInputError(what, f"{path} is not UTF-8 text (byte {e.start}): a binary "
                                "file?") from None


def run_command(foundry: Any, command: str, params: Any) -> int:
    result = foundry.execute(command, params)
    print_json(result)
    return 0 if result.get("success") else 1


def print_json(obj: Any) -> None:
    """The result envelope on stdout, as indented JSON."""
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
