"""Ray's authentication token: found where Ray looks for it, created for a local head.

Ray (2.59+) runs clusters with token authentication. A process finds the token
in ``RAY_AUTH_TOKEN``, else in the file ``RAY_AUTH_TOKEN_PATH``, else in
``~/.ray/auth_token``. A head that ``clara-ray up`` starts on this machine
needs one before it starts, so it is created there when none exists, as
``ray get-auth-token --generate`` does (same file, same mode); nothing here
ever deletes it. A process that joins a cluster must be given that cluster's
token; without one it gets a one-line error saying what to set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from clara_ray.errors import ClaraError

__all__ = ["TokenInfo", "ensure_local_token", "require_token", "token_auth_enabled"]

_TOKEN_ENV = "RAY_AUTH_TOKEN"
_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"


@dataclass(frozen=True)
class TokenInfo:
    """Where the token comes from (a file path or ``$RAY_AUTH_TOKEN``) and whether it was
    created just now."""

    source: str
    created: bool = False


def token_auth_enabled() -> bool:
    return os.environ.get("RAY_AUTH_MODE", "token").lower() == "token"


def _token_path() -> Path:
    return Path(os.environ.get(_TOKEN_PATH_ENV) or Path.home() / ".ray" / "auth_token")


def _existing() -> TokenInfo | None:
    if os.environ.get(_TOKEN_ENV, "").strip():
        return TokenInfo(source=f"${_TOKEN_ENV}")
    path = _token_path()
    if path.is_file() and path.read_text(encoding="utf-8").strip():
        return TokenInfo(source=str(path))
    return None


def ensure_local_token() -> TokenInfo | None:
    """The token a local head uses, created when there is none; None with token auth off."""
    if not token_auth_enabled():
        return None
    found = _existing()
    if found is not None:
        return found
    if os.environ.get(_TOKEN_PATH_ENV):
        from ray._private.authentication.authentication_token_generator import (
            generate_new_authentication_token,
        )

        path = _token_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generate_new_authentication_token(), encoding="utf-8")
    else:
        from ray._private.authentication.authentication_token_setup import (
            generate_and_save_token,
        )

        generate_and_save_token()
    _reset_ray_token_cache()
    return TokenInfo(source=str(_token_path()), created=True)


def require_token(address: str) -> TokenInfo | None:
    """The token for joining the cluster at ``address``; a ClaraError when none is set."""
    if not token_auth_enabled():
        return None
    found = _existing()
    if found is None:
        raise ClaraError(
            f"no Ray authentication token for the cluster at {address}: set {_TOKEN_ENV} to "
            f"the cluster's token, or {_TOKEN_PATH_ENV} to a file holding it (default "
            f"{_token_path()}); RAY_AUTH_MODE=disabled joins a cluster without token auth"
        )
    return found


def _reset_ray_token_cache() -> None:
    """Ray's C++ loader caches a missing token; make it read the file just written."""
    from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]

    AuthenticationTokenLoader.instance().reset_cache()
