"""Train the ``liver-seg`` model on generated phantoms and export it for the model repository.

    python -m pipelines.ct_liver_ai.train --out models/liver-seg/1/model.pt --seed 0

Approach: a 2-D MONAI UNet segments one axial slice at a time on a fixed
128x128 in-plane working grid that spans the slice's field of view.  The
phantom lays its anatomy out in coordinates normalized to the image grid, so a
FOV-normalized grid makes every phantom look alike whatever its matrix size,
and 2-D slices keep the network and the training small enough for a 2-core CPU
(a 3-D network would need far more compute per example for an organ that is
already recognisable in-plane by its position and its ~20 HU contrast).  The
slice axis is never resampled, so the operator's output needs no through-plane
interpolation.

Training data: phantoms with seeds ``0 .. phantoms-1`` (at most 900), each with
a random matrix size (96 to 512 pixels per in-plane axis, square or not) and
slice count, resized to the working grid with the operator's own
:func:`~clara_ray.operators.ai_segmentation.to_working_grid` (antialiased, so
the noise level varies like it does between matrix sizes at inference).
Targets are the liver's area fraction per working pixel.  Validation: phantoms
with seeds 900.. at 48x256x256, segmented through the operator's code path
from the exported file; the unit tests use seeds from 1000 on.

The exported TorchScript module takes float32 HU ``[N, 1, 128, 128]`` and
returns the liver probability of the same shape; HU windowing is inside it.
The script also writes ``config.pbtxt`` (Triton format) next to the version
folder, with dims checked against the exported module.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceLoss
from monai.networks.nets import UNet
from torch import nn

from clara_ray.inference.torchscript import TorchScriptModel, save_torchscript
from clara_ray.operators.ai_segmentation import WORKING_SIZE, liver_mask, to_working_grid
from clara_ray.sample.phantom import generate_phantom

log = logging.getLogger("pipelines.ct_liver_ai.train")

MODEL_NAME = "liver-seg"
HU_WINDOW = (-160.0, 240.0)
"""Soft-tissue window: HU are clipped to it and scaled to [-1, 1] inside the model."""
MAX_TRAIN_SEED = 900
VALIDATION_SEEDS = tuple(range(900, 904))
VALIDATION_SHAPE = (48, 256, 256)
MAX_BATCH_SIZE = 32


class LiverSegModel(nn.Module):
    """HU window + UNet + sigmoid: float32 HU ``[N, 1, H, W]`` in, liver probability out."""

    def __init__(self, net: nn.Module, low: float, high: float) -> None:
        super().__init__()
        self.net = net
        self.low = low
        self.high = high

    def preprocess(self, hu: torch.Tensor) -> torch.Tensor:
        centre = (self.high + self.low) / 2.0
        half_width = (self.high - self.low) / 2.0
        return (hu.clamp(self.low, self.high) - centre) / half_width

    def logits(self, hu: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(hu))

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(hu))


def build_model() -> LiverSegModel:
    net = UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(8, 16, 32, 64),
        strides=(2, 2, 2),
        num_res_units=2,
    )
    return LiverSegModel(net, *HU_WINDOW)


def make_dataset(
    seeds: Sequence[int], rng: np.random.Generator, size: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slices ``[N, 1, h, w]`` of HU and of the liver's area fraction, from one phantom per seed."""
    images, targets = [], []
    for seed in seeds:
        rows = int(rng.integers(96, 513))
        columns = rows if rng.random() < 0.5 else int(rng.integers(96, 513))
        slices = int(rng.integers(16, 41))
        phantom = generate_phantom(slices=slices, rows=rows, columns=columns, seed=int(seed))
        images.append(to_working_grid(phantom.hu, size))
        fraction = to_working_grid(phantom.labels["liver"].astype(np.float32), size)
        targets.append((fraction.clamp(0, 1) * 255).round().to(torch.uint8))
    return torch.cat(images), torch.cat(targets)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def evaluate(model: TorchScriptModel, seeds: Sequence[int], shape: Sequence[int]) -> list[float]:
    """Volume Dice per phantom, through the operator's code path (resize, sliding window, back)."""
    scores = []
    for seed in seeds:
        phantom = generate_phantom(slices=shape[0], rows=shape[1], columns=shape[2], seed=seed)
        mask = liver_mask(
            phantom.hu, model, working_size=model.metadata.get("working_size", WORKING_SIZE)
        )
        scores.append(dice(mask, phantom.labels["liver"]))
    return scores


