"""Operator contexts for unit tests: real local storage with a sealed one-file payload."""

from __future__ import annotations

from pathlib import Path

from clara_ray.context import OperatorContext
from clara_ray.storage import Storage


def operator_context(
    tmp_path: Path, operator: str, *, pipeline: str = "test", gpu_ids: tuple[int, ...] = ()
) -> OperatorContext:
    """A context for job ``job-1`` whose results go to ``<tmp>/storage/results/job-1/<operator>``."""
    storage = Storage(str(tmp_path / "storage"))
    source = tmp_path / "source"
    source.mkdir(exist_ok=True)
    (source / "dummy.dcm").write_bytes(b"\0")
    if not storage.is_sealed("payload-1"):
        storage.upload_payload("payload-1", source)
        storage.seal_payload("payload-1")
    return OperatorContext(
        job_id="job-1",
        job_name="test",
        pipeline=pipeline,
        operator=operator,
        payload=storage.payload_view("payload-1"),
        results=storage.results("job-1", operator),
        gpu_ids=gpu_ids,
    )
