"""The committed liver-seg model: Dice >= 0.9 on phantoms it never saw, and a config that matches it.

Training uses phantom seeds below 900 and validation 900-999
(pipelines/ct_liver_ai/train.py); these tests use seeds from 1000 on.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from clara_ray.context import OperatorContext
from clara_ray.inference.torchscript import TorchScriptModel
from clara_ray.operators.ai_segmentation import DEFAULT_MODEL_PATH, segment_liver
from clara_ray.sample.phantom import generate_phantom
from clara_ray.storage import Storage
from clara_ray.volume import Volume

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / DEFAULT_MODEL_PATH
CONFIG = MODEL.parent.parent / "config.pbtxt"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> OperatorContext:
    tmp = tmp_path_factory.mktemp("dice")
    storage = Storage(str(tmp / "storage"))
    (tmp / "source").mkdir()
    (tmp / "source" / "dummy.dcm").write_bytes(b"\0")
    storage.upload_payload("payload-1", tmp / "source")
    storage.seal_payload("payload-1")
    return OperatorContext(
        job_id="job-dice",
        job_name="dice",
        pipeline="ct-liver-ai",
        operator="segment",
        payload=storage.payload_view("payload-1"),
        results=storage.results("job-dice", "segment"),
    )


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.parametrize(
    ("seed", "shape"),
    [
        (1000, (48, 256, 256)),
        (1001, (48, 256, 256)),
        (1002, (48, 256, 256)),
        (1003, (40, 512, 512)),
        (1004, (30, 224, 320)),
    ],
)
def test_dice_on_unseen_phantoms(
    ctx: OperatorContext, seed: int, shape: tuple[int, int, int]
) -> None:
    phantom = generate_phantom(slices=shape[0], rows=shape[1], columns=shape[2], seed=seed)
    volume = Volume(phantom.hu, spacing=phantom.spacing)
    labels = segment_liver(ctx, volume)["labels"]
    assert labels.shape == shape
    score = dice(labels.array == 1, phantom.labels["liver"])
    assert score >= 0.9, f"Dice {score:.4f} for seed {seed} at {shape}"


def test_config_matches_the_model() -> None:
    text = CONFIG.read_text()
    assert re.search(r'^name: "liver-seg"$', text, re.M)
    assert re.search(r'^platform: "pytorch_libtorch"$', text, re.M)
    max_batch = int(re.search(r"^max_batch_size: (\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
    tensors = re.findall(r'name: "(\w+)"\s+data_type: (TYPE_\w+)\s+dims: \[ ([\d, ]+) \]', text)
    assert [(n, t) for n, t, _ in tensors] == [
        ("INPUT__0", "TYPE_FP32"),
        ("OUTPUT__0", "TYPE_FP32"),
    ]
    in_dims, out_dims = (tuple(int(d) for d in dims.split(",")) for _, _, dims in tensors)
    assert re.search(r"kind: KIND_(GPU|CPU|AUTO)", text)

    model = TorchScriptModel.load(MODEL, "cpu")
    assert tuple(model.metadata["working_size"]) == in_dims[1:]
    batch = np.full((max_batch, *in_dims), 60.0, dtype=np.float32)
    out = model(batch)
    assert out.dtype == np.float32
    assert out.shape == (max_batch, *out_dims)
    assert float(out.min()) >= 0.0
    assert float(out.max()) <= 1.0
    assert MODEL.stat().st_size < 5 * 1024 * 1024
