"""A Triton-layout model repository: ``<repo>/<model>/config.pbtxt`` and ``<repo>/<model>/<version>/model.pt``.

:class:`ModelRepository` lists the model folders and reads one into a
:class:`ModelEntry`: its :class:`~clara_ray.inference.config.ModelConfig`,
the versions its policy serves and their model files.  Errors name the file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from clara_ray.inference.config import ModelConfig
from clara_ray.inference.errors import ModelRepositoryError, UnknownModelError

__all__ = ["CONFIG_FILE", "ModelEntry", "ModelRepository"]

CONFIG_FILE = "config.pbtxt"


@dataclass(frozen=True)
class ModelEntry:
    """A model of the repository: its folder, its configuration and the versions it serves."""

    name: str
    path: Path
    config: ModelConfig
    versions: tuple[str, ...]

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def default_version(self) -> str:
        """The highest version served."""
        return self.versions[-1]

    def resolve_version(self, version: str | int | None) -> str:
        """``version`` as served, the default for None or ""; unknown ones raise :class:`UnknownModelError`."""
        if version is None or version == "":
            return self.default_version
        v = str(version)
        if v not in self.versions:
            raise UnknownModelError(
                f"model {self.name!r} has no version {v!r}; versions served: {', '.join(self.versions)}"
            )
        return v

    def model_file(self, version: str | int | None = None) -> Path:
        return self.path / self.resolve_version(version) / self.config.model_filename

    def metadata(self) -> dict[str, Any]:
        return self.config.metadata(list(self.versions))


class ModelRepository:
    """A folder of models in Triton's layout; :meth:`model` reads and checks one of them."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ModelRepositoryError(f"model repository {str(self.root)!r} is not a directory")

    def __repr__(self) -> str:
        return f"ModelRepository({str(self.root)!r})"

    def names(self) -> list[str]:
        """The model folders (every non-hidden sub-folder, as Triton sees them), sorted."""
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def model(self, name: str) -> ModelEntry:
        """Read ``<root>/<name>``: its config, its version folders and their model files."""
        folder = self.root / name
        if not name or "/" in name or name.startswith(".") or not folder.is_dir():
            raise UnknownModelError(
                f"model {name!r} is not in the model repository {str(self.root)!r}; "
                f"models: {', '.join(self.names()) or 'none'}"
            )
        config_file = folder / CONFIG_FILE
        if not config_file.is_file():
            raise ModelRepositoryError(
                f"{config_file}: missing; every model folder needs a {CONFIG_FILE}"
            )
        config = ModelConfig.parse(config_file.read_text(), str(config_file))
        if not config.name:
            config = replace(config, name=name)
        elif config.name != name:
            raise ModelRepositoryError(
                f"{config_file}: name: {config.name!r} does not match the model folder {name!r}"
            )
        available = sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
        if not available:
            raise ModelRepositoryError(
                f"{folder}: no version folder; expected numeric sub-folders such as "
                f"{folder / '1'} holding {config.model_filename}"
            )
        if config.version_policy.kind == "specific":
            missing = [v for v in config.version_policy.versions if v not in available]
            if missing:
                raise ModelRepositoryError(
                    f"{config_file}: version_policy.specific.versions: version folder "
                    f"{folder / str(missing[0])} is missing (found {', '.join(map(str, available))})"
                )
        served = [str(v) for v in config.version_policy.select(available)]
        for v in served:
            file = folder / v / config.model_filename
            if not file.exists():
                raise ModelRepositoryError(
                    f"{file}: missing model file for version {v} of model {name!r} "
                    f"(platform {config.platform_or_backend or 'unset'!r} expects {config.model_filename!r})"
                )
        return ModelEntry(name=name, path=folder, config=config, versions=tuple(served))

    def models(self, names: list[str] | None = None) -> list[ModelEntry]:
        """The named models (default: all); an empty repository is an error."""
        chosen = self.names() if names is None else names
        if not chosen:
            raise ModelRepositoryError(f"model repository {str(self.root)!r} holds no model")
        return [self.model(n) for n in chosen]
