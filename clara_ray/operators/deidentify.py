"""Built-in operator: de-identify DICOM instances (PS3.15 Basic Application Level Confidentiality Profile).

The work is dicognito's :class:`~dicognito.anonymizer.Anonymizer`, walking every
element of every dataset (sequences and file meta included):

* person names (PN) and IDs (Patient ID, Accession Number, Study ID, ...)
  become pseudonyms derived from the original value;
* every UID but class and transfer syntax UIDs is replaced by one derived
  from the original, so references between instances (study, series, frame
  of reference, referenced instances) stay consistent within one anonymizer;
* every date and date-time (DA, DT, and the TM paired with a DA) moves back
  by one offset of 62 to 730 days: the *Retain Longitudinal Temporal
  Information with Modified Dates* option (DCM 113107);
* institution name and address become fictitious ones.

dicognito leaves alone several attributes whose Basic Profile action (PS3.15
Table E.1-1) is X (remove), Z (empty) or D (dummy); :class:`Deidentifier`
completes it for those found in image objects: it removes private elements,
overlay (60xx) and curve (50xx) groups, icon images, digital signatures and
encrypted attributes, free text (comments, descriptions, protocol names,
labels, topics), structured content (Content Sequence and Text Value at every
depth), interpretation and results attributes, document authors,
participants, custodians and predecessors, patient demographics, visit,
request and procedure-step attributes (see ``_REMOVE``), empties Patient's
Birth Date and Patient's Sex (``_EMPTY``), replaces device serial numbers with
dummies, and keeps well-known DICOM UIDs (``1.2.840.10008.*``) unchanged.  It
then sets Patient Identity Removed ``YES``, Longitudinal Temporal Information
Modified ``MODIFIED``, De-identification Method and its code sequence (DCM
113100 and 113107).

Profile options (PS3.15 Table E.1-1, CID 7050):

* Retain Longitudinal Temporal Information with Modified Dates: implemented
  (dates shifted, DCM 113107).
* Retain UIDs, Retain Device Identity, Retain Institution Identity, Retain
  Patient Characteristics, Retain Safe Private, Retain Longitudinal Temporal
  Information with Full Dates: not implemented (UIDs remapped, device serials
  dummied, institution replaced, characteristics emptied or removed, private
  elements removed, dates shifted).
* Clean Descriptors, Clean Structured Content, Clean Graphics: not
  implemented; what they would clean is removed instead (an SR document thus
  keeps no content tree).  ``keep_series_description`` retains Series
  Description verbatim, outside the profile, and says so in
  De-identification Method.
* Clean Pixel Data, Clean Recognizable Visual Features: not implemented.
  Images likely to show identity in their pixels are refused instead (see
  :func:`refusal_reason`): Burned In Annotation anything but ``NO``, or,
  without it, Secondary Capture SOP classes and Modality US, SC or XC.
  Encapsulated documents (PDF, CDA, ...) are refused too.
"""

from __future__ import annotations

import io
import json
import re
import secrets
from collections.abc import Iterable, Iterator
from typing import IO, Any

import pydicom
from dicognito import __version__ as dicognito_version
from dicognito.anonymizer import Anonymizer
from dicognito.element_anonymizer import ElementAnonymizer
from dicognito.idanonymizer import IDAnonymizer
from dicognito.randomizer import Randomizer
from pydicom.config import disable_value_validation
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import MediaStorageDirectoryStorage

from clara_ray.context import OperatorContext
from clara_ray.errors import OperatorError
from clara_ray.export.manifest import result_ref
from clara_ray.storage import PayloadView

__all__ = [
    "BASIC_PROFILE",
    "MIN_SALT_LENGTH",
    "MODIFIED_DATES_OPTION",
    "Deidentifier",
    "deidentify",
    "refusal_reason",
]

BASIC_PROFILE = ("113100", "DCM", "Basic Application Confidentiality Profile")
"""(code value, coding scheme, meaning) of the profile, CID 7050."""
MODIFIED_DATES_OPTION = (
    "113107",
    "DCM",
    "Retain Longitudinal Temporal Information Modified Dates Option",
)
"""The option dicognito's date shift implements, CID 7050."""

MIN_SALT_LENGTH = 16
"""A salt is a secret key: anyone who knows it can confirm a guessed name or ID."""

