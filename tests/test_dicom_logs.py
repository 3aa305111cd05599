"""No patient value reaches the logs when pydicom meets a malformed one: the listener, the worker (decode,
SR and capture) and an upload read a film whose Study Instance UID and birth date are invalid."""

from __future__ import annotations

import io
import logging
import warnings
from types import SimpleNamespace

import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement

from tests.dicom_films import MODALITY_AE, film
from tests.helpers import drain
from webapp.inference.decode import decode
from webapp.pacs import listener

# A UID with a component starting with 0, and a birth date written as ISO: both invalid, both common.
BAD_UID = "1.2.826.0.1.3680043.8.498.0012345678901234567890"
BAD_BIRTH_DATE = "1980-01-02"

pytestmark = pytest.mark.app_config(DICOM_RESULTS_DESTINATION="PACS@127.0.0.1:1")


def malformed_film() -> bytes:
    ds = dcmread(io.BytesIO(film(0)))
    ds["StudyInstanceUID"] = DataElement(0x0020000D, "UI", BAD_UID)
    ds["PatientBirthDate"] = DataElement(0x00100030, "DA", BAD_BIRTH_DATE)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def c_store_event(data: bytes):
    """What the listener's handler reads of a pynetdicom C-STORE event: the data set as encoded (after the
    preamble, the prefix and the file meta, whose group length is the UL value at 140)."""
    ds = dcmread(io.BytesIO(data))
    data_set = data[144 + int.from_bytes(data[140:144], "little") :]
    return SimpleNamespace(
        request=SimpleNamespace(AffectedSOPClassUID=ds.SOPClassUID, AffectedSOPInstanceUID=ds.SOPInstanceUID),
        context=SimpleNamespace(transfer_syntax=ds.file_meta.TransferSyntaxUID),
        assoc=SimpleNamespace(requestor=SimpleNamespace(ae_title=MODALITY_AE)),
        encoded_dataset=lambda include_meta=True: data if include_meta else data_set,
    )


def test_malformed_uid_and_birth_date_are_not_quoted_in_logs_or_warnings(app, caplog):
    data = malformed_film()
    caplog.set_level(logging.DEBUG, logger="pydicom")
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        on_store = dict(listener.handlers(app))[listener.evt.EVT_C_STORE]
        assert on_store(c_store_event(data)) == 0
        assert drain(app) >= 1  # screened: decoded, SR and capture built, delivery tried
        decode(data)  # an upload of the same file
    said = [record.getMessage() for record in caplog.records] + [str(w.message) for w in caught]
    assert said  # the node did log (the failed delivery at least)
    for value in (BAD_UID, BAD_BIRTH_DATE, BAD_BIRTH_DATE.replace("-", "")):
        assert not [line for line in said if value in line]
