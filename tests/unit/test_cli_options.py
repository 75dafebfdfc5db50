"""`--json` and `--config` are accepted wherever users type them."""

from __future__ import annotations

import pytest

from clara_ray.cli.main import build_parser


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "list", "jobs"],
        ["list", "--json", "jobs"],
        ["list", "jobs", "--json"],
        ["describe", "job", "JOB1", "--json"],
        ["create", "job", "-p", "ct-lung-bone", "-f", "DIR", "--start", "--wait", "--json"],
        ["dicom", "list", "destinations", "--json"],
        ["dicom", "resend", "EXPORT1", "--json"],
        ["status", "--json"],
    ],
)
def test_json_is_accepted_at_any_position(argv):
    args = build_parser().parse_args(argv)
    assert args.json is True


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "c.yaml", "list", "jobs"],
        ["list", "jobs", "--config", "c.yaml"],
        ["describe", "job", "JOB1", "--config", "c.yaml", "--json"],
    ],
)
def test_config_is_accepted_at_any_position(argv):
    args = build_parser().parse_args(argv)
    assert args.config == "c.yaml"


def test_options_given_early_are_not_reset_by_the_noun():
    args = build_parser().parse_args(["--json", "--config", "c.yaml", "list", "jobs"])
    assert (args.json, args.config) == (True, "c.yaml")


def test_without_json_the_output_is_text():
    args = build_parser().parse_args(["list", "jobs"])
    assert getattr(args, "json", False) is False
