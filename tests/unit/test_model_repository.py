"""The Triton-layout model repository: config.pbtxt parsing, versions, every malformed-repository error,
and the TorchScript backend that loads from it (contract checks, batching)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from clara_ray.inference.backends import TorchScriptBackend
from clara_ray.inference.config import ModelConfig, VersionPolicy
from clara_ray.inference.errors import InferenceError, ModelRepositoryError, UnknownModelError
from clara_ray.inference.repository import ModelRepository
from clara_ray.inference.torchscript_check import check_torchscript


class Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 + 1.0


class AddSub(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a + b, a - b


class ToDouble(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float64)


class Flatten(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


def save(module: torch.nn.Module, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(module), str(path))
    return path


TINY = """
name: "tiny"
platform: "pytorch_libtorch"
max_batch_size: 4
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 1, 4 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 1, 4 ] } ]
"""


def write_model(
    root: Path, name: str, config: str, versions: dict[str, torch.nn.Module | None]
) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(config)
    for version, module in versions.items():
        (folder / version).mkdir(exist_ok=True)
        if module is not None:
            save(module, folder / version / "model.pt")
    return folder


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    write_model(root, "tiny", TINY, {"1": Double(), "3": Double(), "10": Double()})
    (root / "tiny" / "notes").mkdir()  # non-numeric folders are not versions
    (root / ".cache").mkdir()  # hidden folders are not models
    return root


# --------------------------------------------------------------------------- text format


def test_config_text_format_syntax() -> None:
    config = ModelConfig.parse(
        """
        # comment
        name: "a\\"b" 'c'   # adjacent strings concatenate
        max_batch_size: 8, platform: "pytorch_libtorch";
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 1, -1 ] dims: 3 } ]
        output < name: "y" data_type: TYPE_FP32 dims: 1 >
        optimization { cuda { graphs: true } }
        """
    )
    assert config.name == 'a"bc'
    assert config.max_batch_size == 8
    assert config.inputs[0].dims == (1, -1, 3)
    assert config.outputs[0].name == "y"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name: "x"\n  ?', "cfg:2:3: '  ?': Expected identifier or number, got ?."),
        ("input {\n name: 'x'", 'cfg:2:8: Expected "}".'),
        ('name "x"', 'cfg:1:6: \'name "x"\': Expected ":".'),
        ("name:", "cfg:1:6: '': Expected string but found: ''"),
        ("clara: 1", 'cfg:1:1: Message type "inference.ModelConfig" has no field named "clara".'),
    ],
)
def test_config_syntax_errors_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ModelRepositoryError, match=re.escape(message)):
        ModelConfig.parse(text, "cfg")


# --------------------------------------------------------------------------- config


FULL = """
name: "seg"
backend: "pytorch"
max_batch_size: 16
input [
  { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 1, -1, -1 ] },
  { name: "INPUT__1" data_type: TYPE_UINT8 format: FORMAT_NONE dims: [ 4 ] reshape: { shape: [ 2, 2 ] } optional: true }
]
output [ { name: "OUTPUT__0" data_type: TYPE_FP16 dims: [ 1, -1, -1 ] label_filename: "labels.txt" } ]
instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0, 1 ] }, { count: 1 kind: KIND_CPU } ]
dynamic_batching { max_queue_delay_microseconds: 500 preferred_batch_size: [ 4, 8 ] }
version_policy: { specific: { versions: [ 1, 3 ] } }
parameters { key: "clara_gpu" value { string_value: "0.5" } }
parameters [ { key: "clara_cpu" value: { string_value: "2" } } ]
optimization { cuda { graphs: true } }
"""


def test_config_fields() -> None:
    config = ModelConfig.parse(FULL, "seg/config.pbtxt")
    assert config.name == "seg"
    assert config.platform_or_backend == "pytorch"
    assert config.model_filename == "model.pt"
    assert config.max_batch_size == 16
    assert [(t.name, t.datatype, t.dims) for t in config.inputs] == [
        ("INPUT__0", "FP32", (1, -1, -1)),
        ("INPUT__1", "UINT8", (4,)),
    ]
    assert config.inputs[1].reshape == (2, 2)
    assert config.inputs[1].optional
    assert config.outputs[0].datatype == "FP16"
    assert config.outputs[0].shape(config.max_batch_size) == [-1, 1, -1, -1]
    assert config.dynamic_batching is not None
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert config.dynamic_batching.preferred_batch_size == (4, 8)
    assert config.version_policy == VersionPolicy("specific", versions=(1, 3))
    assert config.num_gpus == 0.5
    assert config.num_cpus == 2.0
    assert config.num_replicas == 2 * 2 + 1
    meta = config.metadata(["1", "3"])
    assert meta["inputs"][0] == {"name": "INPUT__0", "datatype": "FP32", "shape": [-1, 1, -1, -1]}
    as_json = config.to_json()
    assert as_json["input"][1]["data_type"] == "TYPE_UINT8"
    assert as_json["input"][1]["reshape"] == {"shape": [2, 2]}
    assert as_json["version_policy"] == {"specific": {"versions": [1, 3]}}
    assert as_json["parameters"]["clara_gpu"] == {"string_value": "0.5"}


def test_config_defaults() -> None:
    config = ModelConfig.parse(TINY)
    assert config.num_gpus == 0.0
    assert config.num_cpus is None
    assert config.num_replicas == 1
    assert config.dynamic_batching is None
    assert config.version_policy == VersionPolicy("latest", num_versions=1)
    gpu = ModelConfig.parse(TINY + "instance_group [ { kind: KIND_GPU } ]")
    assert (gpu.num_gpus, gpu.num_replicas) == (1.0, 1)
    onnx = ModelConfig.parse(TINY.replace("pytorch_libtorch", "onnxruntime_onnx"))
    assert onnx.model_filename == "model.onnx"
    named = ModelConfig.parse(TINY + 'default_model_filename: "net.ts"')
    assert named.model_filename == "net.ts"


def test_version_policy_select() -> None:
    assert VersionPolicy().select([3, 1, 10]) == [10]
    assert VersionPolicy("latest", num_versions=2).select([3, 1, 10]) == [3, 10]
    assert VersionPolicy("all").select([3, 1, 10]) == [1, 3, 10]
    assert VersionPolicy("specific", versions=(1, 10)).select([3, 1, 10]) == [1, 10]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("TYPE_FP32", "TYPE_FLOAT", 1),
            "m/config.pbtxt:5:39: 'input [ { name: \"INPUT__0\" data_type: TYPE_FLOAT dims: [ 1, 4 ] } ]': "
            'Enum type "inference.DataType" has no value named TYPE_FLOAT. Expected one of TYPE_INVALID, TYPE_BOOL',
        ),
        (
            ("TYPE_FP32", "TYPE_BF16", 2),
            "m/config.pbtxt: output[0].data_type: unknown data_type 'TYPE_BF16' for output 'OUTPUT__0'",
        ),
        (
            ("data_type: TYPE_FP32 ", "", 1),
            "m/config.pbtxt: input[0].data_type: missing for input 'INPUT__0'",
        ),
        (
            ("dims: [ 1, 4 ]", "dims: [ 0, 4 ]", 1),
            "m/config.pbtxt: input[0].dims: dimension 0 of input 'INPUT__0': expected a positive integer or -1",
        ),
        (
            ("dims: [ 1, 4 ]", 'dims: [ "1" ]', 1),
            'm/config.pbtxt:5:57: \'input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ "1" ] } ]\': '
            'Couldn\'t parse integer: "1"',
        ),
        (
            ("max_batch_size: 4", "max_batch_size: -1", 1),
            "m/config.pbtxt: max_batch_size: must be 0 (no batching) or positive, got -1",
        ),
        (
            ("max_batch_size: 4", "max_batch_size: 4 max_batch_size: 8", 1),
            'm/config.pbtxt:4:35: Message type "inference.ModelConfig" should not have multiple '
            '"max_batch_size" fields.',
        ),
        (
            ("max_batch_size: 4", 'max_batch_size: "4"', 1),
            'm/config.pbtxt:4:17: \'max_batch_size: "4"\': Couldn\'t parse integer: "4"',
        ),
        (
            ('name: "tiny"', "name: 7", 1),
            "m/config.pbtxt:2:7: 'name: 7': Expected string but found: '7'",
        ),
        (
            ('input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 1, 4 ] } ]', "", 1),
            "m/config.pbtxt: input: the model declares no inputs",
        ),
        (
            ('output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 1, 4 ] } ]', "", 1),
            "m/config.pbtxt: output: the model declares no outputs",
        ),
        (('name: "OUTPUT__0"', 'name: "X"', 1), None),
    ],
)
def test_config_errors(change: tuple[str, str, int], message: str | None) -> None:
    old, new, count = change
    text = (
        TINY.replace(old, new, count) if count == 1 else TINY.replace(old, new).replace(new, old, 1)
    )
    if message is None:  # a sanity case: a renamed output is fine
        ModelConfig.parse(text, "m/config.pbtxt")
        return
    with pytest.raises(ModelRepositoryError, match=re.escape(message)):
        ModelConfig.parse(text, "m/config.pbtxt")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            'input { name: "INPUT__0" data_type: TYPE_FP32 dims: 1 }',
            "input: input name 'INPUT__0' is declared twice",
        ),
        (
            "instance_group [ { count: -1 } ]",
            "instance_group[0].count: must be a positive integer, got -1",
        ),
        (
            "dynamic_batching { preferred_batch_size: [ 8 ] }",
            "dynamic_batching.preferred_batch_size: 8 is outside 1..max_batch_size (4)",
        ),
        (
            "version_policy { latest { num_versions: 0 } }",
            "version_policy.latest.num_versions: must be a positive integer, got 0",
        ),
        (
            "version_policy { specific { } }",
            "version_policy.specific.versions: specific needs at least one version",
        ),
        (
            'parameters { key: "clara_gpu" }',
            "parameters[clara_gpu]: expected a non-negative number, got ''",
        ),
        (
            'parameters { key: "clara_gpu" value { string_value: "half" } }',
            "parameters[clara_gpu]: expected a non-negative number, got 'half'",
        ),
        (
            'parameters { key: "clara_cpu" value { string_value: "-1" } }',
            "parameters[clara_cpu]: expected a non-negative number, got '-1'",
        ),
        (
            'parameters { key: "clara_gpu" value { string_value: "1.5" } }',
            "parameters[clara_gpu]: a GPU request above 1 must be whole, got 1.5",
        ),
        (
            'instance_group [ { kind: KIND_CPU } ] parameters { key: "clara_gpu" value { string_value: "0.5" } }',
            "parameters[clara_gpu] asks for 0.5 GPU but every instance_group has kind KIND_CPU",
        ),
    ],
)
def test_config_errors_name_the_key(extra: str, message: str) -> None:
    with pytest.raises(ModelRepositoryError, match=re.escape(f"m/config.pbtxt: {message}")):
        ModelConfig.parse(TINY + extra, "m/config.pbtxt")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "instance_group [ { kind: KIND_TPU } ]",
            "7:26: 'instance_group [ { kind: KIND_TPU } ]': Enum type "
            '"inference.ModelInstanceGroup.Kind" has no value named KIND_TPU. '
            "Expected one of KIND_AUTO, KIND_GPU, KIND_CPU, KIND_MODEL.",
        ),
        (
            "dynamic_batching { max_queue_delay_microseconds: -5 }",
            "7:50: 'dynamic_batching { max_queue_delay_microseconds: -5 }': Value out of range: -5",
        ),
        (
            "version_policy { latest { num_versions: 1 } all { } }",
            '7:45: Field "all" is specified along with field "latest", another member of oneof '
            '"policy_choice" for message type "inference.ModelVersionPolicy".',
        ),
    ],
)
def test_config_protobuf_errors_name_the_line(extra: str, message: str) -> None:
    with pytest.raises(ModelRepositoryError, match=re.escape(f"m/config.pbtxt:{message}")):
        ModelConfig.parse(TINY + extra, "m/config.pbtxt")


def test_dynamic_batching_needs_batching() -> None:
    text = TINY.replace("max_batch_size: 4", "max_batch_size: 0") + "dynamic_batching { }"
    with pytest.raises(
        ModelRepositoryError,
        match=re.escape("dynamic_batching: dynamic_batching needs max_batch_size > 0"),
    ):
        ModelConfig.parse(text, "m/config.pbtxt")


# --------------------------------------------------------------------------- repository


def test_repository_versions(repo: Path) -> None:
    repository = ModelRepository(repo)
    assert repository.names() == ["tiny"]
    entry = repository.model("tiny")
    assert entry.versions == ("10",)  # latest 1 by default, numeric order
    assert entry.default_version == "10"
    assert entry.model_file() == repo / "tiny" / "10" / "model.pt"
    assert entry.resolve_version("") == "10"
    assert entry.metadata()["versions"] == ["10"]
    with pytest.raises(
        UnknownModelError, match=r"model 'tiny' has no version '3'; versions served: 10"
    ):
        entry.resolve_version(3)


@pytest.mark.parametrize(
    ("policy", "versions"),
    [
        ("version_policy { all { } }", ("1", "3", "10")),
        ("version_policy: { latest: { num_versions: 2 } }", ("3", "10")),
        ("version_policy { specific { versions: [ 3, 1 ] } }", ("1", "3")),
    ],
)
def test_version_policies(repo: Path, policy: str, versions: tuple[str, ...]) -> None:
    (repo / "tiny" / "config.pbtxt").write_text(TINY + policy)
    entry = ModelRepository(repo).model("tiny")
    assert entry.versions == versions
    assert entry.default_version == versions[-1]


def test_name_defaults_to_the_folder(repo: Path) -> None:
    (repo / "tiny" / "config.pbtxt").write_text(TINY.replace('name: "tiny"', ""))
    assert ModelRepository(repo).model("tiny").config.name == "tiny"


def test_unknown_model(repo: Path) -> None:
    repository = ModelRepository(repo)
    for name in ("nope", "", "../repo", ".cache"):
        with pytest.raises(
            UnknownModelError,
            match=f"model {name!r} is not in the model repository .*; models: tiny",
        ):
            repository.model(name)


def test_repository_must_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(
        ModelRepositoryError, match=f"model repository '{tmp_path / 'missing'}' is not a directory"
    ):
        ModelRepository(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelRepositoryError, match=r"model repository .*empty' holds no model"):
        ModelRepository(tmp_path / "empty").models()


def test_missing_config(repo: Path) -> None:
    (repo / "tiny" / "config.pbtxt").unlink()
    with pytest.raises(
        ModelRepositoryError,
        match=re.escape(
            f"{repo / 'tiny' / 'config.pbtxt'}: missing; every model folder needs a config.pbtxt"
        ),
    ):
        ModelRepository(repo).model("tiny")


def test_missing_version_folder(tmp_path: Path) -> None:
    write_model(tmp_path, "tiny", TINY, {})
    with pytest.raises(
        ModelRepositoryError,
        match=re.escape(
            f"{tmp_path / 'tiny'}: no version folder; expected numeric sub-folders such as {tmp_path / 'tiny' / '1'} holding model.pt"
        ),
    ):
        ModelRepository(tmp_path).model("tiny")


def test_specific_version_folder_missing(repo: Path) -> None:
    (repo / "tiny" / "config.pbtxt").write_text(
        TINY + "version_policy { specific { versions: [ 1, 2 ] } }"
    )
    with pytest.raises(
        ModelRepositoryError,
        match=re.escape(
            f"config.pbtxt: version_policy.specific.versions: version folder {repo / 'tiny' / '2'} is missing (found 1, 3, 10)"
        ),
    ):
        ModelRepository(repo).model("tiny")


def test_missing_model_file(repo: Path) -> None:
    (repo / "tiny" / "11").mkdir()
    with pytest.raises(
        ModelRepositoryError,
        match=re.escape(
            f"{repo / 'tiny' / '11' / 'model.pt'}: missing model file for version 11 of model 'tiny' (platform 'pytorch_libtorch' expects 'model.pt')"
        ),
    ):
        ModelRepository(repo).model("tiny")


def test_name_mismatch(repo: Path) -> None:
    (repo / "tiny" / "config.pbtxt").write_text(TINY.replace('name: "tiny"', 'name: "small"'))
    with pytest.raises(
        ModelRepositoryError,
        match=re.escape(
            f"{repo / 'tiny' / 'config.pbtxt'}: name: 'small' does not match the model folder 'tiny'"
        ),
    ):
        ModelRepository(repo).model("tiny")


def test_unknown_datatype_in_repository(repo: Path) -> None:
    (repo / "tiny" / "config.pbtxt").write_text(TINY.replace("TYPE_FP32", "TYPE_FLOAT32", 1))
    with pytest.raises(
        ModelRepositoryError,
        match=re.escape(
            f"{repo / 'tiny' / 'config.pbtxt'}:5:39: "
            "'input [ { name: \"INPUT__0\" data_type: TYPE_FLOAT32 dims: [ 1, 4 ] } ]': "
            'Enum type "inference.DataType" has no value named TYPE_FLOAT32.'
        ),
    ):
        ModelRepository(repo).models()


# --------------------------------------------------------------------------- config vs TorchScript file


def _module(tmp_path: Path, module: torch.nn.Module) -> torch.jit.ScriptModule:
    return torch.jit.load(str(save(module, tmp_path / "m.pt")))


TWO = """
name: "two"
max_batch_size: 2
input [ { name: "INPUT__1" data_type: TYPE_FP32 dims: [ 3 ] }, { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 3 ] }, { name: "OUTPUT__1" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""


def test_check_torchscript_orders_by_index(tmp_path: Path) -> None:
    config = ModelConfig.parse(TWO)
    assert check_torchscript(config, _module(tmp_path, AddSub()), "m.pt") == (
        ["INPUT__0", "INPUT__1"],
        ["OUTPUT__0", "OUTPUT__1"],
    )
    by_name = ModelConfig.parse(TWO.replace("INPUT__1", "b").replace("INPUT__0", "a"))
    assert check_torchscript(by_name, _module(tmp_path, AddSub()), "m.pt")[0] == ["a", "b"]


@pytest.mark.parametrize(
    ("config", "module", "message"),
    [
        (
            TINY,
            AddSub(),
            "'tiny': config.pbtxt and m.pt disagree: the config declares 1 input(s) (INPUT__0) but forward() takes 2 (a, b)",
        ),
        (
            TWO,
            Double(),
            "'two': config.pbtxt and m.pt disagree: the config declares 2 input(s) (INPUT__1, INPUT__0) but forward() takes 1 (x)",
        ),
        (
            TINY.replace(
                'output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 1, 4 ] } ]',
                'output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 1, 4 ] }, { name: "OUTPUT__1" data_type: TYPE_FP32 dims: [ 1, 4 ] } ]',
            ),
            Double(),
            "the config declares 2 output(s) (OUTPUT__0, OUTPUT__1) but forward() returns 1",
        ),
        (
            TWO.replace("INPUT__1", "INPUT__2"),
            AddSub(),
            "input names ['INPUT__2', 'INPUT__0'] carry indices [0, 2]; expected __0..__1",
        ),
        (
            TWO.replace("INPUT__1", "c").replace("INPUT__0", "a"),
            AddSub(),
            "input 'c' is neither named <name>__<index> nor an argument of forward() (arguments: a, b)",
        ),
    ],
)
def test_check_torchscript_errors(
    tmp_path: Path, config: str, module: torch.nn.Module, message: str
) -> None:
    with pytest.raises(ModelRepositoryError, match=re.escape(message)):
        check_torchscript(ModelConfig.parse(config), _module(tmp_path, module), "m.pt")


def test_backend_rejects_a_contradicting_file(repo: Path) -> None:
    save(AddSub(), repo / "tiny" / "10" / "model.pt")
    entry = ModelRepository(repo).model("tiny")
    with pytest.raises(ModelRepositoryError, match="config declares 1 input"):
        TorchScriptBackend(entry.config, "10", entry.model_file())


@pytest.mark.parametrize(
    ("module", "config", "message"),
    [
        (ToDouble(), TINY, "output 'OUTPUT__0' is FP64, config.pbtxt declares FP32"),
        (
            Flatten(),
            TINY,
            "output 'OUTPUT__0' has shape [1, 4] for a batch of one, config.pbtxt declares [1, 1, 4]",
        ),
        (
            Double(),
            TINY.replace("TYPE_FP32", "TYPE_STRING", 1),
            "'INPUT__0' has data_type TYPE_STRING, which a TorchScript model cannot take",
        ),
    ],
)
def test_backend_warmup_checks_outputs(
    tmp_path: Path, module: torch.nn.Module, config: str, message: str
) -> None:
    write_model(tmp_path, "tiny", config, {"1": module})
    entry = ModelRepository(tmp_path).model("tiny")
    with pytest.raises(ModelRepositoryError, match=re.escape(message)):
        TorchScriptBackend(entry.config, "1", entry.model_file())


def test_backend_warmup_failure_names_the_file(tmp_path: Path) -> None:
    config = TWO.replace('dims: [ 3 ] }, { name: "INPUT__0"', 'dims: [ 4 ] }, { name: "INPUT__0"')
    write_model(
        tmp_path, "two", config, {"1": AddSub()}
    )  # a + b cannot broadcast [1, 3] and [1, 4]
    entry = ModelRepository(tmp_path).model("two")
    message = f"model 'two' version 1 ({entry.model_file()}) fails on a batch of zeros shaped as its config.pbtxt declares"
    with pytest.raises(ModelRepositoryError, match=re.escape(message)):
        TorchScriptBackend(entry.config, "1", entry.model_file())


def test_backend_skips_warmup_with_wildcards(tmp_path: Path) -> None:
    write_model(tmp_path, "tiny", TINY.replace("[ 1, 4 ]", "[ 1, -1 ]"), {"1": Double()})
    entry = ModelRepository(tmp_path).model("tiny")
    backend = TorchScriptBackend(entry.config, "1", entry.model_file())
    assert backend.device == "cpu"
    out = backend.infer({"INPUT__0": np.ones((1, 1, 7), np.float32)})
    np.testing.assert_array_equal(out["OUTPUT__0"], np.full((1, 1, 7), 3.0, np.float32))


# --------------------------------------------------------------------------- backend batching


def test_backend_infer_and_batching(repo: Path) -> None:
    entry = ModelRepository(repo).model("tiny")
    backend = TorchScriptBackend(entry.config, "10", entry.model_file())
    rng = np.random.default_rng(0)
    requests = [
        {"INPUT__0": rng.normal(size=(n, 1, 4)).astype(np.float32)} for n in (1, 2, 1, 3, 4)
    ]
    for r in requests:
        r["INPUT__0"].flags.writeable = False  # arrays from the object store are read-only
    calls: list[int] = []
    run = backend._run

    def counting(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(len(inputs["INPUT__0"]))
        return run(inputs)

    backend._run = counting  # type: ignore[method-assign]
    results = backend.infer_many(requests)
    assert calls == [4, 3, 4]  # rows packed up to max_batch_size 4: (1+2+1), (3), (4)
    for r, out in zip(requests, results, strict=True):
        np.testing.assert_array_equal(out["OUTPUT__0"], r["INPUT__0"] * 2 + 1)
    single = backend.infer(requests[0])
    np.testing.assert_array_equal(single["OUTPUT__0"], requests[0]["INPUT__0"] * 2 + 1)


def test_backend_reshape(tmp_path: Path) -> None:
    config = TINY.replace("dims: [ 1, 4 ] }", "dims: [ 4 ] reshape: { shape: [ 1, 4 ] } }", 1)
    write_model(tmp_path, "tiny", config, {"1": Double()})
    entry = ModelRepository(tmp_path).model("tiny")
    backend = TorchScriptBackend(entry.config, "1", entry.model_file())
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    out = backend.infer({"INPUT__0": x})["OUTPUT__0"]
    assert out.shape == (2, 1, 4)
    np.testing.assert_array_equal(out.reshape(2, 4), x * 2 + 1)


def test_backend_split_needs_batch_first(repo: Path) -> None:
    entry = ModelRepository(repo).model("tiny")
    backend = TorchScriptBackend(entry.config, "10", entry.model_file())
    backend._run = lambda inputs: {"OUTPUT__0": np.zeros((1, 4), np.float32)}  # type: ignore[method-assign]
    x = np.zeros((1, 1, 4), np.float32)
    with pytest.raises(
        InferenceError,
        match=re.escape(
            "model 'tiny': output 'OUTPUT__0' has shape [1, 4], expected the batch size 2 first"
        ),
    ):
        backend.infer_many([{"INPUT__0": x}, {"INPUT__0": x}])


def test_shipped_liver_model_matches_its_config() -> None:
    root = Path(__file__).resolve().parents[2] / "models"
    entry = ModelRepository(root).model("liver-seg")
    backend = TorchScriptBackend(entry.config, entry.default_version, entry.model_file())
    assert backend.input_order == ["INPUT__0"]
    assert entry.config.num_gpus == 1.0


def test_copying_a_model_keeps_it_valid(repo: Path, tmp_path: Path) -> None:
    shutil.copytree(repo / "tiny", tmp_path / "copy" / "tiny")
    assert ModelRepository(tmp_path / "copy").model("tiny").versions == ("10",)
