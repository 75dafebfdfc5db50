"""Read and validate a pipeline definition file as a whole, before anything runs.

Every problem found is reported at once, one line each, naming the file, the
operator (where one is concerned) and the key.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from clara_ray.errors import PipelineValidationError
from clara_ray.pipeline.placeholders import IDENTIFIER_RE, find_placeholders
from clara_ray.pipeline.spec import OperatorSpec, PipelineSpec

__all__ = ["import_operator", "load_pipeline", "parse_pipeline", "validate_pipeline_file"]


def load_pipeline(path: str | Path, *, check_imports: bool = True) -> PipelineSpec:
    """Read ``path`` and return the validated pipeline, or raise PipelineValidationError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineValidationError([f"{path}: cannot read the file: {exc.strerror}"]) from exc
    return parse_pipeline(text, source=str(path), check_imports=check_imports)


def validate_pipeline_file(path: str | Path) -> list[str]:
    """The problems of a pipeline file (empty when it is valid)."""
    try:
        load_pipeline(path)
    except PipelineValidationError as exc:
        return exc.problems
    return []


def parse_pipeline(
    text: str, *, source: str = "<pipeline>", check_imports: bool = True
) -> PipelineSpec:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PipelineValidationError([f"{source}: not valid YAML{where}: {problem}"]) from exc
    if not isinstance(raw, dict):
        raise PipelineValidationError(
            [
                f"{source}: a pipeline must be a mapping with api-version, name and operators; "
                f"got {type(raw).__name__}"
            ]
        )
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        raise PipelineValidationError(_schema_problems(exc, raw, source)) from exc
    problems = _graph_problems(spec, source) + _placeholder_problems(spec, source)
    if check_imports:
        problems += _import_problems(spec, source)
    if problems:
        raise PipelineValidationError(problems)
    return spec


def _where(source: str, operator: str | None, key: str) -> str:
    op = f" operator '{operator}':" if operator else ""
    return f"{source}:{op} key '{key}':"


def _schema_problems(exc: ValidationError, raw: dict[str, Any], source: str) -> list[str]:
    problems = []
    raw_operators = raw.get("operators")
    operators: list[Any] = raw_operators if isinstance(raw_operators, list) else []
    for err in exc.errors():
        loc = list(err["loc"])
        operator = None
        if len(loc) >= 2 and loc[0] == "operators" and isinstance(loc[1], int):
            entry = operators[loc[1]] if loc[1] < len(operators) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            operator = str(name) if name else f"#{loc[1] + 1}"
            loc = loc[2:]
        key = _dotted(loc) or "operators"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not part of the pipeline definition)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        problems.append(f"{_where(source, operator, key)} {msg}")
    return problems


def _dotted(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _graph_problems(spec: PipelineSpec, source: str) -> list[str]:
    problems: list[str] = []
    service_names = [s.name for s in spec.services]
    for dup in sorted({n for n in service_names if service_names.count(n) > 1}):
        problems.append(f"{_where(source, None, 'services')} duplicate service name '{dup}'")
    outputs: dict[str, set[str]] = {}
    for op in spec.operators:
        if op.name in outputs:
            problems.append(f"{_where(source, op.name, 'name')} duplicate operator name")
        names = [o.name for o in op.output]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"{_where(source, op.name, 'output')} duplicate output name '{dup}'")
        outputs[op.name] = set(names)
    for op in spec.operators:
        args_seen: set[str] = set()
        for i, inp in enumerate(op.input):
            key = f"input[{i}]"
            if inp.argument in args_seen:
                problems.append(
                    f"{_where(source, op.name, key)} argument '{inp.argument}' is bound twice; "
                    "use 'as' to rename one input"
                )
            args_seen.add(inp.argument)
            if inp.argument in op.args:
                problems.append(
                    f"{_where(source, op.name, key)} input '{inp.argument}' is also given in args"
                )
            if inp.from_ is None:
                continue
            if inp.from_ == op.name:
                problems.append(
                    f"{_where(source, op.name, key + '.from')} an operator cannot read its own output"
                )
            elif inp.from_ not in outputs:
                known = ", ".join(o.name for o in spec.operators if o.name != op.name)
                problems.append(
                    f"{_where(source, op.name, key + '.from')} unknown operator '{inp.from_}' (known: {known})"
                )
            elif inp.name not in outputs[inp.from_]:
                declared = ", ".join(sorted(outputs[inp.from_])) or "none"
                problems.append(
                    f"{_where(source, op.name, key + '.name')} operator '{inp.from_}' has no output "
                    f"'{inp.name}' (its outputs: {declared})"
                )
    cycle = _find_cycle(spec)
    if cycle:
        problems.append(
            f"{_where(source, cycle[0], 'input')} operators form a cycle: {' -> '.join(cycle)}"
        )
    return problems


