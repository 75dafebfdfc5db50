"""Orthanc as the sending PACS: it pushes a study it holds to the Storage SCP (C-STORE SCU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from tests.peer.dicom_helpers import running_scp, write_study
from tests.peer.orthanc import OrthancServer

pytestmark = pytest.mark.peer


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, RLELossless])
def test_orthanc_pushes_a_study_that_lands_as_sent(tmp_path: Path, transfer_syntax: str) -> None:
    sent = {
        pydicom.dcmread(f).SOPInstanceUID: f
        for f in write_study(tmp_path / "study", slices=5, transfer_syntax=transfer_syntax)
    }
    with running_scp(tmp_path) as running:
        modalities = {"clara": ("CLARA", "127.0.0.1", running.port)}
        with OrthancServer(tmp_path / "orthanc", modalities=modalities) as pacs:
            ids = {pacs.upload(path) for path in sent.values()}
            assert len(ids) == len(sent)
            (study,) = pacs.get("/studies")
            pacs.post(
                "/modalities/clara/store", {"Resources": [study], "Synchronous": True}, timeout=60
            )
        stored = running.stored_files()
        stats = running.scp.stats()
    assert (stats["instances"], stats["failures"]) == (len(sent), 0)
    assert len(stored) == len(sent)
    for path in stored:
        received = pydicom.dcmread(path)
        original = pydicom.dcmread(sent[received.SOPInstanceUID])
        assert received.file_meta.TransferSyntaxUID == transfer_syntax
        assert received.file_meta.SourceApplicationEntityTitle == pacs.aet
        assert np.array_equal(received.pixel_array, original.pixel_array)
        assert received.StudyInstanceUID == original.StudyInstanceUID
