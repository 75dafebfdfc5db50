"""The de-identification operator: no patient identity left anywhere, valid and consistent output."""

from __future__ import annotations

import json
import logging
import posixpath
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from clara_ray.context import OperatorContext
from clara_ray.errors import OperatorError
from clara_ray.operators.deidentify import Deidentifier, deidentify
from clara_ray.sample import generate_phantom, write_ct_series
from clara_ray.storage import Storage

NAME = "QUIRKE^ZEBEDIAH"
PATIENT_ID = "ZQ-4471-XK"
BIRTH_DATE = "19471203"
SECRETS = ("QUIRKE", "ZEBEDIAH", PATIENT_ID, BIRTH_DATE)
SALT = "test-salt-0123456789abcdef"
SLICES = 10
OPERATOR = "deidentify"


@dataclass
class Source:
    folder: Path
    storage: Storage
    payload_id: str
    datasets: dict[int, Dataset]  # by instance number


def _add_phi_in_sequences(path: Path) -> None:
    """PHI where a naive tool would miss it: nested sequences, private tags, free text."""
    ds = pydicom.dcmread(path)
    other = Dataset()
    other.PatientID = PATIENT_ID
    other.IssuerOfPatientID = "HOSPITAL"
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.OtherPatientNames = NAME
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.1.1"
    referenced.ReferencedSOPInstanceUID = generate_uid()
    referenced.PatientName = NAME
    referenced.PatientID = PATIENT_ID
    ds.ReferencedPatientSequence = Sequence([referenced])
    request = Dataset()
    request.RequestedProcedureID = PATIENT_ID
    request.ScheduledProcedureStepDescription = f"CT chest for {NAME}"
    request.ScheduledProcedureStepID = PATIENT_ID
    ds.RequestAttributesSequence = Sequence([request])
    # A sequence the profile keeps (its UIDs are remapped): PHI hidden one level down.
    source = Dataset()
    source.ReferencedSOPClassUID = CTImageStorage
    source.ReferencedSOPInstanceUID = generate_uid()
    source.PatientName = NAME
    source.PatientBirthDate = BIRTH_DATE
    ds.SourceImageSequence = Sequence([source])
    ds.PatientComments = f"{NAME} born {BIRTH_DATE}, MRN {PATIENT_ID}"
    ds.ImageComments = f"patient {PATIENT_ID}"
    ds.OperatorsName = NAME
    ds.PerformingPhysicianName = NAME
    ds.InstitutionName = "QUIRKE MEMORIAL HOSPITAL"
    ds.DeviceSerialNumber = PATIENT_ID
    block = ds.private_block(0x0011, "ACME IMAGING 1.0", create=True)
    block.add_new(0x01, "LO", NAME)
    block.add_new(0x02, "LO", PATIENT_ID)
    nested = Dataset()
    nested.PatientName = NAME
    block.add_new(0x03, "SQ", Sequence([nested]))
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture
def source(tmp_path: Path) -> Source:
    folder = tmp_path / "study"
    paths = write_ct_series(
        generate_phantom(slices=SLICES, rows=32, columns=32, seed=3),
        folder,
        patient_name=NAME,
        patient_id=PATIENT_ID,
        patient_birth_date=BIRTH_DATE,
        series_description=f"CT for {PATIENT_ID}",
    )
    _add_phi_in_sequences(paths[0])
    (folder / "notes.txt").write_text(f"referral letter for {NAME} ({PATIENT_ID})")
    storage = Storage(str(tmp_path / "store"))
    storage.upload_payload("p1", folder)
    storage.seal_payload("p1")
    datasets = {int(pydicom.dcmread(p).InstanceNumber): pydicom.dcmread(p) for p in paths}
    return Source(folder, storage, "p1", datasets)


def _context(src: Source, job_id: str = "job-1", operator: str = OPERATOR) -> OperatorContext:
    return OperatorContext(
        job_id=job_id,
        job_name="deid-test",
        pipeline="deidentify-and-forward",
        operator=operator,
        payload=src.storage.payload_view(src.payload_id),
        results=src.storage.results(job_id, operator),
    )


