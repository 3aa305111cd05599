"""DICOM over TLS (PS3.15 B.1): the node's port speaks TLS only and takes films from peers whose
certificates the CA signed; results go to the PACS over TLS; a plain peer, an untrusted certificate and
a bad setting are refused in one line. Certificates from a throwaway CA (tests/dicom_tls.py)."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import socket
import ssl
import subprocess
import time

import pytest
import requests
from markupsafe import escape
from pydicom import dcmread
from pynetdicom import AE, evt
from pynetdicom.sop_class import ComprehensiveSRStorage, ComputedRadiographyImageStorage, Verification
from sqlalchemy import func, select

from tests.dicom_films import MODALITY_AE, film
from tests.dicom_tls import Party, make_pki
from tests.helpers import drain
from tests.orthanc_server import NODE_AE_TITLE, OrthancServer
from tests.test_dicom_refusals import deliver, outbox_result
from webapp.extensions import db
from webapp.jobs import cli as jobs_cli
from webapp.models import RECEIPT_SCREENED, RESULT_REFUSED, RESULT_SENT, DicomReceipt
from webapp.pacs import cli as pacs_cli
from webapp.pacs import listener


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_settings(pki, party: Party | None = None) -> dict:
    party = party or pki.node
    return {
        "DICOM_TLS_CERT_FILE": str(party.cert),
        "DICOM_TLS_KEY_FILE": str(party.key),
        "DICOM_TLS_CA_FILE": str(pki.ca),
    }


@pytest.fixture
def tls_port(app, pki):
    """The app's DICOM node over TLS on a free loopback port, taking any calling AE title."""
    app.config.update(DICOM_PORT=0, DICOM_ALLOWED_CALLING_AETS=(), **tls_settings(pki))
    server = listener.start(app)
    yield server.server_address[1]
    server.shutdown()


