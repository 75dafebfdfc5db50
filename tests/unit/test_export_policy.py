"""Export retry policy (backoff, attempts, classification) and the SCU's association planning."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from clara_ray.config.dicom import DestinationConfig, ExportSettings
from clara_ray.errors import ClaraError
from clara_ray.export.outcome import DicomSendError, SendResult, describe_status
from clara_ray.export.policy import classify, classify_status, next_delay, should_retry
from clara_ray.export.send_plan import MAX_CONTEXTS, FileEntry, plan_associations, read_entry
from clara_ray.sample import generate_phantom, write_ct_series

DEST = DestinationConfig(name="PACS", ae_title="ORTHANC", host="10.0.0.5", port=4242)


# -- backoff schedule -------------------------------------------------------------------


def test_delays_double_from_the_first_backoff() -> None:
    settings = ExportSettings(attempts=5, backoff_seconds=2, max_backoff_seconds=300)
    assert [next_delay(n, settings) for n in range(1, 6)] == [2, 4, 8, 16, 32]


def test_delays_are_capped() -> None:
    settings = ExportSettings(attempts=20, backoff_seconds=1.5, max_backoff_seconds=10)
    assert [next_delay(n, settings) for n in range(1, 6)] == [1.5, 3, 6, 10, 10]
    assert next_delay(10_000, settings) == 10


def test_defaults_give_a_bounded_schedule() -> None:
    settings = ExportSettings()
    delays = [next_delay(n, settings) for n in range(1, settings.attempts)]
    assert delays == sorted(delays)
    assert all(0 < d <= settings.max_backoff_seconds for d in delays)


def test_should_retry_until_attempts_are_used() -> None:
    settings = ExportSettings(attempts=3)
    assert [should_retry(n, settings) for n in (1, 2, 3, 4)] == [True, True, False, False]
    assert not should_retry(1, ExportSettings(attempts=1))


@pytest.mark.parametrize("bad", [0, -1])
def test_attempt_numbers_start_at_one(bad: int) -> None:
    with pytest.raises(ValueError, match=rf"attempt must be 1 or more .* got {bad}"):
        next_delay(bad, ExportSettings())
    with pytest.raises(ValueError, match="attempt must be 1 or more"):
        should_retry(bad, ExportSettings())


def test_attempt_must_be_an_int() -> None:
    with pytest.raises(TypeError, match="attempt must be an int, got float"):
        next_delay(1.5, ExportSettings())  # type: ignore[arg-type]


# -- classification ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "reject", "decision"),
    [
        ("unreachable", None, "retry"),
        ("timeout", None, "retry"),
        ("aborted", None, "retry"),
        ("rejected", (2, 3, 1), "retry"),  # transient: temporary congestion
        ("rejected", (2, 3, 2), "retry"),  # transient: local limit exceeded
        ("rejected", (1, 1, 7), "fail"),  # permanent: called AE title not recognised
        ("rejected", (1, 1, 3), "fail"),  # permanent: calling AE title not recognised
        ("rejected", None, "fail"),  # e.g. a C-ECHO failure status
        ("tls", None, "fail"),
        ("no-context", None, "fail"),
    ],
)
def test_classify_send_errors(
    kind: str, reject: tuple[int, int, int] | None, decision: str
) -> None:
    error = DicomSendError(DEST, kind, "detail", reject=reject)  # type: ignore[arg-type]
    assert classify(error) == decision


def test_send_error_names_the_destination() -> None:
    error = DicomSendError(DEST, "unreachable", "unreachable: Connection refused")
    assert isinstance(error, ClaraError)
    assert str(error) == (
        "destination 'PACS' (AE 'ORTHANC' at 10.0.0.5:4242): unreachable: Connection refused"
    )


@pytest.mark.parametrize(
    ("status", "decision"),
    [
        (0xA700, "retry"),  # out of resources
        (0xA7FF, "retry"),
        (0xA900, "fail"),  # data set does not match SOP class
        (0xC000, "fail"),  # cannot understand
        (0xC211, "fail"),  # an SCP handler raised
        (0x0122, "fail"),  # SOP class not supported
        (0x0124, "fail"),  # not authorized
        ("aborted: association ended before the C-STORE response", "retry"),
        ("timeout: no C-STORE response in 30 s; association aborted", "retry"),
        ("no-context: peer accepted no context for CT Image Storage in RLE Lossless", "fail"),
        ("unreadable: not a DICOM Part 10 file", "fail"),
    ],
)
def test_classify_instance_status(status: int | str, decision: str) -> None:
    assert classify_status(status) == decision


def test_result_is_retried_when_any_failure_is_transient() -> None:
    permanent = SendResult(sent=3, failed=[("a.dcm", 0xA900), ("b.dcm", 0xC000)])
    assert classify(permanent) == "fail"
    mixed = SendResult(sent=3, failed=[("a.dcm", 0xA900), ("b.dcm", 0xA702)])
    assert classify(mixed) == "retry"
    cut = SendResult(sent=3, failed=[("a.dcm", "aborted: not sent, the association had ended")])
    assert classify(cut) == "retry"


def test_result_without_failures_cannot_be_classified() -> None:
    with pytest.raises(ValueError, match="SendResult without failures"):
        classify(SendResult(sent=2))


def test_other_exceptions() -> None:
    assert classify(ConnectionResetError("reset")) == "retry"
    assert classify(RuntimeError("bug")) == "fail"
    with pytest.raises(TypeError, match="expects a DicomSendError, a SendResult or an exception"):
        classify("unreachable")  # type: ignore[arg-type]


def test_describe_status() -> None:
    assert describe_status(0xA700) == "0xA700 (Refused: Out of Resources)"
    assert describe_status(0xB000) == "0xB000 (Coercion of Data Elements)"


# -- association planning (send_plan.plan_associations) ----------------------------------------


def _entry(index: int, sop_class: str, syntax: str) -> FileEntry:
    return FileEntry(
        path=Path(f"/r/{index}.dcm"),
        name=f"op/{index}.dcm",
        sop_class=sop_class,
        sop_instance=f"1.2.3.{index}",
        transfer_syntax=syntax,
        size=100,
    )


def test_one_context_per_pair_plus_vr_fallbacks() -> None:
    entries = [
        _entry(0, CTImageStorage, ExplicitVRLittleEndian),
        _entry(1, CTImageStorage, RLELossless),
        _entry(2, CTImageStorage, ExplicitVRLittleEndian),
        _entry(3, "1.2.840.10008.5.1.4.1.1.7", ImplicitVRLittleEndian),
    ]
    [plan] = plan_associations(entries)
    assert plan.contexts == (
        (CTImageStorage, ExplicitVRLittleEndian),
        (CTImageStorage, RLELossless),
        ("1.2.840.10008.5.1.4.1.1.7", ImplicitVRLittleEndian),
        (CTImageStorage, ImplicitVRLittleEndian),
        ("1.2.840.10008.5.1.4.1.1.7", ExplicitVRLittleEndian),
    )
    assert plan.files == tuple(entries)  # the caller's order


def test_fallback_shared_with_a_present_pair() -> None:
    entries = [
        _entry(0, CTImageStorage, ExplicitVRLittleEndian),
        _entry(1, CTImageStorage, ImplicitVRLittleEndian),
    ]
    [plan] = plan_associations(entries)
    assert plan.contexts == (
        (CTImageStorage, ExplicitVRLittleEndian),
        (CTImageStorage, ImplicitVRLittleEndian),
    )
    [plain] = plan_associations(entries, fallbacks=False)
    assert len(plain.contexts) == 2


def test_more_than_128_contexts_split_into_associations() -> None:
    # 100 SOP classes in Explicit VR (100 + 100 fallback contexts) and 60 in JPEG 2000.
    entries = [
        _entry(i, f"1.2.826.0.1.{i}", ExplicitVRLittleEndian if i < 100 else JPEG2000Lossless)
        for i in range(160)
    ]
    entries += [_entry(1000 + i, f"1.2.826.0.1.{i}", ExplicitVRLittleEndian) for i in range(5)]
    plans = plan_associations(entries)

    assert len(plans) == 3
    assert all(len(p.contexts) <= MAX_CONTEXTS for p in plans)
    assert all(len(set(p.contexts)) == len(p.contexts) for p in plans)
    sent = [e for p in plans for e in p.files]
    assert sorted(e.name for e in sent) == sorted(e.name for e in entries)
    for plan in plans:  # every file's own pair is proposed where it is sent
        pairs = set(plan.contexts)
        assert all((e.sop_class, e.transfer_syntax) in pairs for e in plan.files)
    # a pair's files stay together: the repeats of the first 5 classes go with them
    assert {e.name for e in plans[0].files} >= {f"op/{1000 + i}.dcm" for i in range(5)}
    # 64 classes x 2; 36 x 2 + 56 JPEG 2000; the last 4 JPEG 2000
    assert [len(p.contexts) for p in plans] == [128, 128, 4]


def test_planning_limits() -> None:
    assert plan_associations([]) == []
    with pytest.raises(ValueError, match="max_contexts must be between 2 and 128, got 129"):
        plan_associations([], max_contexts=129)
    entries = [_entry(i, f"1.2.826.0.1.{i}", RLELossless) for i in range(5)]
    assert [len(p.contexts) for p in plan_associations(entries, max_contexts=2)] == [2, 2, 1]


def test_read_entry_reads_the_file_meta(tmp_path: Path) -> None:
    [path] = write_ct_series(generate_phantom(slices=1, rows=16, columns=16), tmp_path)
    entry = read_entry(path)
    assert (entry.sop_class, entry.transfer_syntax) == (CTImageStorage, ExplicitVRLittleEndian)
    assert entry.size == path.stat().st_size
    assert entry.name == str(path)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\0" * 10)
    with pytest.raises(ValueError, match=r"junk\.dcm is not a DICOM Part 10 file"):
        read_entry(junk)


def test_send_error_survives_pickling() -> None:
    """Ray pickles exceptions raised in actors (echo in the DICOM adapter)."""
    import pickle

    error = DicomSendError(DEST, "rejected", "association rejected", reject=(2, 3, 1))
    error.result = SendResult(sent=1, failed=[("a.dcm", 0xA700)])
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.kind, copy.reject, copy.destination, str(copy)) == (
        "rejected",
        (2, 3, 1),
        DEST,
        str(error),
    )
    assert copy.result == error.result
    assert classify(copy) == "retry"
