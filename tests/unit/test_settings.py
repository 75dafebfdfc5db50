"""Tests of clara_ray.config.settings: YAML file, CLARA_RAY_* environment overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from clara_ray.config.settings import Settings, load_settings
from clara_ray.errors import ClaraError, ConfigError


def write(tmp_path: Path, text: str, name: str = "clara.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- defaults ----------------------------------------------------------------------


def test_defaults_without_file_or_env() -> None:
    s = load_settings(env={})
    assert s.data_dir == Path("~/.clara-ray").expanduser()
    assert s.storage_uri is None
    assert s.log_level == "INFO"
    assert s.ray.address == "local"
    assert s.ray.namespace == "clara"
    assert s.ray.num_gpus is None
    assert s.core.max_concurrent_jobs == 4
    assert s.serve.enabled is True
    assert s.serve.port == 8000


def test_default_data_dir_is_expanded_everywhere() -> None:
    s = load_settings(env={})
    assert "~" not in str(s.data_dir)
    assert "~" not in s.storage
    assert "~" not in str(s.database)
    assert s.run_dir == Path.home() / ".clara-ray" / "run"


def test_derived_paths(tmp_path: Path) -> None:
    s = load_settings(env={"CLARA_RAY_DATA_DIR": str(tmp_path)})
    assert s.storage == str(tmp_path / "storage")
    assert s.database == tmp_path / "state" / "clara.db"
    assert s.run_dir == tmp_path / "run"


def test_explicit_storage_uri_and_state_db(tmp_path: Path) -> None:
    s = load_settings(
        env={"CLARA_RAY_STORAGE_URI": "s3://bucket/prefix", "CLARA_RAY_STATE_DB": "~/x/clara.db"}
    )
    assert s.storage == "s3://bucket/prefix"
    assert s.database == Path("~/x/clara.db").expanduser()


def test_data_dir_tilde_is_expanded(tmp_path: Path) -> None:
    path = write(tmp_path, "data_dir: ~/clara-data\n")
    assert load_settings(path, env={}).data_dir == Path.home() / "clara-data"


def test_every_field_has_a_description() -> None:
    def walk(model: type) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, Settings.__mro__[1]):
                missing += [f"{name}.{m}" for m in walk(annotation)]
            elif not field.description:
                missing.append(name)
        return missing

    assert walk(Settings) == []


# -- file --------------------------------------------------------------------------


def test_file_values_are_loaded(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        data_dir: /srv/clara
        log_level: DEBUG
        ray:
          address: ray://head:10001
          num_gpus: 2
        core:
          max_concurrent_jobs: 8
        serve:
          port: 9000
        """.replace("        ", ""),
    )
    s = load_settings(path, env={})
    assert s.data_dir == Path("/srv/clara")
    assert s.log_level == "DEBUG"
    assert s.ray.address == "ray://head:10001"
    assert s.ray.num_gpus == 2
    assert s.ray.namespace == "clara"  # untouched defaults survive
    assert s.core.max_concurrent_jobs == 8
    assert s.serve.port == 9000


def test_file_from_clara_ray_config_env(tmp_path: Path) -> None:
    path = write(tmp_path, "core: {max_concurrent_jobs: 2}\n")
    s = load_settings(env={"CLARA_RAY_CONFIG": str(path)})
    assert s.core.max_concurrent_jobs == 2


def test_explicit_path_wins_over_config_env(tmp_path: Path) -> None:
    explicit = write(tmp_path, "core: {max_concurrent_jobs: 3}\n", "a.yaml")
    other = write(tmp_path, "core: {max_concurrent_jobs: 9}\n", "b.yaml")
    s = load_settings(explicit, env={"CLARA_RAY_CONFIG": str(other)})
    assert s.core.max_concurrent_jobs == 3


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, ""), env={}) == load_settings(env={})


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(
        ConfigError, match=rf"^settings file {path}: cannot read: No such file or directory$"
    ):
        load_settings(path, env={})


def test_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "ray: {address: local\n")
    with pytest.raises(ConfigError, match=rf"^settings file {path}: not valid YAML: "):
        load_settings(path, env={})


def test_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- a\n- b\n")
    with pytest.raises(
        ConfigError, match=rf"settings file {path}: must be a mapping of keys, got list"
    ):
        load_settings(path, env={})


def test_unknown_key_in_file_names_key_and_env(tmp_path: Path) -> None:
    path = write(tmp_path, "ray:\n  adress: auto\n")
    with pytest.raises(
        ConfigError,
        match=rf"^settings file {path}: key 'ray.adress' is not a setting "
        r"\(env CLARA_RAY_RAY__ADRESS\)$",
    ):
        load_settings(path, env={})


def test_bad_value_in_file_names_key_value_and_expectation(tmp_path: Path) -> None:
    path = write(tmp_path, "ray:\n  address: somewhere\n")
    with pytest.raises(
        ConfigError,
        match=rf"^settings file {path}: key 'ray.address' \(env CLARA_RAY_RAY__ADDRESS\): .*"
        r"expected 'local', 'auto', 'host:port' or 'ray://host:port'; got 'somewhere'$",
    ):
        load_settings(path, env={})


def test_every_bad_key_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "log_level: LOUD\nserve: {port: 0}\ncore: {max_concurrent_jobs: 0}\n")
    with pytest.raises(ConfigError, match="log_level") as info:
        load_settings(path, env={})
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert any("key 'log_level'" in line and "got 'LOUD'" in line for line in lines)
    assert any("key 'serve.port'" in line and "got 0" in line for line in lines)
    assert any("key 'core.max_concurrent_jobs'" in line and "got 0" in line for line in lines)