def train(
    model: LiverSegModel,
    images: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    rng: np.random.Generator,
) -> None:
    dice_loss = DiceLoss(sigmoid=True, batch=True)
    bce = nn.BCEWithLogitsLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    model.train()
    started = time.perf_counter()
    running = 0.0
    for step in range(1, steps + 1):
        index = torch.from_numpy(rng.integers(0, len(images), size=batch_size))
        x = images[index]
        y = targets[index].float() / 255.0
        logits = model.logits(x)
        loss = dice_loss(logits, y) + bce(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running += float(loss)
        if step % 100 == 0 or step == steps:
            log.info(
                "step %d/%d loss %.4f (%.0fs)",
                step,
                steps,
                running / (100 if step % 100 == 0 else step % 100),
                time.perf_counter() - started,
            )
            running = 0.0
    model.eval()


def config_pbtxt(
    dims: Sequence[int], max_batch_size: int, instance_kind: str, working_size: Sequence[int]
) -> str:
    """The Triton model configuration for the exported module (dims without the batch axis)."""
    d = ", ".join(str(int(n)) for n in dims)
    h, w = working_size
    return f"""\
# Written by pipelines/ct_liver_ai/train.py together with 1/model.pt; retrain to change it.
# INPUT__0: CT slices in Hounsfield units, float32 [batch, 1, {h}, {w}]: each axial slice's
#   field of view resized (bilinear, antialiased) to {h}x{w}; HU windowing happens in the model.
# OUTPUT__0: liver probability in [0, 1], float32, same shape as the input.
name: "{MODEL_NAME}"
platform: "pytorch_libtorch"
max_batch_size: {max_batch_size}
input [
  {{
    name: "INPUT__0"
    data_type: TYPE_FP32
    dims: [ {d} ]
  }}
]
output [
  {{
    name: "OUTPUT__0"
    data_type: TYPE_FP32
    dims: [ {d} ]
  }}
]
instance_group [
  {{
    count: 1
    kind: {instance_kind}
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: 2000
}}
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out",
        type=Path,
        default=Path("models/liver-seg/1/model.pt"),
        help="TorchScript file to write; config.pbtxt goes two folders up",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the weights, sampling and grid sizes"
    )
    p.add_argument(
        "--phantoms",
        type=int,
        default=160,
        help=f"training phantoms (seeds 0..N-1, N <= {MAX_TRAIN_SEED})",
    )
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (one-cycle)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument(
        "--instance-kind",
        default="KIND_GPU",
        choices=("KIND_GPU", "KIND_CPU", "KIND_AUTO"),
        help="Triton instance_group kind written to config.pbtxt",
    )
    args = p.parse_args(argv)
    if not 1 <= args.phantoms <= MAX_TRAIN_SEED:
        p.error(
            f"--phantoms must be in 1..{MAX_TRAIN_SEED} (seeds from {MAX_TRAIN_SEED} on are held out)"
        )
    if args.steps < 1 or args.batch_size < 1:
        p.error("--steps and --batch-size must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()

    images, targets = make_dataset(range(args.phantoms), rng, WORKING_SIZE)
    log.info(
        "dataset: %d slices of %dx%d from %d phantoms, liver in %.0f%% of them (%.0fs)",
        len(images),
        *WORKING_SIZE,
        args.phantoms,
        100.0 * float((targets.flatten(1).amax(1) > 0).float().mean()),
        time.perf_counter() - started,
    )
    model = build_model()
    train(model, images, targets, args.steps, args.batch_size, args.lr, rng)
    train_s = time.perf_counter() - started

    scripted = torch.jit.script(model)
    probe = torch.zeros(2, 1, *WORKING_SIZE)
    with torch.inference_mode():
        out_shape = tuple(scripted(probe).shape)
    if out_shape != tuple(probe.shape):
        raise RuntimeError(
            f"exported model maps {tuple(probe.shape)} to {out_shape}; expected equal shapes"
        )
    metadata = {
        "name": MODEL_NAME,
        "working_size": list(WORKING_SIZE),
        "hu_window": list(HU_WINDOW),
        "input": "float32 HU [N, 1, H, W]: axial slices resized to working_size",
        "output": "float32 liver probability [N, 1, H, W]",
        "training": {
            "seed": args.seed,
            "phantoms": args.phantoms,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
        },
    }
    save_torchscript(scripted, args.out, metadata)
    config = args.out.resolve().parent.parent / "config.pbtxt"
    config.write_text(config_pbtxt(out_shape[1:], MAX_BATCH_SIZE, args.instance_kind, WORKING_SIZE))

    exported = TorchScriptModel.load(args.out, "cpu")
    scores = evaluate(exported, VALIDATION_SEEDS, VALIDATION_SHAPE)
    size_kb = args.out.stat().st_size / 1024
    log.info("wrote %s (%.0f KiB) and %s", args.out, size_kb, config)
    print(
        f"validation Dice {float(np.mean(scores)):.4f} (min {min(scores):.4f}) on seeds "
        f"{VALIDATION_SEEDS[0]}..{VALIDATION_SEEDS[-1]} at {'x'.join(map(str, VALIDATION_SHAPE))}; "
        f"training {train_s:.0f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
