"""Tests of clara_ray.storage: payloads sealed read-only, results, logs, path escapes (no Ray).

Most tests use a local folder; the pyarrow in-memory ``mock://`` filesystem stands in for a
remote backend (s3://, gs://) without network.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pytest

from clara_ray.errors import ClaraError, NotFoundError, PayloadSealedError, StorageError
from clara_ray.storage import FileEntry, PayloadManifest, Storage


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(str(tmp_path / "storage"))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    d = tmp_path / "source"
    (d / "series" / "1").mkdir(parents=True)
    (d / "a.dcm").write_bytes(b"A" * 10)
    (d / "series" / "1" / "b.dcm").write_bytes(b"B" * 2000)
    (d / "series" / "c.txt").write_text("hello")
    return d


@pytest.fixture
def sealed(storage: Storage, source: Path) -> Storage:
    storage.upload_payload("p1", source)
    storage.seal_payload("p1")
    return storage


EXPECTED_FILES = [
    FileEntry("a.dcm", 10),
    FileEntry("series/1/b.dcm", 2000),
    FileEntry("series/c.txt", 5),
]


# -- construction ----------------------------------------------------------------


def test_local_root_is_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Storage("relative/store")
    assert s.root == str(tmp_path / "relative" / "store")
    assert s.is_local
    assert s.local_path(s.root) == tmp_path / "relative" / "store"


def test_local_root_expands_tilde() -> None:
    assert Storage("~/clara-store").root == str(Path.home() / "clara-store")


def test_unknown_uri_scheme_is_a_storage_error() -> None:
    with pytest.raises(
        StorageError, match=r"storage URI 'nosuch://bucket/x' cannot be opened: .*nosuch"
    ):
        Storage("nosuch://bucket/x")


def test_storage_error_is_an_os_error() -> None:
    with pytest.raises(OSError, match="cannot be opened"):
        Storage("nosuch://bucket/x")


def test_storage_pickles_by_uri(storage: Storage) -> None:
    copy = pickle.loads(pickle.dumps(storage))
    assert copy.uri == storage.uri
    assert copy.root == storage.root


# -- upload and seal ---------------------------------------------------------------


def test_upload_folder_lists_relative_files(storage: Storage, source: Path) -> None:
    assert storage.upload_payload("p1", source) == EXPECTED_FILES
    assert not storage.is_sealed("p1")
    assert storage.manifest("p1") is None


def test_upload_single_file(storage: Storage, source: Path) -> None:
    assert storage.upload_payload("p1", source / "a.dcm") == [FileEntry("a.dcm", 10)]
    assert storage.seal_payload("p1").files == (FileEntry("a.dcm", 10),)


def test_upload_reports_progress(storage: Storage, source: Path) -> None:
    seen: list[int] = []
    storage.upload_payload("p1", source, progress=seen.append)
    assert sum(seen) == 2015
    assert all(n > 0 for n in seen)


def test_upload_of_missing_source(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=rf"payload source {tmp_path / 'nope'} does not exist"):
        storage.upload_payload("p1", tmp_path / "nope")


def test_seal_writes_manifest(storage: Storage, source: Path) -> None:
    storage.upload_payload("p1", source)
    manifest = storage.seal_payload("p1")
    assert manifest.payload_id == "p1"
    assert list(manifest.files) == EXPECTED_FILES
    assert manifest.total_bytes == 2015
    assert storage.is_sealed("p1")
    assert storage.manifest("p1") == manifest
    on_disk = json.loads((Path(storage.payload_root("p1")) / "manifest.json").read_text())
    assert on_disk["payload_id"] == "p1"
    assert on_disk["files"][1] == {"path": "series/1/b.dcm", "size": 2000}
    assert not (Path(storage.payload_root("p1")) / "manifest.json.tmp").exists()


def test_seal_is_idempotent(sealed: Storage) -> None:
    first = sealed.manifest("p1")
    again = sealed.seal_payload("p1")
    assert again == first


def test_manifest_json_round_trip() -> None:
    m = PayloadManifest("p", (FileEntry("x", 1), FileEntry("y/z", 2)), 123.5)
    assert PayloadManifest.from_json(m.to_json()) == m
    assert m.total_bytes == 3


def test_sealed_files_are_read_only_on_disk(sealed: Storage) -> None:
    data = Path(sealed.payload_root("p1")) / "data"
    files = [p for p in data.rglob("*") if p.is_file()]
    assert len(files) == 3
    for f in files:
        mode = f.stat().st_mode
        assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), (f, oct(mode))
        assert mode & stat.S_IRUSR


def test_writes_into_a_sealed_payload_are_refused(sealed: Storage) -> None:
    target = sealed.payload_root("p1") + "/data/a.dcm"
    with pytest.raises(
        PayloadSealedError, match=r"payload p1 is sealed and read-only; cannot write .*a\.dcm"
    ):
        sealed.write_bytes(target, b"overwrite")
    with pytest.raises(PayloadSealedError, match="payload p1 is sealed and read-only"):
        sealed.write_bytes(sealed.payload_root("p1") + "/data/new.dcm", b"new")
    assert Path(target).read_bytes() == b"A" * 10
    assert not Path(sealed.payload_root("p1"), "data", "new.dcm").exists()


def test_copy_in_to_a_sealed_payload_is_refused(sealed: Storage, source: Path) -> None:
    with pytest.raises(PayloadSealedError, match="payload p1 is sealed"):
        sealed.copy_in(source / "a.dcm", sealed.payload_root("p1") + "/data/extra.dcm")


def test_upload_to_a_sealed_payload_is_refused(sealed: Storage, source: Path) -> None:
    with pytest.raises(PayloadSealedError, match="payload p1 is already sealed"):
        sealed.upload_payload("p1", source)


def test_sealed_error_is_a_permission_error(sealed: Storage) -> None:
    with pytest.raises(PermissionError, match="sealed"):
        sealed.write_bytes(sealed.payload_root("p1") + "/data/a.dcm", b"x")
    with pytest.raises(ClaraError, match="sealed"):
        sealed.write_bytes(sealed.payload_root("p1") + "/data/a.dcm", b"x")


def test_other_payloads_stay_writable(sealed: Storage) -> None:
    path = sealed.payload_root("p2") + "/data/x.bin"
    sealed.write_bytes(path, b"x")
    assert sealed.read_bytes(path) == b"x"


def test_delete_sealed_payload(sealed: Storage) -> None:
    root = Path(sealed.payload_root("p1"))
    sealed.delete_payload("p1")
    assert not root.exists()
    assert not sealed.is_sealed("p1")
    sealed.delete_payload("p1")  # deleting again is a no-op


# -- payload view ----------------------------------------------------------------


def test_payload_view_reads_files(sealed: Storage) -> None:
    view = sealed.payload_view("p1")
    assert view.payload_id == "p1"
    assert view.files() == ["a.dcm", "series/1/b.dcm", "series/c.txt"]
    assert view.read_bytes("series/c.txt") == b"hello"
    with view.open("a.dcm") as f:
        assert f.read() == b"A" * 10
    assert dict((name, f.read()) for name, f in view.iter_files())["series/1/b.dcm"] == b"B" * 2000
    assert view.local_path() == Path(sealed.payload_root("p1")) / "data"
    assert view.local_path("a.dcm") == Path(sealed.payload_root("p1")) / "data" / "a.dcm"


def test_payload_view_refuses_writes(sealed: Storage) -> None:
    view = sealed.payload_view("p1")
    with pytest.raises(
        PayloadSealedError,
        match="payload p1 is read-only; write results to the job's results folder",
    ):
        view.write_bytes("a.dcm", b"x")


def test_payload_view_refuses_escaping_paths(sealed: Storage) -> None:
    view = sealed.payload_view("p1")
    with pytest.raises(
        StorageError, match=r"path '\.\./manifest\.json' is empty or leaves its folder"
    ):
        view.open("../manifest.json")
    with pytest.raises(StorageError, match="leaves its folder"):
        view.local_path("series/../../manifest.json")


def test_payload_view_of_unsealed_or_unknown_payload(storage: Storage, source: Path) -> None:
    storage.upload_payload("p1", source)
    with pytest.raises(NotFoundError, match="payload p1 does not exist or is not sealed"):
        storage.payload_view("p1")
    with pytest.raises(NotFoundError, match="payload nope does not exist or is not sealed"):
        storage.payload_view("nope")


def test_payload_view_pickles(sealed: Storage) -> None:
    view = pickle.loads(pickle.dumps(sealed.payload_view("p1")))
    assert view.read_bytes("a.dcm") == b"A" * 10
    assert view.manifest == sealed.manifest("p1")


# -- path escapes ------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/../../x", "..\\x", "/..", "a/.."])
def test_ids_that_leave_their_folder_are_refused(storage: Storage, bad: str) -> None:
    with pytest.raises(StorageError, match="is empty or leaves its folder"):
        storage.payload_root(bad)
    with pytest.raises(StorageError, match="is empty or leaves its folder"):
        storage.results_root(bad)
    if bad:  # an empty operator means "the whole job"
        with pytest.raises(StorageError, match="is empty or leaves its folder"):
            storage.results_root("job", bad)
    with pytest.raises(StorageError, match="is empty or leaves its folder"):
        storage.results(bad, "op")


@pytest.mark.parametrize(
    ("given", "inside"), [("/etc/passwd", "etc/passwd"), ("a/./b//c", "a/b/c"), ("a\\b", "a/b")]
)
def test_absolute_and_untidy_names_stay_inside(storage: Storage, given: str, inside: str) -> None:
    assert (
        storage.results("job", "op").path(given) == storage.results_root("job", "op") + "/" + inside
    )


def test_results_names_cannot_escape(storage: Storage) -> None:
    results = storage.results("job", "op")
    with pytest.raises(StorageError, match=r"path '\.\./other/x' is empty or leaves its folder"):
        results.write_bytes("../other/x", b"x")
    with pytest.raises(StorageError, match="leaves its folder"):
        results.open_output("../../x")
    assert not Path(storage.results_root("job"), "other").exists()


@pytest.mark.parametrize(
    ("job", "operator", "attempt"),
    [("../j", "op", "1"), ("j", "../op", "1"), ("j", "op", "../../../escaped")],
)
def test_log_names_cannot_escape(storage: Storage, job: str, operator: str, attempt: str) -> None:
    with pytest.raises(StorageError, match="leaves its folder"):
        storage.write_log(job, operator, attempt, "text")
    written = [p for p in Path(storage.root).rglob("*") if p.is_file()]
    assert written == []


# -- results, logs, download ---------------------------------------------------------


def test_results_dir_writes_and_lists(storage: Storage) -> None:
    results = storage.results("job-1", "seg")
    assert results.root == storage.results_root("job-1", "seg")
    results.write_bytes("mask.bin", b"\x01\x02")
    results.write_text("sub/notes.txt", "ok")
    results.write_json("measures.json", {"b": 2, "a": 1})
    with results.open_output("stream/big.bin") as out:
        out.write(b"z" * 100)
    assert results.files() == ["mask.bin", "measures.json", "stream/big.bin", "sub/notes.txt"]
    assert results.read_bytes("sub/notes.txt") == b"ok"
    assert json.loads(results.read_bytes("measures.json")) == {"a": 1, "b": 2}
    assert results.local_dir() == Path(storage.results_root("job-1", "seg"))


def test_results_stay_writable(storage: Storage) -> None:
    results = storage.results("job-1", "seg")
    results.write_text("x.txt", "one")
    results.write_text("x.txt", "two")
    assert results.read_bytes("x.txt") == b"two"


def test_local_dir_is_created(storage: Storage) -> None:
    d = storage.results("job-1", "empty").local_dir()
    assert d is not None and d.is_dir()


def test_read_missing_file(storage: Storage) -> None:
    with pytest.raises(NotFoundError, match=r"no such file in storage: .*results/job-1/seg/absent"):
        storage.results("job-1", "seg").read_bytes("absent")


def test_list_and_download_results(storage: Storage, tmp_path: Path) -> None:
    storage.results("job-1", "seg").write_bytes("mask.bin", b"m" * 7)
    storage.results("job-1", "render").write_bytes("views/ax.png", b"p" * 3)
    storage.results("job-2", "seg").write_bytes("other.bin", b"o")
    assert storage.list_results("job-1") == [
        FileEntry("render/views/ax.png", 3),
        FileEntry("seg/mask.bin", 7),
    ]
    assert storage.list_results("job-1", "seg") == [FileEntry("mask.bin", 7)]
    assert storage.list_results("job-9") == []

    seen: list[int] = []
    entries = storage.download_results("job-1", None, tmp_path / "all", progress=seen.append)
    assert [e.path for e in entries] == ["render/views/ax.png", "seg/mask.bin"]
    assert (tmp_path / "all" / "render" / "views" / "ax.png").read_bytes() == b"ppp"
    assert (tmp_path / "all" / "seg" / "mask.bin").read_bytes() == b"m" * 7
    assert sum(seen) == 10

    storage.download_results("job-1", "seg", tmp_path / "seg-only")
    assert sorted(p.name for p in (tmp_path / "seg-only").rglob("*")) == ["mask.bin"]


def test_logs_are_concatenated_per_operator_in_attempt_order(storage: Storage) -> None:
    storage.write_log("job-1", "seg", "100.000000-11", "first\n")
    storage.write_log("job-1", "seg", "200.000000-12", "second\n")
    storage.write_log("job-1", "render", "150.000000-13", "render\n")
    assert storage.read_logs("job-1") == {"seg": "first\nsecond\n", "render": "render\n"}
    assert storage.read_logs("job-1", "render") == {"render": "render\n"}
    assert storage.read_logs("job-2") == {}


def test_delete_results_removes_results_and_logs(storage: Storage) -> None:
    storage.results("job-1", "seg").write_bytes("mask.bin", b"m")
    storage.write_log("job-1", "seg", "1", "log")
    storage.results("job-2", "seg").write_bytes("mask.bin", b"m")
    storage.delete_results("job-1")
    assert storage.list_results("job-1") == []
    assert storage.read_logs("job-1") == {}
    assert storage.list_results("job-2") == [FileEntry("seg/mask.bin", 1)]


def test_results_dir_pickles(storage: Storage) -> None:
    results = pickle.loads(pickle.dumps(storage.results("job-1", "seg")))
    results.write_text("a.txt", "a")
    assert storage.results("job-1", "seg").read_bytes("a.txt") == b"a"


# -- a non-local backend -----------------------------------------------------------


@pytest.fixture
def remote(source: Path) -> Storage:
    s = Storage("mock:///bucket/clara")
    assert not s.is_local
    return s


def test_remote_payload_round_trip(remote: Storage, source: Path, tmp_path: Path) -> None:
    assert remote.upload_payload("p1", source) == EXPECTED_FILES
    manifest = remote.seal_payload("p1")
    assert list(manifest.files) == EXPECTED_FILES
    view = remote.payload_view("p1")
    assert view.read_bytes("series/1/b.dcm") == b"B" * 2000
    assert view.local_path() is None
    assert remote.local_path(remote.root) is None
    with pytest.raises(PayloadSealedError, match="payload p1 is sealed"):
        remote.write_bytes(remote.payload_root("p1") + "/data/a.dcm", b"x")


def test_remote_results_and_download(remote: Storage, tmp_path: Path) -> None:
    results = remote.results("job-1", "seg")
    assert results.local_dir() is None
    results.write_json("m.json", {"v": 1})
    assert remote.list_results("job-1") == [
        FileEntry("seg/m.json", len(json.dumps({"v": 1}, indent=2)))
    ]
    remote.download_results("job-1", "seg", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "m.json").read_text()) == {"v": 1}


def test_source_files_are_not_changed_by_sealing(sealed: Storage, source: Path) -> None:
    assert os.access(source / "a.dcm", os.W_OK)
    assert (source / "a.dcm").stat().st_mode & stat.S_IWUSR