def _run(src: Source, job_id: str = "job-1", **kwargs: object) -> list[Path]:
    """Run the operator; the output files as local paths, in output order."""
    ctx = _context(src, job_id)
    outputs = deidentify(ctx, ctx.payload, **kwargs)  # type: ignore[arg-type]
    root = Path(src.storage.results_root(job_id))
    return [root / ref for ref in outputs["files"]]


def _elements(ds: Dataset) -> Iterator[pydicom.DataElement]:
    """Every element of ``ds``, at every depth, its file meta included."""
    if hasattr(ds, "file_meta"):
        yield from ds.file_meta
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _elements(item)


def test_no_patient_identity_left_anywhere(source: Source) -> None:
    outputs = _run(source, salt=SALT)
    assert len(outputs) == SLICES
    for path in outputs:
        raw = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in raw, f"{secret!r} in the bytes of {path.name}"
        ds = pydicom.dcmread(path)
        for elem in _elements(ds):
            assert not elem.tag.is_private, f"private element {elem.tag} kept in {path.name}"
            if elem.VR in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN"):
                continue
            text = str(elem.value).upper()
            for secret in SECRETS:
                assert secret not in text, (
                    f"{secret!r} in {elem.keyword or elem.tag} of {path.name}"
                )


def test_phi_elements_replaced_removed_or_emptied(source: Source) -> None:
    by_number = {int(ds.InstanceNumber): ds for ds in map(pydicom.dcmread, _run(source))}
    first = by_number[1]
    assert first.PatientName != "" and first.PatientName != NAME  # a pseudonym (type 2 kept)
    assert first.PatientID not in ("", PATIENT_ID)
    assert first.PatientBirthDate == ""
    assert first.OperatorsName != NAME
    for keyword in (
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "ReferencedPatientSequence",
        "RequestAttributesSequence",
        "PatientComments",
        "ImageComments",
        "PerformingPhysicianName",
        "SeriesDescription",
    ):
        assert keyword not in first, keyword
    kept = first.SourceImageSequence[0]  # kept, with its UIDs and PHI replaced
    assert kept.ReferencedSOPClassUID == CTImageStorage
    assert (
        kept.ReferencedSOPInstanceUID
        != source.datasets[1].SourceImageSequence[0].ReferencedSOPInstanceUID
    )
    assert kept.PatientName != NAME
    assert kept.PatientBirthDate != BIRTH_DATE
    assert first.DeviceSerialNumber not in ("", PATIENT_ID)


def test_identity_removed_and_method_codes(source: Source) -> None:
    for path in _run(source):
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        codes = {
            (c.CodeValue, c.CodingSchemeDesignator) for c in ds.DeidentificationMethodCodeSequence
        }
        assert codes == {("113100", "DCM"), ("113107", "DCM")}
        assert all(len(m) <= 64 for m in ds.DeidentificationMethod)
        assert any("dicognito" in m for m in ds.DeidentificationMethod)


def test_uids_replaced_consistently(source: Source) -> None:
    outputs = _run(source)
    datasets = [pydicom.dcmread(p) for p in outputs]
    original = source.datasets[1]
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
    assert datasets[0].StudyInstanceUID != original.StudyInstanceUID
    assert datasets[0].SeriesInstanceUID != original.SeriesInstanceUID
    assert datasets[0].FrameOfReferenceUID != original.FrameOfReferenceUID
    old_sops = {ds.SOPInstanceUID for ds in source.datasets.values()}
    new_sops = {ds.SOPInstanceUID for ds in datasets}
    assert len(new_sops) == SLICES and not new_sops & old_sops
    for path, ds in zip(outputs, datasets, strict=True):
        assert ds.SOPClassUID == CTImageStorage
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert path.name == f"{ds.SOPInstanceUID}.dcm"
        assert re.fullmatch(r"[0-9.]{1,64}", ds.SOPInstanceUID)