def _find_cycle(spec: PipelineSpec) -> list[str] | None:
    # A self-reference is reported on its own ("cannot read its own output"), not as a cycle.
    deps = {
        op.name: [i.from_ for i in op.input if i.from_ and i.from_ != op.name]
        for op in spec.operators
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in deps.get(node, []):
            if nxt not in deps:
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for name in deps:
        if name not in state and (found := visit(name)):
            return found
    return None


def _placeholder_problems(spec: PipelineSpec, source: str) -> list[str]:
    places: list[tuple[str | None, str, Any]] = [
        (op.name, "args", op.args) for op in spec.operators
    ]
    places += [(None, f"services[{i}]", s.model_dump()) for i, s in enumerate(spec.services)]
    problems = []
    for operator, prefix, value in places:
        for key, name in find_placeholders(value):
            where = _where(source, operator, f"{prefix}.{key}")
            if not IDENTIFIER_RE.match(name):
                problems.append(f"{where} malformed placeholder '${{{{ {name} }}}}'")
            elif name not in spec.parameters:
                known = ", ".join(spec.parameters) or "none declared"
                problems.append(
                    f"{where} placeholder '${{{{ {name} }}}}' names no parameter (parameters: {known})"
                )
    return problems


def import_operator(run: str) -> Callable[..., Any]:
    """The function named by ``'package.module:function'``; raises ImportError/AttributeError."""
    module_name, _, attr = run.partition(":")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise TypeError(f"'{run}' is not callable")
    return fn


def _import_problems(spec: PipelineSpec, source: str) -> list[str]:
    problems = []
    for op in spec.operators:
        where = _where(source, op.name, "run")
        try:
            fn = import_operator(op.run)
        except ImportError as exc:
            problems.append(f"{where} cannot import '{op.run}': {exc}")
            continue
        except AttributeError:
            problems.append(
                f"{where} module has no function '{op.run.partition(':')[2]}' ('{op.run}')"
            )
            continue
        except TypeError as exc:
            problems.append(f"{where} {exc}")
            continue
        except Exception as exc:  # the module itself fails at import (SyntaxError, RuntimeError...)
            problems.append(f"{where} cannot import '{op.run}': {type(exc).__name__}: {exc}")
            continue
        problems += _signature_problems(op, fn, source)
    return problems


def _signature_problems(op: OperatorSpec, fn: Callable[..., Any], source: str) -> list[str]:
    """Check the function accepts the declared inputs and args, and needs nothing else."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    params = list(sig.parameters.values())[1:]  # the first is the context
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    given = {i.argument: f"input '{i.argument}'" for i in op.input} | {
        a: f"args.{a}" for a in op.args
    }
    problems = []
    if not takes_kwargs:
        for name, key in given.items():
            if name not in accepted:
                problems.append(
                    f"{_where(source, op.name, key if key.startswith('args') else 'input')} "
                    f"'{op.run}' takes no argument '{name}' (it takes: {', '.join(sorted(accepted)) or 'none'})"
                )
    for p in params:
        required = p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        if required and p.name not in given:
            problems.append(
                f"{_where(source, op.name, 'input')} '{op.run}' needs argument '{p.name}', "
                "which no input or args entry gives"
            )
    return problems