# -- environment overrides -----------------------------------------------------------


def test_env_overrides_nested_keys_with_double_underscore() -> None:
    s = load_settings(
        env={
            "CLARA_RAY_RAY__ADDRESS": "auto",
            "CLARA_RAY_RAY__NUM_CPUS": "6",
            "CLARA_RAY_CORE__MAX_CONCURRENT_JOBS": "12",
            "CLARA_RAY_SERVE__ENABLED": "false",
            "CLARA_RAY_CORE__DEFAULT_OPERATOR_TIMEOUT": "1.5",
        }
    )
    assert s.ray.address == "auto"
    assert s.ray.num_cpus == 6
    assert s.core.max_concurrent_jobs == 12
    assert s.serve.enabled is False
    assert s.core.default_operator_timeout == 1.5


def test_env_overrides_file_and_keeps_its_other_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "ray:\n  address: auto\n  namespace: from-file\nserve: {port: 9000}\n")
    s = load_settings(path, env={"CLARA_RAY_RAY__NAMESPACE": "from-env"})
    assert s.ray.namespace == "from-env"
    assert s.ray.address == "auto"
    assert s.serve.port == 9000


def test_unrelated_environment_is_ignored() -> None:
    s = load_settings(env={"HOME": "/nowhere", "RAY_ADDRESS": "x:1", "CLARA_RAYX": "1"})
    assert s == load_settings(env={})


def test_empty_env_value_means_unset() -> None:
    s = load_settings(env={"CLARA_RAY_STORAGE_URI": "", "CLARA_RAY_RAY__NUM_GPUS": ""})
    assert s.storage_uri is None
    assert s.ray.num_gpus is None


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLARA_RAY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CLARA_RAY_SERVE__PORT", "8123")
    s = load_settings()
    assert s.data_dir == tmp_path
    assert s.serve.port == 8123


def test_unknown_env_override_names_variable() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^defaults with CLARA_RAY_\* environment overrides: "
        r"key 'core.max_jobs' is not a setting "
        r"\(env CLARA_RAY_CORE__MAX_JOBS\)$",
    ):
        load_settings(env={"CLARA_RAY_CORE__MAX_JOBS": "3"})


def test_bad_env_value_names_key_and_value() -> None:
    with pytest.raises(
        ConfigError,
        match=r"key 'core.max_concurrent_jobs' \(env CLARA_RAY_CORE__MAX_CONCURRENT_JOBS\): .*"
        r"valid integer.*; got 'many'$",
    ):
        load_settings(env={"CLARA_RAY_CORE__MAX_CONCURRENT_JOBS": "many"})


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [
        ("CLARA_RAY_RAY__NAMESPACE", "bad namespace!", "ray.namespace"),
        ("CLARA_RAY_RAY__GCS_PORT", "70000", "ray.gcs_port"),
        ("CLARA_RAY_RAY__OBJECT_STORE_MEMORY", "1000", "ray.object_store_memory"),
        ("CLARA_RAY_SERVE__ENABLED", "perhaps", "serve.enabled"),
        ("CLARA_RAY_CORE__REPORT_RETRY_SECONDS", "0", "core.report_retry_seconds"),
        ("CLARA_RAY_LOG_LEVEL", "debug", "log_level"),
    ],
)
def test_bad_env_values(name: str, value: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"key '{key}' \(env {name}\): .*; got '{value}'$"):
        load_settings(env={name: value})


def test_env_value_into_a_scalar_as_if_it_were_a_section() -> None:
    with pytest.raises(
        ConfigError,
        match=r"key 'log_level' \(env CLARA_RAY_LOG_LEVEL\): "
        r"Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'; got \{'x': '1'\}$",
    ):
        load_settings(env={"CLARA_RAY_LOG_LEVEL__X": "1"})


def test_section_and_key_in_env_conflict() -> None:
    # dicts keep insertion order: the nested key first, then the whole section as a scalar
    with pytest.raises(ConfigError, match=r"key 'ray' \(env CLARA_RAY_RAY\): .*; got 'auto'"):
        load_settings(env={"CLARA_RAY_RAY__ADDRESS": "auto", "CLARA_RAY_RAY": "auto"})
    # the other way round: the section is a scalar when the nested key arrives
    with pytest.raises(ConfigError, match=r"^key 'ray.address': 'ray' is not a section$"):
        load_settings(env={"CLARA_RAY_RAY": "auto", "CLARA_RAY_RAY__ADDRESS": "auto"})


def test_config_error_is_a_clara_error_and_value_error() -> None:
    with pytest.raises(ClaraError, match="log_level"):
        load_settings(env={"CLARA_RAY_LOG_LEVEL": "LOUD"})
    with pytest.raises(ValueError, match="log_level"):
        load_settings(env={"CLARA_RAY_LOG_LEVEL": "LOUD"})


@pytest.mark.parametrize(
    "address", ["local", "auto", "10.0.0.5:6379", "head-node.svc:6379", "ray://head:10001"]
)
def test_accepted_ray_addresses(address: str) -> None:
    assert load_settings(env={"CLARA_RAY_RAY__ADDRESS": address}).ray.address == address


def test_assignment_is_validated() -> None:
    s = load_settings(env={})
    with pytest.raises(ValueError, match="max_concurrent_jobs"):
        s.core.max_concurrent_jobs = 0


def test_a_rejected_api_token_is_not_repeated_in_the_error() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(env={"CLARA_RAY_SERVE__API_TOKEN": "short-secret"})
    message = str(raised.value)
    assert "key 'serve.api_token'" in message and "at least 16" in message
    assert "short-secret" not in message and "got (hidden)" in message