_REFUSED = "refused.json"
_UID_NAME = re.compile(r"^[0-9.]{1,64}$")
_WELL_KNOWN_UID_ROOT = "1.2.840.10008."


def _tags(*keywords: str) -> frozenset[int]:
    tags = set()
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:  # a typo here must fail loudly, not leave data in place
            raise KeyError(f"unknown DICOM keyword {keyword!r}")
        tags.add(tag)
    return frozenset(tags)


_SERIES_DESCRIPTION = tag_for_keyword("SeriesDescription")

# Basic Profile action X (or X/Z, X/D where removal is valid) for attributes dicognito keeps.
_REMOVE = _tags(
    # patient
    "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "PatientBirthTime", "PatientAge", "PatientSize", "PatientWeight",
    "PatientAddress", "PatientTelephoneNumbers", "PatientTelecomInformation", "RegionOfResidence",
    "CountryOfResidence", "PatientComments", "AdditionalPatientHistory", "Allergies", "EthnicGroup",
    "MedicalAlerts", "PregnancyStatus", "SmokingStatus", "LastMenstrualDate", "PatientState",
    "SpecialNeeds", "PatientTransportArrangements", "PatientInstitutionResidence",
    "PatientPrimaryLanguageCodeSequence", "PatientReligiousPreference", "Occupation",
    "MilitaryRank", "BranchOfService", "MedicalRecordLocator", "InsurancePlanIdentification",
    "PatientInsurancePlanCodeSequence", "ResponsiblePerson", "ResponsibleOrganization",
    "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "ReferencedPatientSequence",
    "ReferencedPatientPhotoSequence", "ReferencedPatientAliasSequence",
    # visit, request, procedure steps
    "AdmissionID", "IssuerOfAdmissionID", "IssuerOfAdmissionIDSequence",
    "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence", "ServiceEpisodeID",
    "ServiceEpisodeDescription", "IssuerOfServiceEpisodeID", "IssuerOfServiceEpisodeIDSequence",
    "CurrentPatientLocation", "VisitComments", "ReasonForVisit", "ReasonForVisitCodeSequence",
    "ReasonForStudy", "RequestingPhysician", "RequestingService", "RequestedProcedureID",
    "RequestedProcedureComments", "RequestedContrastAgent", "ReasonForTheRequestedProcedure",
    "ReasonForRequestedProcedureCodeSequence", "ImagingServiceRequestComments",
    "ReasonForTheImagingServiceRequest", "RequestAttributesSequence", "OrderEnteredBy",
    "OrderEntererLocation", "OrderCallbackPhoneNumber", "OrderCallbackTelecomInformation",
    "IssueDateOfImagingServiceRequest", "IssueTimeOfImagingServiceRequest",
    "PerformedProcedureStepDescription", "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime", "PerformedLocation",
    "PerformedStationAETitle", "PerformedStationName", "PerformedStationNameCodeSequence",
    "PerformedStationGeographicLocationCodeSequence", "CommentsOnThePerformedProcedureStep",
    "ScheduledProcedureStepDescription", "ScheduledProcedureStepID",
    "ScheduledProcedureStepLocation", "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime", "ScheduledProcedureStepEndDate",
    "ScheduledProcedureStepEndTime", "ScheduledStationAETitle", "ScheduledStationName",
    "ScheduledStudyLocation", "ScheduledStudyLocationAETitle",
    # people other than the patient (their names are replaced by dicognito)
    "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence", "ConsultingPhysicianIdentificationSequence",
    "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence", "PerformingPhysicianName",
    "PerformingPhysicianIdentificationSequence", "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence", "ScheduledPerformingPhysicianName",
    "ScheduledPerformingPhysicianIdentificationSequence", "OperatorIdentificationSequence",
    "PersonAddress", "PersonTelephoneNumbers", "PersonTelecomInformation",
    "ActualHumanPerformersSequence", "ScheduledHumanPerformersSequence",
    "IntendedRecipientsOfResultsIdentificationSequence", "NamesOfIntendedRecipientsOfResults",
    # free text
    "StudyDescription", "SeriesDescription", "StudyComments", "StudyIDIssuer", "ImageComments",
    "AcquisitionComments", "FrameComments", "DerivationDescription", "ImagePresentationComments",
    "IdentifyingComments", "CommentsOnRadiationDose", "ProtocolName", "TextComments", "TextString",
    "AcquisitionDeviceProcessingDescription", "DeviceDescription", "ContributionDescription",
    "DischargeDiagnosisDescription", "LabelText", "TopicTitle", "TopicSubject", "TopicAuthor",
    "TopicKeywords",
    # structured content, interpretations, results and documents
    "ContentSequence", "TextValue", "AuthorObserverSequence", "ParticipantSequence",
    "CustodialOrganizationSequence", "VerifyingOrganization", "PredecessorDocumentsSequence",
    "IdenticalDocumentsSequence", "ReferencedRequestSequence", "InterpretationText",
    "InterpretationDiagnosisDescription", "InterpretationRecorder", "InterpretationTranscriber",
    "InterpretationApproverSequence", "InterpretationAuthor", "InterpretationID",
    "InterpretationIDIssuer", "ResultsComments", "ResultsID", "ResultsIDIssuer",
    # equipment and network
    "GantryID", "GeneratorID", "CassetteID", "PlateID", "StationAETitle", "RetrieveAETitle",
    "NetworkID", "DateOfLastCalibration", "TimeOfLastCalibration", "DateOfSecondaryCapture",
    "TimeOfSecondaryCapture", "UniqueDeviceIdentifier", "UDISequence", "TimezoneOffsetFromUTC",
    # embedded images, signatures, audit trails
    "IconImageSequence", "DigitalSignaturesSequence", "DataSetTrailingPadding",
    "OriginalAttributesSequence", "ModifiedAttributesSequence", "MAC",
    "ReferencedDigitalSignatureSequence", "ReferencedSOPInstanceMACSequence",
    "EncryptedAttributesSequence",
)  # fmt: skip

