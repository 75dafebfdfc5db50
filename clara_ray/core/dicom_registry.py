"""The DICOM adapter's run-time configuration (AE titles, sources, destinations), kept by the Core."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

from pydantic import ValidationError

from clara_ray.config.dicom import (
    AeTitleConfig,
    DestinationConfig,
    DicomConfig,
    DicomSettings,
    SourceConfig,
)
from clara_ray.core.store import Store
from clara_ray.errors import ConfigError, NotFoundError

__all__ = ["DicomRegistry", "EntryKind"]

log = logging.getLogger(__name__)
EntryKind = Literal["aetitle", "source", "destination"]
_MODELS: dict[str, type[AeTitleConfig] | type[SourceConfig] | type[DestinationConfig]] = {
    "aetitle": AeTitleConfig,
    "source": SourceConfig,
    "destination": DestinationConfig,
}


def _key(kind: str, entry: Any) -> str:
    if kind == "aetitle":
        return str(entry.ae_title)
    if kind == "source":
        return f"{entry.ae_title}@{entry.host}"
    return str(entry.name)


def _validated(kind: str, data: dict[str, Any]) -> Any:
    model = _MODELS.get(kind)
    if model is None:
        raise ConfigError(
            f"unknown DICOM entry kind {kind!r}; expected aetitle, source or destination"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or kind}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid DICOM {kind}: {problems}") from None


class DicomRegistry:
    """AE titles, sources and destinations; the Core's DICOM verbs.

    Args:
        store: the entries' home.
        check_pipeline: raises :class:`~clara_ray.errors.NotFoundError` for a pipeline
            name that does not exist (an AE title may only name existing pipelines).
    """

    def __init__(self, store: Store, check_pipeline: Callable[[str], object]) -> None:
        self.store = store
        self._check_pipeline = check_pipeline

    def dicom_put(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an entry (idempotent); AE titles must name existing pipelines."""
        entry = _validated(kind, data)
        if kind == "aetitle":
            for pipeline in entry.pipelines:
                self._check_pipeline(pipeline)
        self.store.put_dicom_entry(kind, _key(kind, entry), entry.model_dump(mode="json"))
        log.info("DICOM %s %s stored", kind, _key(kind, entry))
        return entry.model_dump(mode="json")

    def dicom_delete(self, kind: str, key: str) -> bool:
        if kind not in _MODELS:
            raise ConfigError(
                f"unknown DICOM entry kind {kind!r}; expected aetitle, source or destination"
            )
        if not self.store.delete_dicom_entry(kind, key):
            raise NotFoundError(f"no DICOM {kind} '{key}' (see `clara-ray dicom list {kind}s`)")
        log.info("DICOM %s %s deleted", kind, key)
        return True

    def dicom_config(self) -> DicomConfig:
        entries = self.store.list_dicom_entries()
        return DicomConfig(
            aetitles=tuple(AeTitleConfig.model_validate(b) for k, b in entries if k == "aetitle"),
            sources=tuple(SourceConfig.model_validate(b) for k, b in entries if k == "source"),
            destinations=tuple(
                DestinationConfig.model_validate(b) for k, b in entries if k == "destination"
            ),
        )

    def dicom_seed(self, settings: DicomSettings) -> None:
        """Add the settings file's entries that the Core does not hold yet."""
        existing = {
            (k, _key(k, _MODELS[k].model_validate(b))) for k, b in self.store.list_dicom_entries()
        }
        seeds: list[tuple[str, Any]] = [
            *(("aetitle", a) for a in settings.aetitles),
            *(("source", s) for s in settings.sources),
            *(("destination", d) for d in settings.destinations),
        ]
        for kind, entry in seeds:
            if (kind, _key(kind, entry)) not in existing:
                self.store.put_dicom_entry(kind, _key(kind, entry), entry.model_dump(mode="json"))
