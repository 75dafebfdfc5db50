"""``${{ name }}`` placeholders in operator ``args``."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["IDENTIFIER_RE", "PLACEHOLDER", "find_placeholders", "substitute"]

IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PLACEHOLDER = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def find_placeholders(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Yield ``(key path, placeholder name)`` for every placeholder inside ``value``."""
    if isinstance(value, str):
        for m in PLACEHOLDER.finditer(value):
            yield key, m.group(1)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from find_placeholders(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from find_placeholders(v, f"{key}[{i}]")


def substitute(value: Any, parameters: Mapping[str, Any]) -> Any:
    """Replace placeholders; a string that is one placeholder takes the parameter's type."""
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value.strip())
        if whole:
            return parameters[whole.group(1)]
        return PLACEHOLDER.sub(lambda m: str(parameters[m.group(1)]), value)
    if isinstance(value, Mapping):
        return {k: substitute(v, parameters) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [substitute(v, parameters) for v in value]
    return value
