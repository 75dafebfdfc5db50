"""The association policy: which A-ASSOCIATE-RJ for which request."""

from __future__ import annotations

import pytest

from clara_ray.config.dicom import AeTitleConfig, DicomConfig, DicomSettings, SourceConfig
from clara_ray.dicom.policy import Rejection, StoreStatus, decide

MiB = 1024 * 1024
CONFIG = DicomConfig(
    aetitles=(AeTitleConfig(ae_title="CLARA", pipelines=("p",)),),
    sources=(SourceConfig(ae_title="PACS", host="10.0.0.5"),),
)
STRICT = DicomSettings(reject_unknown_sources=True, disk_reserve_mb=100, max_associations=25)
OPEN = STRICT.model_copy(update={"reject_unknown_sources": False})


def test_known_source_to_known_ae_is_accepted() -> None:
    assert decide("CLARA", "PACS", "10.0.0.5", CONFIG, STRICT, 200 * MiB) is None
    assert decide("CLARA  ", " PACS", "10.0.0.5", CONFIG, STRICT, 200 * MiB) is None


def test_unknown_called_ae_is_rejected_permanently_by_the_user() -> None:
    rejection = decide("OTHER", "PACS", "10.0.0.5", CONFIG, STRICT, 200 * MiB)
    assert rejection is not None
    assert rejection.codes == (1, 1, 7)
    assert "called AE title 'OTHER'" in rejection.message


@pytest.mark.parametrize(("calling", "host"), [("PACS", "10.0.0.6"), ("MODALITY", "10.0.0.5")])
def test_unknown_source_is_rejected_when_configured(calling: str, host: str) -> None:
    rejection = decide("CLARA", calling, host, CONFIG, STRICT, 200 * MiB)
    assert isinstance(rejection, Rejection)
    assert rejection.codes == (1, 1, 3)
    assert f"calling AE title {calling!r} from {host}" in rejection.message
    assert decide("CLARA", calling, host, CONFIG, OPEN, 200 * MiB) is None


def test_called_ae_is_checked_before_the_source() -> None:
    rejection = decide("OTHER", "STRANGER", "10.9.9.9", CONFIG, STRICT, 200 * MiB)
    assert rejection is not None and rejection.codes == (1, 1, 7)


def test_low_disk_is_a_transient_provider_rejection() -> None:
    rejection = decide("CLARA", "PACS", "10.0.0.5", CONFIG, STRICT, 99 * MiB)
    assert rejection is not None
    assert rejection.codes == (2, 3, 2)
    assert rejection.message == "spool disk low: 99 MiB free, reserve is 100 MiB"
    assert decide("CLARA", "PACS", "10.0.0.5", CONFIG, STRICT, 100 * MiB) is None


def test_association_limit_is_a_transient_local_limit() -> None:
    kwargs = {"active_associations": 24}
    assert decide("CLARA", "PACS", "10.0.0.5", CONFIG, STRICT, 200 * MiB, **kwargs) is None
    rejection = decide(
        "CLARA", "PACS", "10.0.0.5", CONFIG, STRICT, 200 * MiB, active_associations=25
    )
    assert rejection is not None
    assert rejection.codes == (2, 3, 2)
    assert "the limit is 25" in rejection.message


def test_store_statuses_have_their_standard_codes() -> None:
    assert StoreStatus.Success == 0x0000
    assert StoreStatus.RefusedOutOfResources == 0xA700
    assert StoreStatus.RefusedSopClassNotSupported == 0x0122
    assert StoreStatus.ErrorDataSetDoesNotMatchSopClass == 0xA900
    assert StoreStatus.ErrorCannotUnderstand == 0xC000
    assert StoreStatus.ProcessingFailure == 0x0110
