"""Tests of clara_ray.pipeline.resolve and .placeholders: overrides, coercion, order (no Ray)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from clara_ray.errors import PipelineValidationError
from clara_ray.pipeline import load_pipeline, parse_pipeline, resolve_pipeline
from clara_ray.pipeline.placeholders import find_placeholders, substitute
from clara_ray.pipeline.resolve import coerce_parameter

DIAMOND = Path(__file__).resolve().parent.parent / "pipelines" / "diamond.yaml"

# Declared out of order on purpose: every operator is listed before its upstreams.
BACKWARDS = textwrap.dedent(
    """\
    api-version: 0.4.0
    name: backwards
    parameters:
      amount: 3
      ratio: 0.5
      enabled: true
      label: liver
      shape: null
    operators:
      - name: join
        run: tests.ops:combine
        input:
          - {from: left, name: volume, as: left}
          - {from: right, name: volume, as: right}
      - name: right
        run: tests.ops:add
        args: {amount: "${{ amount }}"}
        input: [{from: source, name: volume}]
        output: [{name: volume}]
      - name: left
        run: tests.ops:add
        args: {amount: 1}
        input: [{from: source, name: volume}]
        output: [{name: volume}]
      - name: source
        run: tests.ops:make_volume
        args: {shape: "${{ shape }}"}
        input: [{name: payload}]
        output: [{name: volume}]
    """
)


@pytest.fixture
def diamond():
    return load_pipeline(DIAMOND)


@pytest.fixture
def backwards():
    return parse_pipeline(BACKWARDS, source="backwards.yaml")


def position(names: list[str], name: str) -> int:
    return names.index(name)


# -- order -------------------------------------------------------------------------


def test_diamond_order_and_defaults(diamond) -> None:
    plan = resolve_pipeline(diamond)
    assert plan.name == "diamond"
    assert plan.parameters == {"amount": 2}
    assert [op.name for op in plan.operators] == ["source", "left", "right", "join"]
    assert plan.operator("left").args == {"amount": 2}
    assert plan.operator("right").args == {"amount": 10}
    assert plan.operator("join").upstream == ["left", "right"]
    assert plan.operator("source").upstream == []


def test_every_operator_comes_after_its_upstreams(backwards) -> None:
    plan = resolve_pipeline(backwards)
    names = [op.name for op in plan.operators]
    assert sorted(names) == ["join", "left", "right", "source"]
    for op in plan.operators:
        for up in op.upstream:
            assert position(names, up) < position(names, op.name), names
    assert names[0] == "source"
    assert names[-1] == "join"


def test_operator_lookup_unknown_name(diamond) -> None:
    with pytest.raises(KeyError, match="nope"):
        resolve_pipeline(diamond).operator("nope")


def test_resolved_operator_exposes_spec_inputs(diamond) -> None:
    join = resolve_pipeline(diamond).operator("join")
    assert join.spec is diamond.operator("join")
    assert [i.argument for i in join.inputs] == ["left", "right"]


def test_resolution_does_not_change_the_spec(diamond) -> None:
    resolve_pipeline(diamond, {"amount": 7})
    assert diamond.operator("left").args == {"amount": "${{ amount }}"}
    assert diamond.parameters == {"amount": 2}


# -- overrides and coercion ----------------------------------------------------------


def test_override_string_is_coerced_to_int(diamond) -> None:
    plan = resolve_pipeline(diamond, {"amount": "5"})
    assert plan.parameters == {"amount": 5}
    assert plan.operator("left").args["amount"] == 5
    assert type(plan.operator("left").args["amount"]) is int


def test_override_of_right_type_is_kept(diamond) -> None:
    assert resolve_pipeline(diamond, {"amount": 9}).operator("left").args == {"amount": 9}


def test_unknown_parameter_is_an_error(diamond) -> None:
    with pytest.raises(
        PipelineValidationError,
        match=r"^pipeline 'diamond': unknown parameter 'amout' \(parameters: amount\)$",
    ):
        resolve_pipeline(diamond, {"amout": 5})


def test_every_unknown_parameter_is_reported(diamond) -> None:
    with pytest.raises(PipelineValidationError, match="unknown parameter") as info:
        resolve_pipeline(diamond, {"b": 1, "a": 2, "amount": 3})
    assert info.value.problems == [
        "pipeline 'diamond': unknown parameter 'a' (parameters: amount)",
        "pipeline 'diamond': unknown parameter 'b' (parameters: amount)",
    ]


def test_unknown_parameter_when_none_are_declared() -> None:
    spec = parse_pipeline(
        "api-version: 0.4.0\nname: bare\noperators:\n"
        "  - {name: source, run: 'tests.ops:make_volume', input: [{name: payload}]}\n"
    )
    with pytest.raises(
        PipelineValidationError, match=r"unknown parameter 'x' \(parameters: none\)"
    ):
        resolve_pipeline(spec, {"x": 1})


def test_bad_int_string_names_the_parameter(diamond) -> None:
    with pytest.raises(
        PipelineValidationError,
        match=r"^parameter 'amount': value 'five' is not a int like its default 2$",
    ):
        resolve_pipeline(diamond, {"amount": "five"})


@pytest.mark.parametrize("text", ["true", "True", "YES", "1", "on", " true "])
def test_true_strings(backwards, text: str) -> None:
    assert resolve_pipeline(backwards, {"enabled": text}).parameters["enabled"] is True


@pytest.mark.parametrize("text", ["false", "False", "no", "0", "OFF"])
def test_false_strings(backwards, text: str) -> None:
    assert resolve_pipeline(backwards, {"enabled": text}).parameters["enabled"] is False


def test_bad_bool_string(backwards) -> None:
    with pytest.raises(
        PipelineValidationError,
        match=r"parameter 'enabled': value 'maybe' is not a bool like its default True",
    ):
        resolve_pipeline(backwards, {"enabled": "maybe"})


def test_float_string(backwards) -> None:
    assert resolve_pipeline(backwards, {"ratio": "0.25"}).parameters["ratio"] == 0.25
    with pytest.raises(
        PipelineValidationError,
        match=r"parameter 'ratio': value 'half' is not a float like its default 0.5",
    ):
        resolve_pipeline(backwards, {"ratio": "half"})


def test_string_and_null_defaults_take_strings_as_given(backwards) -> None:
    params = resolve_pipeline(backwards, {"label": "42", "shape": "4"}).parameters
    assert params["label"] == "42"
    assert params["shape"] == "4"


@pytest.mark.parametrize(
    ("default", "value", "expected"),
    [
        (2, "5", 5),
        (2, " -3 ", -3),
        (2, 7, 7),  # not a string: left alone
        (0.5, "1", 1.0),
        (False, "on", True),
        (True, 0, 0),  # not a string: left alone
        ("x", "5", "5"),
        (None, "5", "5"),
    ],
)
def test_coerce_parameter(default: Any, value: Any, expected: Any) -> None:
    result = coerce_parameter("p", default, value)
    assert result == expected
    assert type(result) is type(expected)


def test_coerce_int_refuses_float_text() -> None:
    with pytest.raises(
        PipelineValidationError, match=r"parameter 'n': value '2.5' is not a int like its default 1"
    ):
        coerce_parameter("n", 1, "2.5")


# -- placeholders ------------------------------------------------------------------


def test_whole_placeholder_takes_the_parameter_type(backwards) -> None:
    plan = resolve_pipeline(backwards, {"amount": "4"})
    assert plan.operator("right").args == {"amount": 4}
    assert plan.operator("source").args == {"shape": None}


def test_find_placeholders_walks_nested_args() -> None:
    args = {
        "a": "${{ one }}",
        "b": {"c": ["x", "${{two}} and ${{  three  }}"]},
        "d": 5,
    }
    assert list(find_placeholders(args)) == [("a", "one"), ("b.c[1]", "two"), ("b.c[1]", "three")]


def test_find_placeholders_reports_malformed_names_verbatim() -> None:
    assert list(find_placeholders({"a": "${{ a b }}", "b": "${{}}"})) == [("a", "a b"), ("b", "")]


def test_substitute_embeds_and_keeps_types() -> None:
    params = {"n": 3, "name": "liver", "flag": False}
    value = {
        "whole": "${{ n }}",
        "padded": "  ${{ flag }}  ",
        "inside": "organ-${{ name }}-${{n}}",
        "nested": [{"k": "${{ name }}"}, 1.5],
        "tuple": ("${{ n }}",),
        "plain": "no placeholder",
    }
    assert substitute(value, params) == {
        "whole": 3,
        "padded": False,
        "inside": "organ-liver-3",
        "nested": [{"k": "liver"}, 1.5],
        "tuple": [3],
        "plain": "no placeholder",
    }


def test_substitute_unknown_name_raises_key_error() -> None:
    with pytest.raises(KeyError, match="missing"):
        substitute("${{ missing }}", {})
