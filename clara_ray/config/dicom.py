"""DICOM adapter configuration: the listener, Clara AE titles, sources and destinations.

The listener's settings live in the settings file (``dicom:``).  AE titles,
sources and destinations may be seeded there too, and are managed at run time
through the Core (``clara-ray dicom create|list|delete ...``), which stores them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "AeTitleConfig",
    "DestinationConfig",
    "DicomConfig",
    "DicomSettings",
    "ExportSettings",
    "SourceConfig",
    "TlsSettings",
    "check_ae_title",
]

_AE_TITLE = re.compile(r"^[\x21-\x5b\x5d-\x7e]([\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_UID = re.compile(r"^[0-9.]{1,64}$")


def check_ae_title(value: str) -> str:
    """An AE title: 1-16 characters of the default repertoire, no backslash, not all spaces."""
    text = value.strip()
    if not _AE_TITLE.match(text):
        raise ValueError(
            f"AE title {value!r} must be 1 to 16 printable ASCII characters without a backslash"
        )
    return text


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AeTitleConfig(_Model):
    """A Clara AE title: studies sent to it become payloads of its pipelines."""

    ae_title: str = Field(description="The called AE title peers send to.")
    pipelines: tuple[str, ...] = Field(min_length=1, description="Pipelines run on each payload.")
    grouping: Literal["study", "series"] = Field(
        "study", description="Group instances by Study or by Series Instance UID."
    )
    timeout: float = Field(5.0, gt=0, le=86400, description="Seconds of quiet that close a group.")
    priority: Literal["lower", "normal", "higher", "immediate"] = Field(
        "normal", description="Priority of the jobs created."
    )
    allowed_sop_classes: tuple[str, ...] = Field(
        (), description="If set, only these SOP Class UIDs are accepted."
    )
    ignored_sop_classes: tuple[str, ...] = Field(
        (), description="These SOP Class UIDs are answered with a failure status."
    )

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: check_ae_title(v)))

    @field_validator("allowed_sop_classes", "ignored_sop_classes")
    @classmethod
    def _uids(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [u for u in v if not _UID.match(u)]
        if bad:
            raise ValueError(f"SOP Class UIDs must be dotted digits, got {bad}")
        return v

    def accepts(self, sop_class_uid: str) -> bool:
        if sop_class_uid in self.ignored_sop_classes:
            return False
        return not self.allowed_sop_classes or sop_class_uid in self.allowed_sop_classes


class SourceConfig(_Model):
    """A known peer: calling AE title plus host (an IP address or a host name)."""

    ae_title: str = Field(description="Calling AE title of the peer.")
    host: str = Field(min_length=1, description="The peer's IP address or host name.")

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: check_ae_title(v)))


class DestinationConfig(_Model):
    """Where DICOM results go."""

    name: str = Field(description="Name pipelines use, e.g. PACS.")
    ae_title: str = Field(description="Called AE title of the destination.")
    host: str = Field(min_length=1, description="Host name or IP address.")
    port: int = Field(ge=1, le=65535, description="DICOM port.")
    tls: bool = Field(False, description="Send over DICOM TLS (settings dicom.tls gives the CA).")

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: check_ae_title(v)))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(
                f"destination name must be 1-64 letters, digits, '_', '.', '-'; got {v!r}"
            )
        return v


class DicomConfig(_Model):
    """The run-time configuration the Core stores: AE titles, sources, destinations."""

    aetitles: tuple[AeTitleConfig, ...] = ()
    sources: tuple[SourceConfig, ...] = ()
    destinations: tuple[DestinationConfig, ...] = ()

    def aetitle(self, called: str) -> AeTitleConfig | None:
        return next((a for a in self.aetitles if a.ae_title == called.strip()), None)

    def destination(self, name: str) -> DestinationConfig | None:
        return next((d for d in self.destinations if d.name == name), None)

    def is_known_source(
        self, calling: str, host: str, resolved: Mapping[str, frozenset[str]] | None = None
    ) -> bool:
        """Whether a source has AE title ``calling`` and the peer address ``host``.

        A source's host matches when it is that address (an IP literal, in any
        spelling) or, for a host name, when ``resolved`` (host name -> its addresses,
        see :class:`~clara_ray.dicom.sources.SourceAddresses`) lists the address.
        """
        calling, peer = calling.strip(), normal_address(host)
        for source in self.sources:
            if source.ae_title != calling:
                continue
            if source.host == host or normal_address(source.host) == peer:
                return True
            if resolved is not None and peer in resolved.get(source.host, ()):
                return True
        return False


def normal_address(host: str) -> str:
    """An IP address in its canonical spelling (an IPv4-mapped IPv6 address as IPv4, no
    zone); anything else unchanged."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class TlsSettings(_Model):
    enabled: bool = Field(False, description="Require DICOM TLS on the listener.")
    certificate: Path | None = Field(None, description="PEM server certificate (chain).")
    private_key: Path | None = Field(None, description="PEM private key of the certificate.")
    ca_certificates: Path | None = Field(
        None, description="PEM CA bundle: verifies client certificates and export peers."
    )
    require_client_certificate: bool = Field(False, description="Mutual TLS on the listener.")

    @model_validator(mode="after")
    def _complete(self) -> TlsSettings:
        if self.enabled and (self.certificate is None or self.private_key is None):
            raise ValueError(
                "dicom.tls.enabled needs dicom.tls.certificate and dicom.tls.private_key"
            )
        if self.require_client_certificate and self.ca_certificates is None:
            raise ValueError("dicom.tls.require_client_certificate needs dicom.tls.ca_certificates")
        return self


