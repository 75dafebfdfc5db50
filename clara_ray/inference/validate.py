"""Validation of an inference request against a model's configuration.

Names, datatypes, shapes with ``-1`` wildcards and the batch dimension, as
Triton checks them; every error is an
:class:`~clara_ray.inference.errors.InvalidRequestError` naming the tensor and the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from clara_ray.inference.config import ModelConfig, TensorConfig
from clara_ray.inference.errors import InvalidRequestError
from clara_ray.inference.messages import InferRequest
from clara_ray.inference.tensors import datatype_of

__all__ = ["validate_inputs", "validate_outputs", "validate_request"]


def _check_shape(
    spec: TensorConfig, shape: tuple[int, ...], config: ModelConfig, what: str
) -> None:
    dims = spec.dims
    if config.max_batch_size > 0:
        expected = [-1, *dims]
        if len(shape) != len(dims) + 1:
            raise InvalidRequestError(
                f"{what}: shape {list(shape)} does not match the model's {expected} "
                f"(batch dimension first, then {list(dims)})"
            )
        if not 1 <= shape[0] <= config.max_batch_size:
            raise InvalidRequestError(
                f"{what}: batch size {shape[0]} is outside 1..{config.max_batch_size} "
                f"(max_batch_size of model {config.name!r})"
            )
        rest = shape[1:]
    else:
        expected = list(dims)
        rest = shape
    if len(rest) != len(dims) or any(d != -1 and d != s for d, s in zip(dims, rest, strict=True)):
        raise InvalidRequestError(
            f"{what}: shape {list(shape)} does not match the model's {expected}"
        )


def validate_inputs(config: ModelConfig, arrays: Mapping[str, np.ndarray]) -> None:
    """Check numpy inputs against ``config``: names, dtypes, shapes and the batch dimension.

    With batching, every input must have the same batch size.
    """
    model = f"model {config.name!r}"
    known = {t.name: t for t in config.inputs}
    for name in arrays:
        if name not in known:
            raise InvalidRequestError(
                f"{model} has no input {name!r}; expected inputs: {', '.join(known)}"
            )
    batch: int | None = None
    for spec in config.inputs:
        what = f"input {spec.name!r} of {model}"
        if spec.name not in arrays:
            if spec.optional:
                continue
            raise InvalidRequestError(f"{what} is missing from the request")
        array = arrays[spec.name]
        if not isinstance(array, np.ndarray):
            raise InvalidRequestError(f"{what}: expected a numpy array, got {type(array).__name__}")
        try:
            got = datatype_of(array.dtype)
        except TypeError as exc:
            raise InvalidRequestError(f"{what}: {exc}") from None
        if got != spec.datatype:
            raise InvalidRequestError(
                f"{what}: datatype {got} does not match the model's {spec.datatype}"
            )
        _check_shape(spec, tuple(array.shape), config, what)
        if config.max_batch_size > 0:
            if batch is not None and array.shape[0] != batch:
                raise InvalidRequestError(
                    f"{what}: batch size {array.shape[0]} differs from the other inputs' {batch}"
                )
            batch = array.shape[0]


def validate_outputs(config: ModelConfig, names: Iterable[str] | None) -> list[str]:
    """The output names to return (all when ``names`` is None); unknown names raise."""
    known = [t.name for t in config.outputs]
    if names is None:
        return known
    chosen = list(names)
    for name in chosen:
        if name not in known:
            raise InvalidRequestError(
                f"model {config.name!r} has no output {name!r}; expected outputs: {', '.join(known)}"
            )
    return chosen


def validate_request(request: InferRequest, config: ModelConfig) -> dict[str, np.ndarray]:
    """Check a decoded request against ``config``; its declared datatypes too. Returns the arrays."""
    known = {t.name: t for t in config.inputs}
    for tensor in request.inputs:
        spec = known.get(tensor.name)
        if spec is not None and tensor.datatype != spec.datatype:
            raise InvalidRequestError(
                f"input {tensor.name!r} of model {config.name!r}: datatype {tensor.datatype} "
                f"does not match the model's {spec.datatype}"
            )
    arrays = request.arrays()
    validate_inputs(config, arrays)
    validate_outputs(config, request.output_names())
    return arrays