def peer_context(pki, party: Party | None) -> ssl.SSLContext:
    """A modality's: it trusts the CA, and presents `party`'s certificate (None: none)."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    if party is not None:
        context.load_cert_chain(str(party.cert), str(party.key))
    return context


def associate(port: int, context: ssl.SSLContext | None, *classes):
    ae = AE(ae_title=MODALITY_AE)
    ae.connection_timeout = ae.acse_timeout = 5  # the TLS handshake is part of connecting
    for sop_class in classes or (Verification,):
        ae.add_requested_context(sop_class)
    tls_args = (context, "127.0.0.1") if context else None
    return ae.associate("127.0.0.1", port, ae_title="CXRSCREEN", tls_args=tls_args)


def stored_films(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(DicomReceipt))


def wait_for(caplog, text: str) -> None:
    deadline = time.monotonic() + 10
    while text not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_film_sent_over_tls_by_a_trusted_peer_is_screened(tls_port, app, pki):
    assoc = associate(tls_port, peer_context(pki, pki.pacs), ComputedRadiographyImageStorage)
    assert assoc.is_established
    try:
        assert assoc.send_c_store(dcmread(io.BytesIO(film(0)))).Status == 0
    finally:
        assoc.release()
    assert drain(app) == 1
    with app.app_context():
        assert db.session.scalar(select(DicomReceipt.state)) == RECEIPT_SCREENED


def test_storescu_over_tls_is_taken(tls_port, app, pki, tmp_path):
    if shutil.which("storescu") is None:
        pytest.skip("storescu is not installed (apt-get install dcmtk)")
    path = tmp_path / "film.dcm"
    path.write_bytes(film(0))
    command = ["storescu", "-aet", MODALITY_AE, "-aec", "CXRSCREEN", "+tls", str(pki.pacs.key), str(pki.pacs.cert)]
    command += ["+cf", str(pki.ca), "127.0.0.1", str(tls_port), str(path)]
    sent = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert stored_films(app) == 1


@pytest.mark.parametrize(
    ("peer", "why"),
    [
        ("plain", "it does not speak TLS"),
        ("stranger", "its certificate is not trusted"),  # signed by a CA the node does not trust
        ("no certificate", "it presented no certificate"),
    ],
)
def test_a_peer_without_a_trusted_certificate_is_refused_at_the_handshake_in_one_line(
    tls_port, app, pki, caplog, peer, why
):
    caplog.set_level(logging.DEBUG)
    context = {"plain": None, "stranger": peer_context(pki, pki.stranger), "no certificate": peer_context(pki, None)}
    assoc = associate(tls_port, context[peer])
    if assoc.is_established:  # TLS 1.3: the client hears of its refused certificate only at its next read
        assert assoc.send_c_echo().Status is None
    assert not assoc.is_established
    wait_for(caplog, "refused at the TLS handshake")
    lines = [r for r in caplog.records if r.name == "webapp.pacs.listener"]
    assert len(lines) == 1 and f"connection from 127.0.0.1 refused at the TLS handshake: {why}" in lines[0].getMessage()
    assert not any(r.exc_info for r in caplog.records if r.name.startswith(("webapp", "pynetdicom.transport")))
    assert stored_films(app) == 0


def test_a_port_probe_is_one_line(tls_port, caplog):
    caplog.set_level(logging.WARNING, logger="webapp.pacs.listener")
    socket.create_connection(("127.0.0.1", tls_port)).close()
    wait_for(caplog, "refused at the TLS handshake")
    assert "it closed the connection during the handshake (a port probe" in caplog.text


def test_a_connection_that_says_nothing_does_not_keep_others_out(tls_port, pki):
    # With pynetdicom's own ssl_context the handshake ran in its one accepting thread, without a timeout:
    # one idle connection (a port probe) and no film came in at all.
    with socket.create_connection(("127.0.0.1", tls_port)):
        started = time.monotonic()
        assoc = associate(tls_port, peer_context(pki, pki.pacs))
        try:
            assert assoc.is_established and assoc.send_c_echo().Status == 0
        finally:
            assoc.release()
        assert time.monotonic() - started < 5


@contextlib.contextmanager
def tls_pacs(pki, party: Party):
    """A PACS taking SRs over TLS with `party`'s certificate, asking for a client certificate from the CA;
    yields its port and the SOP Instance UIDs it stored, and stops with the block."""
    stores = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(party.cert), str(party.key))
    context.load_verify_locations(str(pki.ca))
    context.verify_mode = ssl.CERT_REQUIRED
    ae = AE(ae_title="PACS")
    ae.add_supported_context(ComprehensiveSRStorage)

    def on_store(event):
        stores.append(event.dataset.SOPInstanceUID)
        return 0

    server = ae.start_server(
        ("127.0.0.1", 0), block=False, ssl_context=context, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        yield server.server_address[1], stores
    finally:
        server.shutdown()


def test_a_result_is_delivered_over_tls(app, pki):
    app.config.update(tls_settings(pki))
    with tls_pacs(pki, pki.pacs) as (port, stores):
        result = deliver(app, outbox_result(app, port))
    assert result.state == RESULT_SENT and len(stores) == 1


@pytest.mark.parametrize(
    ("pacs_party", "node_party", "why"),
    [
        # the PACS's certificate is signed by a CA not in DICOM_TLS_CA_FILE
        (
            "stranger",
            "node",
            "TLS handshake failed: its certificate is not trusted (unable to get local issuer certificate",
        ),
        # the PACS does not trust ours
        ("pacs", "stranger", "TLS handshake failed: it refused this node's certificate or TLS version"),
    ],
)
def test_a_delivery_whose_handshake_fails_is_refused_with_its_reason(
    app, client, auth, admin_user, pki, pacs_party, node_party, why
):
    app.config.update(tls_settings(pki, getattr(pki, node_party)))
    with tls_pacs(pki, getattr(pki, pacs_party)) as (port, stores):
        result = deliver(app, outbox_result(app, port))
    assert (result.state, stores) == (RESULT_REFUSED, [])
    assert why in result.last_error
    auth.login("admin")
    page = client.get("/admin/dicom/outbox")
    assert page.status_code == 200 and escape(why) in page.get_data(as_text=True)


def test_a_delivery_to_a_pacs_whose_certificate_names_another_host_is_refused(app, pki):
    # DICOM_RESULTS_DESTINATION says 127.0.0.1; the certificate is the CA's, but for pacs.example.org.
    app.config.update(tls_settings(pki))
    with tls_pacs(pki, pki.misnamed) as (port, stores):
        result = deliver(app, outbox_result(app, port))
    assert result.state == RESULT_REFUSED and "IP address mismatch" in result.last_error


def bad_settings(pki, tmp_path) -> dict[str, tuple[dict, str]]:
    node = tls_settings(pki)
    (tmp_path / "not.pem").write_text("not a certificate\n")
    return {
        "key not set": ({**node, "DICOM_TLS_KEY_FILE": ""}, "DICOM_TLS_KEY_FILE must be set too"),
        "only the CA": ({"DICOM_TLS_CA_FILE": node["DICOM_TLS_CA_FILE"]}, "DICOM_TLS_CERT_FILE must be set too"),
        "no such key": (
            {**node, "DICOM_TLS_KEY_FILE": str(tmp_path / "gone.key")},
            f"DICOM_TLS_KEY_FILE: cannot read {tmp_path / 'gone.key'}: No such file or directory",
        ),
        "key of another": (
            {**node, "DICOM_TLS_KEY_FILE": str(pki.pacs.key)},
            f"DICOM_TLS_KEY_FILE: {pki.pacs.key} is not the unencrypted PEM private key of DICOM_TLS_CERT_FILE",
        ),
        "not a certificate": (
            {**node, "DICOM_TLS_CERT_FILE": str(tmp_path / "not.pem")},
            f"DICOM_TLS_CERT_FILE: {tmp_path / 'not.pem'} holds no PEM certificate",
        ),
        "CA not PEM": (
            {**node, "DICOM_TLS_CA_FILE": str(tmp_path / "not.pem")},
            f"DICOM_TLS_CA_FILE: {tmp_path / 'not.pem'} holds no PEM certificate",
        ),
    }


@pytest.mark.parametrize("command", [["dicom", "listen"], ["jobs", "worker"]])
@pytest.mark.parametrize(
    "case", ["key not set", "only the CA", "no such key", "key of another", "not a certificate", "CA not PEM"]
)
def test_a_bad_tls_setting_stops_the_node_and_the_worker_with_one_line(
    app, runner, pki, tmp_path, monkeypatch, command, case
):
    def started(*args):
        raise AssertionError("started with a bad TLS setting")

    monkeypatch.setattr(pacs_cli.listener, "serve", started)  # the node would listen, the worker run, for ever
    monkeypatch.setattr(jobs_cli, "jobs", started)
    settings, message = bad_settings(pki, tmp_path)[case]
    app.config.update({"DICOM_TLS_CERT_FILE": None, "DICOM_TLS_KEY_FILE": None, "DICOM_TLS_CA_FILE": None}, **settings)
    result = runner.invoke(args=command)
    assert result.exit_code == 4
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cxr-screen: configuration error: {message}")


def test_orthanc_over_tls_routes_a_film_to_the_node_and_takes_its_result(tls_port, app, pki):
    """A real PACS both ways, as docs/dicom.md configures it: Orthanc's DICOM TLS with its certificate, our
    CA trusted, the node declared with UseDicomTls."""
    orthanc = OrthancServer(
        NODE_AE_TITLE,
        tls_port,
        settings={
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(pki.pacs.cert),
            "DicomTlsPrivateKey": str(pki.pacs.key),
            "DicomTlsTrustedCertificates": str(pki.ca),
            "DicomTlsRemoteCertificateRequired": True,
            "DicomModalities": {
                "cxrscreen": {"AET": NODE_AE_TITLE, "Host": "127.0.0.1", "Port": tls_port, "UseDicomTls": True}
            },
        },
    )
    try:
        result = deliver(app, outbox_result(app, orthanc.dicom_port))
        assert result.state == RESULT_SENT, result.last_error
        assert len(orthanc.instance_ids()) == 1
        uploaded = requests.post(orthanc.url + "/instances", data=film(0), timeout=30).json()["ID"]
        sent = requests.post(orthanc.url + "/modalities/cxrscreen/store", json={"Resources": [uploaded]}, timeout=60)
        assert sent.ok, sent.text
        assert stored_films(app) == 2  # outbox_result's receipt, and the film Orthanc sent
    finally:
        orthanc.stop(remove=True)