class ExportSettings(_Model):
    attempts: int = Field(5, ge=1, le=100, description="C-STORE attempts per export.")
    backoff_seconds: float = Field(
        2.0, gt=0, description="First retry delay; doubles each attempt."
    )
    max_backoff_seconds: float = Field(300.0, gt=0, description="Upper bound of the retry delay.")
    workers: int = Field(8, ge=1, le=256, description="Exports sent at once, all destinations.")
    concurrency_per_destination: int = Field(
        2, ge=1, le=64, description="Exports sent at once to one destination."
    )
    lease_seconds: float = Field(
        600.0,
        ge=300,
        le=86400,
        description=(
            "How long a claimed export is held; a send stops starting instances in time to "
            "end within it, and an export held by an adapter that died is sent again after it."
        ),
    )


class DicomSettings(_Model):
    enabled: bool = Field(True, description="Start the DICOM adapter with `clara-ray up`.")
    host: str = Field("127.0.0.1", description="Listening address (0.0.0.0 for every interface).")
    port: int = Field(11112, ge=1, le=65535, description="Listening port.")
    ae_title: str = Field("CLARA", description="The adapter's own AE title (calling AE on export).")
    receivers: int = Field(2, ge=1, le=64, description="Receiving processes sharing the port.")
    durability: Literal["instance", "association"] = Field(
        "instance",
        description=(
            "When a received instance is fsynced: before its Success status (instance), or "
            "with the association's other instances before the release is answered (association)."
        ),
    )
    max_associations: int = Field(
        32, ge=25, le=1000, description="Concurrent associations per receiver."
    )
    acse_timeout: float = Field(10.0, gt=0, description="Seconds to wait for association messages.")
    dimse_timeout: float = Field(60.0, gt=0, description="Seconds to wait for DIMSE messages.")
    network_timeout: float = Field(30.0, gt=0, description="Seconds an idle connection is kept.")
    max_pdu: int = Field(
        262144,
        ge=4096,
        le=16 * 1024 * 1024,
        description="Largest PDU we receive; a peer declaring a larger one is aborted.",
    )
    reject_unknown_sources: bool = Field(
        True, description="Refuse peers not listed as sources (turn off only for a demo)."
    )
    spool_dir: Path | None = Field(None, description="Spool folder. Default: <data_dir>/spool.")
    disk_reserve_mb: int = Field(
        1024, ge=0, description="Refuse new associations when less free space than this remains."
    )
    max_instance_mb: int = Field(
        2048,
        gt=0,
        description=(
            "Largest data set (MiB) one C-STORE may carry, inflated size for a deflated one; "
            "a larger instance is refused with status 0xA700 (out of resources)."
        ),
    )
    tls: TlsSettings = Field(default_factory=TlsSettings, description="DICOM TLS settings.")
    export: ExportSettings = Field(default_factory=ExportSettings, description="Export retries.")
    aetitles: tuple[AeTitleConfig, ...] = Field((), description="AE titles seeded into the Core.")
    sources: tuple[SourceConfig, ...] = Field((), description="Sources seeded into the Core.")
    destinations: tuple[DestinationConfig, ...] = Field((), description="Destinations seeded.")

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: check_ae_title(v)))