def test_pixels_and_geometry_unchanged_dates_shifted(source: Source) -> None:
    for path in _run(source):
        ds = pydicom.dcmread(path)
        before = source.datasets[int(ds.InstanceNumber)]
        assert ds.PixelData == before.PixelData
        assert ds.file_meta.TransferSyntaxUID == before.file_meta.TransferSyntaxUID
        assert ds.ImagePositionPatient == before.ImagePositionPatient
        assert ds.ImageOrientationPatient == before.ImageOrientationPatient
        assert ds.PixelSpacing == before.PixelSpacing
        assert ds.RescaleIntercept == before.RescaleIntercept
        assert ds.StudyDate != before.StudyDate and len(ds.StudyDate) == 8
        assert ds.StudyDate < before.StudyDate


def test_outputs_are_result_paths_of_the_operator(source: Source) -> None:
    ctx = _context(source, "job-9", operator="anon")
    outputs = deidentify(ctx, ctx.payload)
    files = outputs["files"]
    assert len(files) == SLICES
    assert all(re.fullmatch(r"anon/[0-9.]{1,64}\.dcm", f) for f in files)
    listed = {e.path for e in source.storage.list_results("job-9")}
    assert set(files) == listed
    for f in files:
        source.storage.read_bytes(posixpath.join(source.storage.results_root("job-9"), f))


def test_same_salt_same_output_other_salt_or_none_differs(source: Source) -> None:
    def names(job: str, **kwargs: object) -> list[str]:
        return sorted(p.name for p in _run(source, job, **kwargs))

    salted = names("a", salt=SALT)
    assert names("b", salt=SALT) == salted
    assert names("c", salt=SALT + "-other") != salted
    assert names("d") != names("e")
    study = {pydicom.dcmread(p).StudyInstanceUID for p in _run(source, "f", salt=SALT)}
    assert study == {pydicom.dcmread(p).StudyInstanceUID for p in _run(source, "g", salt=SALT)}


def test_keep_series_description(source: Source) -> None:
    ds = pydicom.dcmread(_run(source, keep_series_description=True)[0])
    assert ds.SeriesDescription == f"CT for {PATIENT_ID}"
    assert any("SeriesDescription" in m for m in ds.DeidentificationMethod)


