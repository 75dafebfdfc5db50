"""Sources configured by host name: resolved to every address, refreshed, matched."""

from __future__ import annotations

import socket
import threading

from clara_ray.config.dicom import AeTitleConfig, DicomConfig, DicomSettings, SourceConfig
from clara_ray.dicom.policy import decide
from clara_ray.dicom.sources import SourceAddresses

MiB = 1024 * 1024
STRICT = DicomSettings(reject_unknown_sources=True, disk_reserve_mb=0)


def _config(*sources: tuple[str, str]) -> DicomConfig:
    return DicomConfig(
        aetitles=(AeTitleConfig(ae_title="CLARA", pipelines=("p",)),),
        sources=tuple(SourceConfig(ae_title=a, host=h) for a, h in sources),
    )


def test_a_source_named_localhost_matches_its_loopback_addresses() -> None:
    config = _config(("PACS", "localhost"))
    sources = SourceAddresses()
    sources.update(config)
    assert "127.0.0.1" in sources.addresses["localhost"]
    assert (
        decide("CLARA", "PACS", "127.0.0.1", config, STRICT, MiB, resolved=sources.addresses)
        is None
    )
    assert config.is_known_source("PACS", "::ffff:127.0.0.1", sources.addresses)  # dual stack
    assert not config.is_known_source("OTHER", "127.0.0.1", sources.addresses)
    assert not config.is_known_source("PACS", "10.9.9.9", sources.addresses)
    assert not config.is_known_source("PACS", "127.0.0.1")  # a name never matches unresolved


def test_an_ip_literal_matches_in_any_spelling() -> None:
    config = _config(("PACS", "10.0.0.5"), ("CT", "fe80:0::1"))
    assert config.is_known_source("PACS", "10.0.0.5")
    assert config.is_known_source("PACS", "::ffff:10.0.0.5")
    assert config.is_known_source("CT", "fe80::1")
    assert not config.is_known_source("PACS", "10.0.0.50")


def test_names_are_resolved_on_update_and_again_on_refresh() -> None:
    answers = {"pacs.hospital": frozenset({"10.0.0.7", "fd00::7"})}
    asked: list[str] = []

    def resolver(name: str) -> frozenset[str]:
        asked.append(name)
        if name not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[name]

    config = _config(("PACS", "pacs.hospital"), ("CT", "10.0.0.9"))
    sources = SourceAddresses(resolver)
    sources.update(config)
    assert asked == ["pacs.hospital"]  # IP literals need no lookup
    assert config.is_known_source("PACS", "fd00::7", sources.addresses)
    sources.update(config)
    assert asked == ["pacs.hospital"]  # unchanged names wait for the periodic refresh

    answers["pacs.hospital"] = frozenset({"10.0.0.8"})  # the PACS moved
    sources.refresh()
    assert config.is_known_source("PACS", "10.0.0.8", sources.addresses)
    assert not config.is_known_source("PACS", "10.0.0.7", sources.addresses)

    del answers["pacs.hospital"]  # DNS down: the last addresses stay
    sources.refresh()
    assert config.is_known_source("PACS", "10.0.0.8", sources.addresses)
    sources.update(_config(("CT", "10.0.0.9")))  # removed sources are forgotten
    assert "pacs.hospital" not in sources.addresses


def test_the_refresh_thread_stops() -> None:
    sources = SourceAddresses(lambda name: frozenset({"10.0.0.1"}))
    sources.update(_config(("PACS", "pacs.hospital")))
    stop = threading.Event()
    thread = threading.Thread(target=sources.run, args=(stop, 0.01))
    thread.start()
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_an_unknown_source_rejection_names_the_address_and_the_calling_ae() -> None:
    config = _config(("PACS", "localhost"))
    sources = SourceAddresses()
    sources.update(config)
    rejection = decide(
        "CLARA", "MODALITY", "10.1.2.3", config, STRICT, MiB, resolved=sources.addresses
    )
    assert rejection is not None and rejection.codes == (1, 1, 3)
    assert "calling AE title 'MODALITY' from 10.1.2.3 is not a configured source" in (
        rejection.message
    )
    assert "clara-ray dicom create source MODALITY --host 10.1.2.3" in rejection.message
