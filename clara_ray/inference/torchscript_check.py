"""Checking a TorchScript module against its model configuration.

Triton's PyTorch backend maps config inputs to ``forward``'s arguments by an
``__<index>`` suffix or by argument name, and outputs by suffix or position;
:func:`check_torchscript` applies the same rules and reports a mismatch
naming both files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from clara_ray.inference.config import ModelConfig, TensorConfig
from clara_ray.inference.errors import ModelRepositoryError

__all__ = ["check_torchscript"]

_INDEXED = re.compile(r"^.*__(\d+)$")


def _order(
    tensors: tuple[TensorConfig, ...], arg_names: list[str] | None, label: str, where: str
) -> list[str]:
    names = [t.name for t in tensors]
    indexed = [_INDEXED.match(n) for n in names]
    if all(indexed):
        idx = [int(m.group(1)) for m in indexed if m]
        if sorted(idx) != list(range(len(names))):
            raise ModelRepositoryError(
                f"{where}: {label} names {names} carry indices {sorted(idx)}; expected __0..__{len(names) - 1}"
            )
        return [n for _, n in sorted(zip(idx, names, strict=True))]
    if arg_names is None:
        return names
    unknown = [n for n in names if n not in arg_names]
    if unknown:
        raise ModelRepositoryError(
            f"{where}: {label} {unknown[0]!r} is neither named <name>__<index> nor an argument of "
            f"forward() (arguments: {', '.join(arg_names)})"
        )
    return sorted(names, key=arg_names.index)


def check_torchscript(
    config: ModelConfig, module: Any, file: str | Path
) -> tuple[list[str], list[str]]:
    """Check a loaded TorchScript ``module`` against ``config``; return input and output names in call order.

    Inputs map to ``forward``'s arguments by their ``__<index>`` suffix (Triton's
    PyTorch convention) or by argument name; outputs by suffix or position.  A
    config whose input or output count differs from the module's is an error
    naming both files.
    """
    where = f"{config.name!r}: config.pbtxt and {file}"
    schema = module.forward.schema
    args = [a for a in schema.arguments[1:]]  # drop self
    required = [a for a in args if a.default_value is None]
    if not len(required) <= len(config.inputs) <= len(args):
        raise ModelRepositoryError(
            f"{where} disagree: the config declares {len(config.inputs)} input(s) "
            f"({', '.join(t.name for t in config.inputs)}) but forward() takes {len(args)} "
            f"({', '.join(a.name for a in args)})"
        )
    returns: Any = schema.returns[0].type if schema.returns else None
    kind = returns.kind() if returns is not None else "NoneType"
    if kind == "TupleType":
        produced: int | None = len(returns.elements())
    elif kind == "TensorType":
        produced = 1
    else:  # a list or a dict: the count is only known at run time
        produced = None
    if produced is not None and produced != len(config.outputs):
        raise ModelRepositoryError(
            f"{where} disagree: the config declares {len(config.outputs)} output(s) "
            f"({', '.join(t.name for t in config.outputs)}) but forward() returns {produced}"
        )
    inputs = _order(config.inputs, [a.name for a in args], "input", where)
    outputs = _order(config.outputs, None, "output", where)
    return inputs, outputs