# Basic Profile action Z (or X/Z): emptying keeps a type 2 attribute valid.
_EMPTY = _tags(
    "PatientBirthDate", "PatientSex", "PatientSexNeutered", "RequestedProcedureDescription",
    "ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence",
    "AcquisitionContextSequence",
)  # fmt: skip

# Basic Profile action X/Z/D or X/D: replaced by a pseudonym (type 1 in some IODs).
_DUMMY = ("DeviceSerialNumber", "DetectorID")

# Images of these modalities often carry text in their pixels (ultrasound calipers and
# labels, screenshots, photographs); pixel data are not cleaned, so they are refused unless
# Burned In Annotation says NO.
_BURNED_IN_MODALITIES = frozenset({"US", "SC", "XC"})
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
"""Secondary Capture Image Storage; its multi-frame family extends it (``.7.1`` to ``.7.4``)."""

# Removed from the file meta information: they name the sending system.
_FILE_META_REMOVE = _tags(
    "SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle", "PrivateInformationCreatorUID", "PrivateInformation",
)  # fmt: skip


class _WellKnownUIDKeeper(ElementAnonymizer):
    """Keeps UIDs defined by the standard (coding schemes, transfer syntaxes, ...)."""

    def __call__(self, dataset: Dataset, data_element: DataElement) -> bool:
        if data_element.VR != "UI" or not data_element.value:
            return False
        values = data_element.value if data_element.VM > 1 else [data_element.value]
        return all(str(v).startswith(_WELL_KNOWN_UID_ROOT) for v in values)

    def describe_actions(self) -> Iterator[str]:
        yield f"Keep UI elements whose values all begin with {_WELL_KNOWN_UID_ROOT}"


def _is_overlay_or_curve(tag: int) -> bool:
    group = tag >> 16
    return group & 0xFF00 in (0x6000, 0x5000)


