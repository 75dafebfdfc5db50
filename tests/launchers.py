"""Runner launchers for Cores that are built in a test without Ray."""

from __future__ import annotations

from typing import Any


class NoRunners:
    """The launcher of a Core on which no job may start (export and DICOM benches)."""

    def launch(self, job: Any) -> None:
        raise AssertionError("no job is started on this Core")

    def running_jobs(self) -> set[str]:
        return set()

    def cancel(self, job_id: str) -> None:
        pass
