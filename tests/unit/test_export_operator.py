"""The export manifest and the export operator that writes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clara_ray.context import OperatorContext
from clara_ray.errors import OperatorError
from clara_ray.export.manifest import (
    MANIFEST_NAME,
    ExportManifest,
    ExportManifestError,
    find_manifests,
    result_path,
    result_ref,
    split_destinations,
)
from clara_ray.operators.deidentify import deidentify
from clara_ray.operators.export import export_dicom
from clara_ray.pipeline import load_pipeline
from clara_ray.sample import generate_phantom, write_ct_series
from clara_ray.storage import Storage

ROOT = Path(__file__).resolve().parents[2]
JOB = "job-1"


@pytest.fixture(scope="module")
def dicom_bytes(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    folder = tmp_path_factory.mktemp("ct")
    paths = write_ct_series(generate_phantom(slices=3, rows=16, columns=16), folder)
    return [p.read_bytes() for p in paths]


@pytest.fixture
def storage(tmp_path: Path, dicom_bytes: list[bytes]) -> Storage:
    """A job whose upstream operators wrote DICOM (seg, sr) and JSON results."""
    store = Storage(str(tmp_path / "store"))
    (tmp_path / "payload").mkdir()
    (tmp_path / "payload" / "x.txt").write_text("x")
    store.upload_payload("p1", tmp_path / "payload")
    store.seal_payload("p1")
    seg = store.results(JOB, "seg")
    seg.write_bytes("seg.dcm", dicom_bytes[0])
    seg.write_bytes("more/seg2.dcm", dicom_bytes[1])
    store.results(JOB, "sr").write_bytes("sr.dcm", dicom_bytes[2])
    store.results(JOB, "measure").write_json("measurements.json", {"volume_ml": 1.0})
    return store


def _ctx(storage: Storage, operator: str = "export") -> OperatorContext:
    return OperatorContext(
        job_id=JOB,
        job_name="export-test",
        pipeline="test",
        operator=operator,
        payload=storage.payload_view("p1"),
        results=storage.results(JOB, operator),
    )


def _written(storage: Storage, operator: str = "export") -> ExportManifest:
    return ExportManifest.from_json(storage.results(JOB, operator).read_bytes(MANIFEST_NAME))


# -- the manifest ------------------------------------------------------------------


def test_manifest_round_trip() -> None:
    manifest = ExportManifest(("PACS", "RESEARCH"), ("seg/seg.dcm", "sr/a/b.dcm"))
    text = manifest.to_json()
    assert json.loads(text) == {
        "version": 1,
        "destinations": ["PACS", "RESEARCH"],
        "files": ["seg/seg.dcm", "sr/a/b.dcm"],
    }
    assert ExportManifest.from_json(text) == manifest
    assert ExportManifest.from_json(text.encode()) == manifest


def test_manifest_accepts_lists_and_stores_tuples() -> None:
    manifest = ExportManifest(["PACS"], ["seg/seg.dcm"])  # type: ignore[arg-type]
    assert manifest.destinations == ("PACS",)
    assert manifest.files == ("seg/seg.dcm",)


@pytest.mark.parametrize(
    ("destinations", "files", "match"),
    [
        ((), ("a/b.dcm",), "names no destination"),
        (("PACS",), (), "names no file"),
        (("",), ("a/b.dcm",), r"destination name '' is invalid"),
        (("PACS 2",), ("a/b.dcm",), r"destination name 'PACS 2' is invalid"),
        (("X" * 65,), ("a/b.dcm",), "is invalid: expected 1 to 64 characters"),
        (("PACS;rm",), ("a/b.dcm",), r"'PACS;rm' is invalid"),
        (("PACS", "PACS"), ("a/b.dcm",), "names destination 'PACS' twice"),
        (("PACS",), ("a/b.dcm", "a/b.dcm"), "names file 'a/b.dcm' twice"),
        (("PACS",), ("",), r"result path '' is invalid \(it is empty\)"),
        (("PACS",), ("seg.dcm",), r"'seg.dcm' is invalid \(it names no operator\)"),
        (("PACS",), ("/etc/passwd",), r"'/etc/passwd' is invalid \(it is absolute\)"),
        (("PACS",), ("seg/../../x.dcm",), r"it has an empty, '\.' or '\.\.' component"),
        (("PACS",), ("seg//x.dcm",), r"it has an empty, '\.' or '\.\.' component"),
        (("PACS",), ("seg\\x.dcm",), "backslash"),
    ],
)
def test_manifest_validation(destinations: tuple, files: tuple, match: str) -> None:
    with pytest.raises(ExportManifestError, match=match):
        ExportManifest(destinations, files)


def test_manifest_type_errors() -> None:
    with pytest.raises(TypeError, match="destinations must be a list of strings, got str"):
        ExportManifest("PACS", ("a/b.dcm",))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="destination name must be a string, got int"):
        ExportManifest((1,), ("a/b.dcm",))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="result path must be a string, got NoneType"):
        ExportManifest(("PACS",), (None,))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{", "not valid JSON"),
        ("[]", "must be a JSON object, got list"),
        ('{"version": 1, "destinations": ["PACS"]}', r"missing: \['files'\]"),
        (
            '{"version": 1, "destinations": ["PACS"], "files": ["a/b.dcm"], "x": 1}',
            r"unknown: \['x'\]",
        ),
        ('{"version": 2, "destinations": ["PACS"], "files": ["a/b.dcm"]}', "version 2 is not"),
        (
            '{"version": 1, "destinations": ["PACS"], "files": ["../b.dcm"]}',
            "'../b.dcm' is invalid",
        ),
    ],
)
def test_manifest_from_bad_json(text: str, match: str) -> None:
    with pytest.raises(ExportManifestError, match=match):
        ExportManifest.from_json(text)


def test_split_destinations() -> None:
    assert split_destinations("PACS") == ("PACS",)
    assert split_destinations(" PACS , RESEARCH,PACS ") == ("PACS", "RESEARCH")
    assert split_destinations(["A", "B"]) == ("A", "B")
    with pytest.raises(ExportManifestError, match="name no destination"):
        split_destinations("")
    with pytest.raises(ExportManifestError, match="destination name '' is invalid"):
        split_destinations("PACS,,RESEARCH")
    with pytest.raises(TypeError, match="got int"):
        split_destinations(3)  # type: ignore[arg-type]


def test_result_ref_and_path(storage: Storage) -> None:
    assert result_ref("seg", "seg.dcm") == "seg/seg.dcm"
    assert result_path(storage, JOB, "seg/seg.dcm") == storage.results_root(JOB) + "/seg/seg.dcm"
    with pytest.raises(ExportManifestError, match="it has an empty"):
        result_ref("seg", "../x.dcm")


def test_find_manifests(storage: Storage) -> None:
    assert find_manifests(storage, JOB) == []
    assert find_manifests(storage, "no-such-job") == []
    one = ExportManifest(("PACS",), ("seg/seg.dcm",))
    two = ExportManifest(("RESEARCH",), ("sr/sr.dcm",))
    storage.results(JOB, "export-b").write_text(MANIFEST_NAME, two.to_json())
    storage.results(JOB, "export-a").write_text(MANIFEST_NAME, one.to_json())
    storage.results(JOB, "seg").write_text("nested/" + MANIFEST_NAME, "not a manifest")
    assert find_manifests(storage, JOB) == [("export-a", one), ("export-b", two)]
    storage.results(JOB, "broken").write_text(MANIFEST_NAME, '{"version": 1}')
    with pytest.raises(
        ExportManifestError, match="job job-1: export manifest of operator 'broken'"
    ):
        find_manifests(storage, JOB)


# -- the operator ------------------------------------------------------------------


def test_export_writes_the_manifest(storage: Storage) -> None:
    ctx = _ctx(storage)
    out = export_dicom(
        ctx,
        destinations="PACS",
        seg_files=["seg/seg.dcm", "seg/more/seg2.dcm"],
        sr_files="sr/sr.dcm",
    )
    assert out == {}
    manifest = _written(storage)
    assert manifest.destinations == ("PACS",)
    assert manifest.files == ("seg/seg.dcm", "seg/more/seg2.dcm", "sr/sr.dcm")
    assert find_manifests(storage, JOB) == [("export", manifest)]


def test_export_comma_separated_and_list_destinations(storage: Storage) -> None:
    export_dicom(_ctx(storage), destinations="PACS, RESEARCH", files=["seg/seg.dcm"])
    assert _written(storage).destinations == ("PACS", "RESEARCH")
    export_dicom(_ctx(storage, "export2"), destinations=["ARCHIVE", "PACS"], files="seg/seg.dcm")
    assert _written(storage, "export2").destinations == ("ARCHIVE", "PACS")


def test_export_default_destination_and_duplicates(storage: Storage) -> None:
    export_dicom(_ctx(storage), files=["seg/seg.dcm"], seg_files=("seg/seg.dcm",))
    manifest = _written(storage)
    assert manifest.destinations == ("PACS",)
    assert manifest.files == ("seg/seg.dcm",)


def test_export_accepts_storage_paths_from_write_bytes(
    storage: Storage, dicom_bytes: list[bytes]
) -> None:
    path = storage.results(JOB, "writer").write_bytes("out.dcm", dicom_bytes[0])
    export_dicom(_ctx(storage), files=[path])
    assert _written(storage).files == ("writer/out.dcm",)


def test_export_missing_file(storage: Storage) -> None:
    with pytest.raises(
        OperatorError, match=r"\['seg/missing.dcm'\] do not exist in the job's results"
    ):
        export_dicom(_ctx(storage), seg_files=["seg/seg.dcm", "seg/missing.dcm"])
    assert MANIFEST_NAME not in storage.results(JOB, "export").files()


def test_export_refuses_non_dicom(storage: Storage) -> None:
    with pytest.raises(OperatorError, match=r"\['measure/measurements.json'\] are not DICOM files"):
        export_dicom(_ctx(storage), files=["measure/measurements.json"])


def test_export_bad_paths_and_inputs(storage: Storage) -> None:
    with pytest.raises(
        OperatorError, match=r"export input 'files': result path 'seg.dcm' is invalid"
    ):
        export_dicom(_ctx(storage), files=["seg.dcm"])
    with pytest.raises(OperatorError, match=r"export input 'files': .*'\.\./x/y.dcm'"):
        export_dicom(_ctx(storage), files="../x/y.dcm")
    with pytest.raises(TypeError, match="export input 'volume' must be a result path or a list"):
        export_dicom(_ctx(storage), volume=3)
    with pytest.raises(TypeError, match=r"must hold result paths .*type int"):
        export_dicom(_ctx(storage), files=["seg/seg.dcm", 4])


def test_export_bad_or_no_destination(storage: Storage) -> None:
    with pytest.raises(ExportManifestError, match=r"destination name 'PACS;X' is invalid"):
        export_dicom(_ctx(storage), destinations="PACS;X", files=["seg/seg.dcm"])
    with pytest.raises(ExportManifestError, match="name no destination"):
        export_dicom(_ctx(storage), destinations="", files=["seg/seg.dcm"])


def test_export_with_nothing_to_export(storage: Storage) -> None:
    with pytest.raises(OperatorError, match=r"names no file: its inputs \['files'\] are empty"):
        export_dicom(_ctx(storage), files=[])


# -- the reference pipeline, without Ray ---------------------------------------------


def test_deidentify_and_forward_pipeline(tmp_path: Path) -> None:
    spec = load_pipeline(ROOT / "pipelines" / "deidentify-and-forward.yaml")
    assert spec.parameters == {"destination": "RESEARCH"}
    folder = tmp_path / "study"
    write_ct_series(generate_phantom(slices=4, rows=16, columns=16), folder)
    store = Storage(str(tmp_path / "store"))
    store.upload_payload("study", folder)
    store.seal_payload("study")

    def ctx(operator: str) -> OperatorContext:
        return OperatorContext(
            job_id=JOB,
            job_name="deid",
            pipeline=spec.name,
            operator=operator,
            payload=store.payload_view("study"),
            results=store.results(JOB, operator),
        )

    files = deidentify(ctx("deidentify"), store.payload_view("study"))["files"]
    export_dicom(ctx("export"), destinations="RESEARCH", files=files)
    [(operator, manifest)] = find_manifests(store, JOB)
    assert operator == "export"
    assert manifest.destinations == ("RESEARCH",)
    assert manifest.files == tuple(files) and len(files) == 4
    assert all(f.startswith("deidentify/") for f in files)