def _code_item(code: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


class Deidentifier:
    """De-identifies datasets one by one, consistently (one dicognito anonymizer).

    ``seed`` determines every pseudonym, UID and the date offset; None draws a
    random one, so two Deidentifiers then never agree.  ``keep`` names
    attributes (keywords) kept verbatim although the profile removes them.
    """

    def __init__(self, seed: str | None = None, keep: Iterable[str] = ()) -> None:
        seed = seed if seed is not None else secrets.token_hex(32)
        self._anonymizer = Anonymizer(seed=seed)
        dummies = IDAnonymizer(Randomizer(seed + "\x00clara-ray dummies"), "", "", *_DUMMY)
        self._anonymizer.add_element_handler(dummies)
        self._anonymizer.add_element_handler(_WellKnownUIDKeeper())
        self._keep = _tags(*keep)
        self._remove = _REMOVE - self._keep
        self._methods = [f"clara-ray deidentify, dicognito {dicognito_version}", BASIC_PROFILE[2]]
        self._methods.append("Modified dates (shifted back 62 to 730 days)")
        if self._keep:
            retained = ", ".join(sorted(keep))
            self._methods.append(f"Retained: {retained}"[:64])

    def __call__(self, ds: Dataset) -> None:
        """De-identify ``ds`` in place (its file meta included)."""
        with disable_value_validation():  # pydicom's warnings quote the (identifying) value
            old = ds.get("DeidentificationMethod")
            previous = [] if not old else [old] if isinstance(old, str) else [str(m) for m in old]
            previous_codes = [
                c for c in ds.get("DeidentificationMethodCodeSequence", []) if "CodeValue" in c
            ]
            ds.ensure_file_meta()  # dicognito walks it
            self._anonymizer.anonymize(ds)
            ds.walk(self._profile_callback)
            for tag in _FILE_META_REMOVE:
                if tag in ds.file_meta:
                    del ds.file_meta[tag]
            ds.PatientIdentityRemoved = "YES"
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
            ds.DeidentificationMethod = previous + [m for m in self._methods if m not in previous]
            codes = [
                (str(c.CodeValue), str(c.get("CodingSchemeDesignator", ""))) for c in previous_codes
            ]
            added = [
                _code_item(c) for c in (BASIC_PROFILE, MODIFIED_DATES_OPTION) if c[:2] not in codes
            ]
            ds.DeidentificationMethodCodeSequence = Sequence(previous_codes + added)

    def _profile_callback(self, dataset: Dataset, elem: DataElement) -> None:
        tag = elem.tag
        if tag.is_private or tag in self._remove or _is_overlay_or_curve(tag):
            del dataset[tag]
        elif tag in _EMPTY:
            elem.value = [] if elem.VR == "SQ" else ""


def _read(name: str, fp: IO[bytes]) -> Dataset | None:
    """The dataset of a DICOM file, or None when it is not one (no preamble and 'DICM')."""
    try:
        return pydicom.dcmread(fp)
    except InvalidDicomError:
        return None
    except Exception as exc:  # pydicom's own messages may quote values: keep only the type
        raise OperatorError(
            f"payload file {name} cannot be read as DICOM ({type(exc).__name__})"
        ) from None


def _check_salt(salt: object) -> str | None:
    if salt is None:
        return None
    if not isinstance(salt, str):
        raise TypeError(f"salt must be a string or None, got {type(salt).__name__}")
    if len(salt) < MIN_SALT_LENGTH:
        raise ValueError(
            f"salt must be at least {MIN_SALT_LENGTH} characters (got {len(salt)}): it is a "
            "secret key, and a short one lets anyone confirm a guessed patient name or ID"
        )
    return salt


def deidentify(
    ctx: OperatorContext,
    payload: PayloadView,
    salt: str | None = None,
    keep_series_description: bool = False,
) -> dict[str, Any]:
    """De-identify every DICOM instance of the payload (see the module docstring).

    Args:
        salt: secret key seeding every pseudonym, UID and the date offset.  The
            same salt gives the same output for the same input, in this job
            and in any other (so retries rewrite the same files, and a
            patient's studies de-identified with one salt stay linked); at
            least 16 characters.  None (default): a random key per run, so
            nothing links two runs.
        keep_series_description: keep Series Description verbatim (the
            profile removes it); only when the site's descriptions are known
            to carry no identity.  Recorded in De-identification Method.

    Inputs: ``payload``.  Non-DICOM files are skipped with a log line naming
    the file.  DICOM instances that are not de-identified are *refused*: a
    DICOMDIR, an instance without SOP Class or SOP Instance UID, one with the
    SOP Instance UID of another, and images likely to show identity in their
    pixels (see :func:`refusal_reason`).  Each refusal is a warning naming the
    payload file and the reason, and an entry of ``refused.json`` among the
    operator's results; nothing of a refused instance is written or exported.

    Outputs: ``files``, the result paths ``"<operator>/<new SOP Instance UID>.dcm"``
    of the de-identified copies (relative to the job's results root, ready
    for :func:`clara_ray.operators.export.export_dicom`), and ``refused``, the
    ``{"file": <payload file>, "reason": ...}`` entries of ``refused.json``.

    Raises:
        OperatorError: the payload holds no DICOM instance to de-identify, or
            one cannot be read or de-identified (the message names the file,
            never a value).
    """
    seed = _check_salt(salt)
    keep = ("SeriesDescription",) if keep_series_description else ()
    deidentifier = Deidentifier(seed, keep=keep)
    log = ctx.logger
    written: dict[str, str] = {}  # output name -> payload file
    refused: list[dict[str, str]] = []
    skipped = 0

    def refuse(name: str, reason: str) -> None:
        log.warning("refusing %s: %s", name, reason)
        refused.append({"file": name, "reason": reason})

    # pydicom logs and warns invalid values verbatim: value validation stays off throughout.
    with disable_value_validation():
        for name in payload.files():
            with payload.open(name) as fp:
                ds = _read(name, fp)
            if ds is None:
                log.info("skipping %s: not a DICOM file", name)
                skipped += 1
                continue
            reason = refusal_reason(ds)
            if reason:
                refuse(name, reason)
                continue
            out_name, data = _deidentify_one(name, ds, deidentifier)
            if out_name in written:
                refuse(name, f"same SOP Instance UID as {written[out_name]}")
                continue
            ctx.results.write_bytes(out_name, data)
            written[out_name] = name
    if refused:
        ctx.results.write_bytes(_REFUSED, json.dumps(refused, indent=2).encode())
    if not written:
        raise OperatorError(
            f"payload {payload.payload_id} holds no DICOM instance to de-identify "
            f"({skipped + len(refused)} file(s) skipped, {len(refused)} of them refused)"
        )
    log.info(
        "de-identified %d DICOM instances of payload %s for job %s "
        "(%d non-DICOM files skipped, %d instances refused)",
        len(written),
        payload.payload_id,
        ctx.job_id,
        skipped,
        len(refused),
    )
    return {
        "files": [result_ref(ctx.operator, out_name) for out_name in written],
        "refused": refused,
    }


def _deidentify_one(name: str, ds: Dataset, deidentifier: Deidentifier) -> tuple[str, bytes]:
    """The output file name and bytes of one de-identified instance."""
    try:
        deidentifier(ds)
    except Exception as exc:  # dicognito's messages may quote values: keep only the type
        raise OperatorError(
            f"payload file {name} could not be de-identified ({type(exc).__name__})"
        ) from None
    uid = str(ds.SOPInstanceUID)
    if not _UID_NAME.match(uid):
        raise OperatorError(
            f"payload file {name}: the de-identified SOP Instance UID is not a valid file name "
            "(expected 1 to 64 digits and dots)"
        )
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return f"{uid}.dcm", buffer.getvalue()


def refusal_reason(ds: Dataset) -> str | None:
    """Why the instance ``ds`` is not de-identified (never quoting a value), or None.

    Encapsulated documents are refused: their content is not examined.
    Pixel data are not cleaned, so an image is refused when its Burned In
    Annotation is anything but ``NO``, and, when it has none, when it is a
    Secondary Capture (any SOP class of that family) or its Modality is US, SC
    or XC.  Other images without Burned In Annotation (CT, MR, ...) pass.
    """
    media_class = getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID")
    sop_class = str(ds.get("SOPClassUID") or "")
    if MediaStorageDirectoryStorage in (media_class, sop_class):
        return "a DICOMDIR (its records are not de-identified; the instances are)"
    if not ds.get("SOPInstanceUID") or not sop_class:
        return "no SOP Class or SOP Instance UID"
    if "EncapsulatedDocument" in ds:
        return "an encapsulated document (PDF, CDA, ...: its content is not examined)"
    burned_in = str(ds.get("BurnedInAnnotation") or "").strip().upper()
    if burned_in == "YES":
        return "Burned In Annotation is YES (pixel data are not cleaned)"
    if burned_in and burned_in != "NO":
        return "Burned In Annotation is neither YES nor NO (pixel data are not cleaned)"
    if burned_in == "NO":
        return None
    if sop_class == _SECONDARY_CAPTURE or sop_class.startswith(_SECONDARY_CAPTURE + "."):
        return (
            "a Secondary Capture image without Burned In Annotation NO "
            "(it may show text in its pixels, which are not cleaned)"
        )
    modality = str(ds.get("Modality") or "").strip().upper()
    if modality in _BURNED_IN_MODALITIES:
        return (
            f"a {modality} image without Burned In Annotation NO "
            "(it may show text in its pixels, which are not cleaned)"
        )
    return None
