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


def test_deflated_is_rejected_for_every_class_and_other_syntaxes_accepted(port):
    # Not only the screened classes: pynetdicom inflates any deflated data set without limit when the
    # handler reads it (a 128 KiB CT of zeros is 128 MB), so a deflated CT was a memory bomb too.
    deflated_only = (*SCREENED, CTImageStorage)
    ae = AE(ae_title=MODALITY_AE)
    ae.add_requested_context(Verification)
    for sop_class in deflated_only:
        ae.add_requested_context(sop_class, [DeflatedExplicitVRLittleEndian])
    ae.add_requested_context(ComputedRadiographyImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="CXRSCREEN")
    assert assoc.is_established
    try:
        accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts}
        rejected = {c.abstract_syntax for c in assoc.rejected_contexts}
    finally:
        assoc.release()
    assert rejected == set(deflated_only)
    assert not {sop for sop, syntax in accepted if syntax == DeflatedExplicitVRLittleEndian}
    assert (ComputedRadiographyImageStorage, ExplicitVRLittleEndian) in accepted
    assert (CTImageStorage, ExplicitVRLittleEndian) in accepted
