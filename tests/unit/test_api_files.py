"""Plain code of the REST API: ``since``, result paths and files, the upload spool (no Ray)."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clara_ray.errors import NotFoundError
from clara_ray.storage import Storage
from serve.api.files import ResultFiles, content_type, result_path
from serve.api.params import parse_since
from serve.api.uploads import MultipartSpool, UploadTooLargeError, safe_member_path

BOUNDARY = "test-boundary-42"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(*parts: tuple[str, str | None, bytes]) -> bytes:
    """A multipart/form-data body of (field, filename or None, data) parts."""
    out = b""
    for field, filename, data in parts:
        disposition = f'form-data; name="{field}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def zipped(members: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def spool(tmp_path: Path, body: bytes, limit: int = 1 << 20, chunk: int = 7) -> MultipartSpool:
    folder = tmp_path / "upload"
    folder.mkdir()
    spooler = MultipartSpool(CONTENT_TYPE, folder, limit)
    for start in range(0, len(body), chunk):
        spooler.feed(body[start : start + chunk])
    return spooler


# -- since -----------------------------------------------------------------------------------


def test_since_accepts_epoch_seconds_and_iso_8601() -> None:
    assert parse_since(None) is None and parse_since(" ") is None
    assert parse_since("1718000000") == 1718000000.0
    assert parse_since("1718000000.5") == 1718000000.5
    moment = datetime(2024, 6, 10, 8, 0, tzinfo=UTC).timestamp()
    assert parse_since("2024-06-10T08:00:00Z") == moment
    assert parse_since("2024-06-10T08:00:00") == moment
    assert parse_since("2024-06-10T10:00:00+02:00") == moment
    assert parse_since("2024-06-10") == datetime(2024, 6, 10, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "nan", "inf", "12:00 tomorrow"])
def test_since_names_the_parameter(value: str) -> None:
    with pytest.raises(ValueError, match=rf"query parameter 'since': got '{value}'; expected"):
        parse_since(value)


# -- result paths and files ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["seg/out.dcm", "a", "op/sub/x.json", "x..y/z"])
def test_result_path_accepts_relative_paths(path: str) -> None:
    assert result_path(path) == path


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "../x", "a/../../x", "a/..", "./a", "a//b", "a\\b", "a\x00b", "a/"]
)
def test_result_path_refuses_what_could_leave_the_results(path: str) -> None:
    with pytest.raises(ValueError, match="must be relative to the job's results"):
        result_path(path)


def test_content_types() -> None:
    assert content_type("seg/out.dcm") == "application/dicom"
    assert content_type("seg/OUT.DCM") == "application/dicom"
    assert content_type("m/measurements.json") == "application/json"
    assert content_type("r/view.png") == "image/png"
    assert content_type("l/labels.nrrd") == "application/octet-stream"
    assert content_type("l/noext") == "application/octet-stream"


def test_result_files_stay_inside_the_jobs_results(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "storage"))
    storage.results("job1", "op").write_text("a.json", "{}")
    storage.results("job2", "op").write_text("other.json", "secret")
    outside = tmp_path / "outside.txt"
    outside.write_text("outside")
    root = Path(storage.results_root("job1", "op"))
    (root / "escape").symlink_to(outside)
    (root / "sideways").symlink_to(Path(storage.results_root("job2", "op")) / "other.json")
    (root / "inside").symlink_to(root / "a.json")
    files = ResultFiles(storage, "job1")
    assert [e.path for e in files.list()] == ["op/a.json", "op/inside"]
    opened = files.open("op/a.json")
    with opened.stream:
        assert (opened.stream.read(), opened.size) == (b"{}", 2)
    for path in ("op/escape", "op/sideways", "op/missing.json", "op"):
        with pytest.raises(NotFoundError, match="the job has no result file"):
            files.open(path)
    with pytest.raises(ValueError, match="must be relative"):
        files.open("../job2/op/other.json")


# -- uploads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.dcm", "study/series/1.dcm", "a\\b.dcm"])
def test_member_paths_inside_the_payload(name: str) -> None:
    assert safe_member_path(name, "member") == name.replace("\\", "/")


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "C:\\x", "", "a//b", "./a"])
def test_member_paths_that_would_leave_it(name: str) -> None:
    with pytest.raises(ValueError, match=r"member '.*' is not a relative path inside the payload"):
        safe_member_path(name, "member")


def test_files_and_a_zip_become_one_tree(tmp_path: Path) -> None:
    body = multipart(
        ("name", None, b"ct-study"),
        ("files", "1.dcm", b"one"),
        ("files", "2.dcm", b"two" * 1000),
        ("files", "more.zip", zipped({"series/3.dcm": b"three", "series/": b""})),
    )
    upload = spool(tmp_path, body).finish()
    found = sorted(p.relative_to(upload.folder).as_posix() for p in upload.folder.rglob("*"))
    assert found == ["1.dcm", "2.dcm", "series", "series/3.dcm"]
    assert (upload.folder / "2.dcm").read_bytes() == b"two" * 1000
    assert (upload.files, upload.bytes, upload.name) == (3, 3 + 3000 + 5, "ct-study")
    assert not any((tmp_path / "upload" / "zips").iterdir())


@pytest.mark.parametrize(
    ("part", "message"),
    [
        (("files", "../evil.dcm", b"x"), r"uploaded file '\.\./evil\.dcm' is not a relative path"),
        (("files", "/abs.dcm", b"x"), r"uploaded file '/abs\.dcm' is not a relative path"),
        (("files", "a.zip", zipped({"../../evil": b"x"})), r"member of 'a\.zip' '\.\./\.\./evil'"),
        (("files", "a.zip", zipped({"/etc/cron.d/x": b"x"})), r"member of 'a\.zip' '/etc/cron"),
        (("files", "a.zip", zipped({}, links=("link",))), r"'link' is a symbolic link"),
        (("files", "a.zip", b"not a zip"), r"uploaded file 'a\.zip' is not a valid zip"),
        (("files", "1.dcm", b"again"), r"uploaded file '1\.dcm' comes twice"),
        (("other", None, b"x"), r"form field 'other' is not known"),
    ],
)
def test_unsafe_or_malformed_uploads_are_refused(
    tmp_path: Path, part: tuple[str, str | None, bytes], message: str
) -> None:
    body = multipart(("files", "1.dcm", b"one"), part)
    with pytest.raises(ValueError, match=message):
        spool(tmp_path, body).finish()


def test_an_upload_without_files_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="the upload holds no file"):
        spool(tmp_path, multipart(("name", None, b"x"))).finish()


def test_the_limit_counts_what_arrives(tmp_path: Path) -> None:
    body = multipart(("files", "big.dcm", os.urandom(5000)))
    with pytest.raises(UploadTooLargeError, match="exceeds 4096 bytes"):
        spool(tmp_path, body, limit=4096, chunk=1024)


def test_the_limit_counts_what_a_zip_expands_to(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.dcm", bytes(1 << 20))
    body = multipart(("files", "bomb.zip", buffer.getvalue()))
    assert len(body) < 1 << 16
    with pytest.raises(UploadTooLargeError, match="once extracted"):
        spool(tmp_path, body, limit=1 << 16, chunk=4096).finish()


def test_only_multipart_form_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected multipart/form-data with a boundary"):
        MultipartSpool("application/json", tmp_path, 100)