def test_non_dicom_skipped_with_a_log_line_without_contents(
    source: Source, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    outputs = _run(source)
    assert len(outputs) == SLICES
    assert any(
        "notes.txt" in r.getMessage() and "not a DICOM" in r.getMessage() for r in caplog.records
    )
    for record in caplog.records:
        message = record.getMessage().upper()
        for secret in SECRETS:
            assert secret not in message, f"{secret!r} logged: {record.getMessage()}"


def test_burned_in_annotation_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "study"
    paths = write_ct_series(generate_phantom(slices=3, rows=32, columns=32), folder)
    ds = pydicom.dcmread(paths[1])
    ds.BurnedInAnnotation = "YES"
    ds.save_as(paths[1], enforce_file_format=True)
    storage = Storage(str(tmp_path / "store"))
    storage.upload_payload("p", folder)
    storage.seal_payload("p")
    src = Source(folder, storage, "p", {})
    caplog.set_level(logging.INFO)
    assert len(_run(src)) == 2
    assert any(
        paths[1].name in r.getMessage() and "Burned In Annotation" in r.getMessage()
        for r in caplog.records
    )


def test_payload_without_dicom_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("hello")
    storage = Storage(str(tmp_path / "store"))
    storage.upload_payload("p", folder)
    storage.seal_payload("p")
    with pytest.raises(
        OperatorError, match=r"payload p holds no DICOM instance .*1 file\(s\) skipped"
    ):
        _run(Source(folder, storage, "p", {}))


def test_salt_is_checked(source: Source) -> None:
    with pytest.raises(ValueError, match="salt must be at least 16 characters"):
        _run(source, salt="short")
    with pytest.raises(TypeError, match="salt must be a string or None, got int"):
        _run(source, salt=1234567890123456789)


def test_undecodable_value_error_names_the_file_not_the_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad_date = BIRTH_DATE[:6] + "99"  # day 99: dicognito cannot shift it
    folder = tmp_path / "study"
    paths = write_ct_series(generate_phantom(slices=2, rows=32, columns=32), folder)
    ds = pydicom.dcmread(paths[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid DA, as it should
        ds.AcquisitionDate = bad_date
    ds.save_as(paths[0], enforce_file_format=True)
    storage = Storage(str(tmp_path / "store"))
    storage.upload_payload("p", folder)
    storage.seal_payload("p")
    caplog.clear()  # pydicom logged the bad value above, while the test wrote it
    caplog.set_level(logging.DEBUG)
    with pytest.raises(OperatorError, match=r"CT000001.dcm could not be de-identified") as info:
        _run(Source(folder, storage, "p", {}))
    assert bad_date not in str(info.value)
    assert info.value.__suppress_context__
    assert not [r for r in caplog.records if bad_date in r.getMessage()]


def test_deidentifier_keeps_well_known_uids_and_merges_previous_codes() -> None:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    code = Dataset()
    code.CodeValue = "113101"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Clean Pixel Data Option"
    code.CodingSchemeUID = "1.2.840.10008.2.16.4"
    ds.DeidentificationMethodCodeSequence = Sequence([code])
    ds.DeidentificationMethod = "an earlier tool"
    Deidentifier(SALT)(ds)
    values = [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
    assert values == ["113101", "113100", "113107"]
    assert ds.DeidentificationMethodCodeSequence[0].CodingSchemeUID == "1.2.840.10008.2.16.4"
    assert ds.DeidentificationMethod[0] == "an earlier tool"
    assert "DICOGNITO" not in ds.DeidentificationMethod


def _payload_of(tmp_path: Path, edit: Callable[[Dataset], None], slices: int = 2) -> Source:
    """A CT series of ``slices`` files, none with Burned In Annotation; ``edit`` applied to
    the first one."""
    folder = tmp_path / "study"
    paths = write_ct_series(
        generate_phantom(slices=slices, rows=32, columns=32),
        folder,
        patient_name=NAME,
        patient_id=PATIENT_ID,
        patient_birth_date=BIRTH_DATE,
    )
    for i, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        del ds.BurnedInAnnotation
        if i == 0:
            edit(ds)
        ds.save_as(path, enforce_file_format=True)
    storage = Storage(str(tmp_path / "store"))
    storage.upload_payload("p", folder)
    storage.seal_payload("p")
    return Source(folder, storage, "p", {})


def _text_item(text: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.TextValue = text
    return item


def _add_structured_content_and_free_text(ds: Dataset) -> None:
    container = Dataset()
    container.RelationshipType = "CONTAINS"
    container.ValueType = "CONTAINER"
    container.ContentSequence = Sequence([_text_item(f"{NAME} seen on {BIRTH_DATE}")])
    ds.ContentSequence = Sequence([container, _text_item(f"MRN {PATIENT_ID}")])
    ds.TextValue = f"report for {NAME}"
    ds.InterpretationText = f"{NAME}: no findings"
    ds.ResultsComments = f"call {NAME}"
    ds.AcquisitionDeviceProcessingDescription = f"protocol of {PATIENT_ID}"
    ds.LabelText = NAME
    ds.TopicTitle = f"case {PATIENT_ID}"
    author = Dataset()
    author.PersonName = NAME
    ds.AuthorObserverSequence = Sequence([author])
    ds.VerifyingOrganization = f"{NAME} clinic"


FREE_TEXT = (
    "ContentSequence",
    "TextValue",
    "InterpretationText",
    "ResultsComments",
    "AcquisitionDeviceProcessingDescription",
    "LabelText",
    "TopicTitle",
    "AuthorObserverSequence",
    "VerifyingOrganization",
)


def test_structured_content_and_free_text_removed(tmp_path: Path) -> None:
    src = _payload_of(tmp_path, _add_structured_content_and_free_text)
    outputs = _run(src)
    assert len(outputs) == 2
    for path in outputs:
        raw = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in raw, f"{secret!r} in the bytes of {path.name}"
        ds = pydicom.dcmread(path)
        kept = [e.keyword for e in _elements(ds) if e.keyword in FREE_TEXT]
        assert kept == [], f"{kept} kept in {path.name}"


def _secondary_capture(sop_class: str, modality: str = "OT") -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        ds.SOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
        ds.Modality = modality

    return edit


def _add_pdf(ds: Dataset) -> None:
    ds.BurnedInAnnotation = "NO"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = f"%PDF-1.4 referral for {NAME}".encode()


def _set(**attributes: str) -> Callable[[Dataset], None]:
    def edit(ds: Dataset) -> None:
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)

    return edit


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_set(Modality="US"), "a US image without Burned In Annotation NO"),
        (_set(Modality="SC"), "a SC image without Burned In Annotation NO"),
        (_set(Modality="XC"), "a XC image without Burned In Annotation NO"),
        (_set(Modality="US", BurnedInAnnotation="YES"), "Burned In Annotation is YES"),
        (_set(BurnedInAnnotation="YES"), "Burned In Annotation is YES"),
        (_set(BurnedInAnnotation="MAYBE"), "Burned In Annotation is neither YES nor NO"),
        (_secondary_capture(SecondaryCaptureImageStorage), "a Secondary Capture image"),
        (
            _secondary_capture(MultiFrameGrayscaleByteSecondaryCaptureImageStorage, "CT"),
            "a Secondary Capture image",
        ),
        (
            _secondary_capture(MultiFrameTrueColorSecondaryCaptureImageStorage),
            "a Secondary Capture image",
        ),
        (_add_pdf, "an encapsulated document"),
    ],
    ids=[
        "us",
        "sc",
        "xc",
        "us-yes",
        "ct-yes",
        "ct-other-value",
        "secondary-capture",
        "multi-frame-grayscale-byte-sc",
        "multi-frame-true-color-sc",
        "encapsulated-pdf",
    ],
)
def test_images_likely_to_show_text_in_pixels_are_refused_with_reason(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    edit: Callable[[Dataset], None],
    reason: str,
) -> None:
    src = _payload_of(tmp_path, edit)
    refused_file = sorted(p.name for p in src.folder.iterdir())[0]
    refused_uid = str(pydicom.dcmread(src.folder / refused_file).SOPInstanceUID)
    ctx = _context(src)
    caplog.set_level(logging.INFO)
    outputs = deidentify(ctx, ctx.payload)
    assert len(outputs["files"]) == 1
    assert [r["file"] for r in outputs["refused"]] == [refused_file]
    assert outputs["refused"][0]["reason"].startswith(reason)
    results = Path(src.storage.results_root("job-1")) / OPERATOR
    assert json.loads((results / "refused.json").read_text()) == outputs["refused"]
    forwarded = [pydicom.dcmread(results / posixpath.basename(f)) for f in outputs["files"]]
    assert refused_uid not in {str(ds.SOPInstanceUID) for ds in forwarded}
    assert len(list(results.glob("*.dcm"))) == 1  # nothing of the refused instance written
    assert any(refused_file in r.getMessage() and reason in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "edit",
    [_set(), _set(Modality="MR"), _set(Modality="US", BurnedInAnnotation="NO")],
    ids=["ct-without-burned-in-annotation", "mr-without-burned-in-annotation", "us-no"],
)
def test_images_without_burned_in_risk_pass(
    tmp_path: Path, edit: Callable[[Dataset], None]
) -> None:
    src = _payload_of(tmp_path, edit)
    ctx = _context(src)
    outputs = deidentify(ctx, ctx.payload)
    assert len(outputs["files"]) == 2
    assert outputs["refused"] == []
    assert not (Path(src.storage.results_root("job-1")) / OPERATOR / "refused.json").exists()


def test_only_refused_instances_is_an_error_naming_the_count(tmp_path: Path) -> None:
    src = _payload_of(tmp_path, _set(Modality="US"), slices=1)
    ctx = _context(src)
    with pytest.raises(OperatorError, match=r"1 file\(s\) skipped, 1 of them refused"):
        deidentify(ctx, ctx.payload)
    refused = Path(src.storage.results_root("job-1")) / OPERATOR / "refused.json"
    assert [r["file"] for r in json.loads(refused.read_text())] == ["CT000001.dcm"]
