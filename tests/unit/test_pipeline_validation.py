"""Tests of clara_ray.pipeline.load and .spec: whole-file validation of pipelines (no Ray).

Every file under tests/pipelines/invalid/ holds exactly one kind of mistake; each must give
exactly one problem line that names the file, the operator (where one is concerned) and the key.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from clara_ray.errors import PipelineError, PipelineValidationError
from clara_ray.pipeline import load_pipeline, parse_pipeline, validate_pipeline_file
from clara_ray.pipeline.load import import_operator
from clara_ray.pipeline.spec import Requests, parse_memory
from tests import ops

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"
INVALID = PIPELINES / "invalid"

# file stem -> (operator named in the problem or None, key named, pattern for the rest of the line)
INVALID_KINDS: dict[str, tuple[str | None, str | None, str]] = {
    "yaml_syntax": (None, None, r"not valid YAML at line 7, column 5: expected ',' or ']'"),
    "not_mapping": (
        None,
        None,
        r"a pipeline must be a mapping with api-version, name and operators; got list",
    ),
    "unknown_top_level_key": (
        None,
        "timout",
        r"unknown key \(not part of the pipeline definition\)",
    ),
    "unknown_operator_key": (
        "source",
        "contianer",
        r"unknown key \(not part of the pipeline definition\)",
    ),
    "missing_run": ("source", "run", r"required key is missing"),
    "bad_run_format": (
        "source",
        "run",
        r"must be 'package\.module:function', got 'tests\.ops\.make_volume'",
    ),
    "run_module_not_importable": (
        "source",
        "run",
        r"cannot import 'tests\.no_such_module:make_volume': "
        r"No module named 'tests\.no_such_module'",
    ),
    "run_function_missing": (
        "source",
        "run",
        r"module has no function 'make_volumes' \('tests\.ops:make_volumes'\)",
    ),
    "duplicate_operator": ("source", "name", r"duplicate operator name"),
    "unknown_from": ("plus-one", "input[0].from", r"unknown operator 'sorce' \(known: source\)"),
    "unknown_output": (
        "plus-one",
        "input[0].name",
        r"operator 'source' has no output 'mask' \(its outputs: volume\)",
    ),
    "cycle": ("first", "input", r"operators form a cycle: first -> third -> second -> first"),
    "unresolved_placeholder": (
        "plus",
        "args.amount",
        r"placeholder '\$\{\{ amout \}\}' names no parameter \(parameters: amount\)",
    ),
    "malformed_placeholder": (
        "plus",
        "args.amount",
        r"malformed placeholder '\$\{\{ 2amount \}\}'",
    ),
    "requests_negative_cpu": ("source", "requests.cpu", r"greater than or equal to 0"),
    "requests_fractional_gpu": (
        "source",
        "requests.gpu",
        r"a GPU request above 1 must be a whole number, got 1\.5",
    ),
    "requests_bad_memory": (
        "source",
        "requests.memory",
        r"memory must be MiB or a size like '512Mi' or '2Gi', got '12 parsecs'",
    ),
    "unsupported_api_version": (
        None,
        "api-version",
        r"unsupported api-version '2\.0\.0', expected one of",
    ),
    "unknown_argument": (
        "plus",
        "args.amout",
        r"'tests\.ops:add' takes no argument 'amout' \(it takes: amount, volume\)",
    ),
    "missing_argument": (
        "join",
        "input",
        r"'tests\.ops:combine' needs argument 'right', which no input or args entry gives",
    ),
    "no_operators": (None, "operators", r"at least 1 item"),
}


def expected_line(path: Path, operator: str | None, key: str | None, rest: str) -> str:
    """The whole problem line as a regex: file, operator, key, then the message."""
    where = re.escape(str(path)) + ":"
    if operator:
        where += re.escape(f" operator '{operator}':")
    if key:
        where += re.escape(f" key '{key}':")
    return f"^{where} .*{rest}"


def test_every_invalid_fixture_is_covered() -> None:
    on_disk = {p.stem for p in INVALID.glob("*.yaml")}
    assert on_disk == set(INVALID_KINDS)
    assert len(on_disk) >= 12


@pytest.mark.parametrize("kind", sorted(INVALID_KINDS))
def test_invalid_file_gives_one_problem_naming_file_operator_and_key(kind: str) -> None:
    path = INVALID / f"{kind}.yaml"
    operator, key, rest = INVALID_KINDS[kind]
    problems = validate_pipeline_file(path)
    assert len(problems) == 1, problems
    assert re.search(expected_line(path, operator, key, rest), problems[0]), problems[0]


@pytest.mark.parametrize("kind", sorted(INVALID_KINDS))
def test_load_pipeline_raises_with_the_same_problem(kind: str) -> None:
    path = INVALID / f"{kind}.yaml"
    operator, key, rest = INVALID_KINDS[kind]
    with pytest.raises(
        PipelineValidationError, match=expected_line(path, operator, key, rest)
    ) as info:
        load_pipeline(path)
    assert info.value.problems == validate_pipeline_file(path)
    assert str(info.value) == "\n".join(info.value.problems)


def test_validation_error_is_a_pipeline_error_and_a_value_error() -> None:
    with pytest.raises(PipelineError, match=r"not_mapping\.yaml"):
        load_pipeline(INVALID / "not_mapping.yaml")
    with pytest.raises(ValueError, match=r"not_mapping\.yaml"):
        load_pipeline(INVALID / "not_mapping.yaml")


# -- the valid reference pipeline ------------------------------------------------


def test_diamond_is_valid() -> None:
    assert validate_pipeline_file(PIPELINES / "diamond.yaml") == []


def test_diamond_loads_into_typed_spec() -> None:
    spec = load_pipeline(PIPELINES / "diamond.yaml")
    assert spec.api_version == "0.4.0"
    assert spec.name == "diamond"
    assert spec.parameters == {"amount": 2}
    assert [op.name for op in spec.operators] == ["source", "left", "right", "join"]
    join = spec.operator("join")
    assert [(i.from_, i.name, i.argument) for i in join.input] == [
        ("left", "volume", "left"),
        ("right", "volume", "right"),
    ]
    assert spec.operator("source").input[0].from_ is None
    assert spec.operator("left").args == {"amount": "${{ amount }}"}
    assert spec.operator("right").requests == Requests(cpu=1.0, gpu=0.0, memory=None)
    with pytest.raises(KeyError, match="nope"):
        spec.operator("nope")


# -- files and sources -------------------------------------------------------------


def test_missing_file_is_a_problem_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert validate_pipeline_file(path) == [
        f"{path}: cannot read the file: No such file or directory"
    ]
    with pytest.raises(PipelineValidationError, match=r"absent\.yaml: cannot read the file"):
        load_pipeline(path)


def test_parse_pipeline_names_the_given_source() -> None:
    with pytest.raises(
        PipelineValidationError, match=r"^pipeline 'x': a pipeline must be a mapping .* got str"
    ):
        parse_pipeline("just text", source="pipeline 'x'")


def test_parse_pipeline_default_source() -> None:
    with pytest.raises(
        PipelineValidationError, match=r"^<pipeline>: a pipeline must be a mapping .* got NoneType"
    ):
        parse_pipeline("")


def test_check_imports_false_skips_import_and_signature_checks() -> None:
    text = (INVALID / "run_module_not_importable.yaml").read_text()
    spec = parse_pipeline(text, check_imports=False)
    assert spec.operators[0].run == "tests.no_such_module:make_volume"
    text = (INVALID / "unknown_argument.yaml").read_text()
    assert parse_pipeline(text, check_imports=False).operator("plus").args == {"amout": 3}


# -- several problems at once --------------------------------------------------------


def pipeline(operators: str, *, head: str = "api-version: 0.4.0\nname: p\n") -> str:
    return head + "operators:\n" + textwrap.indent(textwrap.dedent(operators), "  ")


def test_all_graph_problems_are_reported_together() -> None:
    text = pipeline(
        """\
        - name: source
          run: tests.ops:make_volume
          input: [{name: payload}]
          output: [{name: volume}]
        - name: a
          run: tests.ops:add
          input: [{from: nowhere, name: volume}]
          output: [{name: volume}]
        - name: b
          run: tests.ops:add
          input: [{from: source, name: mask, as: volume}]
          args: {amount: "${{ missing }}"}
          output: [{name: volume}]
        """
    )
    with pytest.raises(PipelineValidationError, match="nowhere") as info:
        parse_pipeline(text, source="multi.yaml")
    assert info.value.problems == [
        "multi.yaml: operator 'a': key 'input[0].from': unknown operator 'nowhere' "
        "(known: source, b)",
        "multi.yaml: operator 'b': key 'input[0].name': operator 'source' has no output 'mask' "
        "(its outputs: volume)",
        "multi.yaml: operator 'b': key 'args.amount': placeholder '${{ missing }}' "
        "names no parameter (parameters: none declared)",
    ]


def test_all_schema_problems_are_reported_together() -> None:
    text = pipeline(
        """\
        - name: Source
          run: tests.ops:make_volume
          timeout: 0
        - name: b
          run: tests.ops:add
          retries: 11
        """,
        head="api-version: 0.4.0\nname: p\n",
    )
    with pytest.raises(PipelineValidationError, match="Source") as info:
        parse_pipeline(text, source="s.yaml")
    problems = info.value.problems
    assert len(problems) == 3
    # an operator whose name is invalid is still named by what the file says
    assert problems[0].startswith("s.yaml: operator 'Source': key 'name': ")
    assert "lowercase letters" in problems[0]
    assert problems[1].startswith("s.yaml: operator 'Source': key 'timeout': ")
    assert problems[2].startswith("s.yaml: operator 'b': key 'retries': ")


def test_operator_without_name_is_named_by_position() -> None:
    text = pipeline(
        """\
        - run: tests.ops:make_volume
          input: [{name: payload}]
        """
    )
    with pytest.raises(
        PipelineValidationError, match=r"^x: operator '#1': key 'name': required key is missing$"
    ):
        parse_pipeline(text, source="x")


def test_missing_top_level_keys() -> None:
    with pytest.raises(PipelineValidationError, match="api-version") as info:
        parse_pipeline("name: p\n", source="f")
    assert info.value.problems == [
        "f: key 'api-version': required key is missing",
        "f: key 'operators': required key is missing",
    ]


# -- graph details -----------------------------------------------------------------


def test_self_reference_is_one_problem_not_also_a_cycle() -> None:
    text = pipeline(
        """\
        - name: a
          run: tests.ops:add
          input: [{from: a, name: volume}]
          output: [{name: volume}]
        """
    )
    with pytest.raises(PipelineValidationError, match="own output") as info:
        parse_pipeline(text, source="f")
    assert info.value.problems == [
        "f: operator 'a': key 'input[0].from': an operator cannot read its own output"
    ]


def test_two_node_cycle_shows_its_path() -> None:
    text = pipeline(
        """\
        - name: a
          run: tests.ops:add
          input: [{from: b, name: volume}]
          output: [{name: volume}]
        - name: b
          run: tests.ops:add
          input: [{from: a, name: volume}]
          output: [{name: volume}]
        """
    )
    with pytest.raises(
        PipelineValidationError,
        match=r"^f: operator 'a': key 'input': operators form a cycle: a -> b -> a$",
    ):
        parse_pipeline(text, source="f")


def test_argument_bound_twice_needs_as() -> None:
    text = pipeline(
        """\
        - name: source
          run: tests.ops:make_volume
          input: [{name: payload}]
          output: [{name: volume}]
        - name: join
          run: tests.ops:combine
          input:
            - {from: source, name: volume, as: left}
            - {from: source, name: volume, as: left}
          args: {right: 1}
          output: [{name: total}]
        """
    )
    with pytest.raises(
        PipelineValidationError, match=r"key 'input\[1\]': argument 'left' is bound twice; use 'as'"
    ):
        parse_pipeline(text, source="f")


def test_input_also_given_in_args() -> None:
    text = pipeline(
        """\
        - name: source
          run: tests.ops:make_volume
          input: [{name: payload}]
          args: {payload: 1}
          output: [{name: volume}]
        """
    )
    with pytest.raises(
        PipelineValidationError,
        match=r"operator 'source': key 'input\[0\]': input 'payload' is also given in args",
    ):
        parse_pipeline(text, source="f")


def test_duplicate_output_names() -> None:
    text = pipeline(
        """\
        - name: source
          run: tests.ops:make_volume
          input: [{name: payload}]
          output: [{name: volume}, {name: volume}]
        """
    )
    with pytest.raises(
        PipelineValidationError,
        match=r"operator 'source': key 'output': duplicate output name 'volume'",
    ):
        parse_pipeline(text, source="f")


@pytest.mark.parametrize(
    ("entry", "key", "message"),
    [
        ("{name: 2payload}", "input[0].name", "must be a Python identifier, got '2payload'"),
        ("{name: payload, as: my-arg}", "input[0].as", "must be a Python identifier, got 'my-arg'"),
        ("{name: payload, frm: x}", "input[0].frm", "unknown key"),
    ],
)
def test_bad_input_entries(entry: str, key: str, message: str) -> None:
    text = pipeline(
        f"""\
        - name: source
          run: tests.ops:make_volume
          input: [{entry}]
        """
    )
    with pytest.raises(
        PipelineValidationError,
        match=re.escape(f"operator 'source': key '{key}':") + ".*" + re.escape(message),
    ):
        parse_pipeline(text, source="f")


def test_bad_argument_names_in_args() -> None:
    text = pipeline(
        """\
        - name: source
          run: tests.ops:make_volume
          input: [{name: payload}]
          args: {"not-an-identifier": 1}
        """
    )
    with pytest.raises(
        PipelineValidationError, match=r"key 'args': .*argument names must be Python identifiers"
    ):
        parse_pipeline(text, source="f")


# -- imports ----------------------------------------------------------------------


def test_module_failing_at_import_is_a_problem_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "clara_broken_ops.py").write_text('raise RuntimeError("boom at import")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    text = pipeline(
        """\
        - name: source
          run: clara_broken_ops:make
          input: [{name: payload}]
        """
    )
    with pytest.raises(
        PipelineValidationError,
        match=r"^f: operator 'source': key 'run': cannot import 'clara_broken_ops:make': "
        r"RuntimeError: boom at import$",
    ):
        parse_pipeline(text, source="f")


def test_run_target_that_is_not_callable() -> None:
    text = pipeline(
        """\
        - name: source
          run: tests.ops:PayloadView.__doc__
        """
    )
    # not 'package.module:function' (a dotted attribute), refused by the schema
    with pytest.raises(
        PipelineValidationError, match=r"key 'run': .*must be 'package.module:function'"
    ):
        parse_pipeline(text, source="f")
    text = pipeline(
        """\
        - name: source
          run: tests.conftest:PIPELINES
        """
    )
    with pytest.raises(
        PipelineValidationError, match=r"key 'run': 'tests.conftest:PIPELINES' is not callable"
    ):
        parse_pipeline(text, source="f")


def test_import_operator_returns_the_function() -> None:
    assert import_operator("tests.ops:add") is ops.add
    with pytest.raises(AttributeError, match="nope"):
        import_operator("tests.ops:nope")
    with pytest.raises(ImportError, match=r"tests\.nope"):
        import_operator("tests.nope:add")


def test_function_taking_kwargs_accepts_any_args(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "clara_kwargs_ops.py").write_text(
        "def run(ctx, payload, **kwargs):\n    return {}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    text = pipeline(
        """\
        - name: source
          run: clara_kwargs_ops:run
          input: [{name: payload}]
          args: {anything: 1, goes: [1, 2]}
        """
    )
    assert parse_pipeline(text).operator("source").args == {"anything": 1, "goes": [1, 2]}


# -- spec details ------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.3.0", "0.4.0", "0.5.0", "1.0"])
def test_supported_api_versions(version: str) -> None:
    text = pipeline(
        """\
        - name: source
          run: tests.ops:make_volume
          input: [{name: payload}]
        """,
        head=f"api-version: {version}\nname: p\n",
    )
    assert parse_pipeline(text).api_version == version


def test_api_version_written_as_a_yaml_number_is_compared_as_text() -> None:
    text = pipeline(
        """\
        - name: source
          run: tests.ops:make_volume
          input: [{name: payload}]
        """,
        head="api-version: 2.0\nname: p\n",
    )
    with pytest.raises(
        PipelineValidationError, match=r"key 'api-version': .*unsupported api-version '2.0'"
    ):
        parse_pipeline(text, source="f")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (512, 512 * 2**20),
        (0.5, 2**19),
        ("512", 512 * 2**20),
        ("512Mi", 512 * 2**20),
        ("2Gi", 2 * 2**30),
        ("1.5Gi", int(1.5 * 2**30)),
        ("1G", 10**9),
        ("1GB", 10**9),
        ("  4Ki ", 4096),
        ("1Ti", 2**40),
    ],
)
def test_parse_memory(value: int | float | str, expected: int) -> None:
    assert parse_memory(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("12 parsecs", r"memory must be MiB or a size like '512Mi' or '2Gi', got '12 parsecs'"),
        ("-1Gi", r"got '-1Gi'"),
        (-1, r"memory must not be negative, got -1"),
        (True, r"memory must be MiB or a size like '2Gi', got True"),
    ],
)
def test_parse_memory_errors(value: int | float | str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_memory(value)


def test_requests_memory_bytes_and_fractional_gpu() -> None:
    assert Requests(memory="1Gi").memory_bytes == 2**30
    assert Requests().memory_bytes is None
    assert Requests(gpu=0.25).gpu == 0.25
    assert Requests(gpu=2).gpu == 2


def test_spec_is_frozen() -> None:
    spec = load_pipeline(PIPELINES / "diamond.yaml")
    with pytest.raises(ValueError, match="frozen"):
        spec.name = "other"  # type: ignore[misc]
