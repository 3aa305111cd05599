"""What the listener agrees to at association, against a real pynetdicom requestor on a loopback port."""

from __future__ import annotations

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    Verification,
)

from tests.dicom_films import MODALITY_AE
from webapp.pacs import listener

SCREENED = (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
)


@pytest.fixture
def port(app):
    app.config.update(DICOM_PORT=0, DICOM_ALLOWED_CALLING_AETS=())
    server = listener.start(app, block=False)
    yield server.server_address[1]
    server.shutdown()


def test_deflated_cr_and_dx_are_rejected_and_other_syntaxes_accepted(port):
    ae = AE(ae_title=MODALITY_AE)
    ae.add_requested_context(Verification)
    for sop_class in SCREENED:
        ae.add_requested_context(sop_class, [DeflatedExplicitVRLittleEndian])  # deflated only
    ae.add_requested_context(ComputedRadiographyImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(CTImageStorage, [DeflatedExplicitVRLittleEndian])  # not screened: taken as before
    assoc = ae.associate("127.0.0.1", port, ae_title="CXRSCREEN")
    assert assoc.is_established
    try:
        accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts}
        rejected = {c.abstract_syntax for c in assoc.rejected_contexts}
    finally:
        assoc.release()
    assert rejected == set(SCREENED)
    assert not {sop for sop, syntax in accepted if sop in SCREENED and syntax == DeflatedExplicitVRLittleEndian}
    assert (ComputedRadiographyImageStorage, ExplicitVRLittleEndian) in accepted
    assert (CTImageStorage, DeflatedExplicitVRLittleEndian) in accepted
