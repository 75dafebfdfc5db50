"""The inference errors: each carries the HTTP status an edge answers with.

:class:`InferenceError` is the base; :class:`ModelRepositoryError` is a
malformed model repository (a configuration error, not a request error).
"""

from __future__ import annotations

from clara_ray.errors import ClaraError

__all__ = [
    "InferenceError",
    "InferenceServiceError",
    "InvalidRequestError",
    "MethodNotAllowedError",
    "ModelFailedError",
    "ModelNotReadyError",
    "ModelRepositoryError",
    "RequestTooLargeError",
    "RouteNotFoundError",
    "UnknownModelError",
]


class InferenceError(ClaraError):
    """Base of the inference errors; :attr:`status_code` is the HTTP status an edge answers."""

    status_code = 400


class InvalidRequestError(InferenceError, ValueError):
    """A request is malformed or does not fit the model (HTTP 400); the message names the tensor."""


class RequestTooLargeError(InvalidRequestError):
    """The request body exceeds the configured limit (HTTP 400, as Triton answers)."""


class UnknownModelError(InferenceError, LookupError):
    """No such model, or no such version of it (HTTP 404)."""

    status_code = 404

    def __str__(self) -> str:  # LookupError would quote a KeyError-style argument
        return str(self.args[0]) if self.args else ""


class RouteNotFoundError(InferenceError, LookupError):
    """No route of the protocol has this path (HTTP 404)."""

    status_code = 404

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class MethodNotAllowedError(InferenceError):
    """The route exists but not for this HTTP method (HTTP 405)."""

    status_code = 405


class ModelNotReadyError(InferenceError):
    """The model exists but cannot serve now (HTTP 503)."""

    status_code = 503


class ModelFailedError(InferenceError):
    """A model failed on a request that passed validation (HTTP 500)."""

    status_code = 500


class InferenceServiceError(InferenceError):
    """An inference service (Serve deployment, Triton server) cannot be reached (HTTP 503)."""

    status_code = 503


class ModelRepositoryError(ClaraError, ValueError):
    """The model repository is malformed; the message names the file and the key."""
