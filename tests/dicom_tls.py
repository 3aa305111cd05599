"""A throwaway certificate authority for the DICOM TLS tests: a CA, the node's and a PACS's certificates
signed by it, and a stranger's certificate signed by another CA, made with openssl in a test's folder."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Party:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    node: Party  # this node: its server certificate, and the client certificate of its deliveries
    pacs: Party  # a PACS or modality the CA vouches for (a client of the node, the server of deliveries)
    stranger: Party  # signed by a CA nobody here trusts
    misnamed: Party  # signed by the CA, for a host other than the loopback


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(folder: Path, name: str) -> Party:
    party = Party(folder / f"{name}.pem", folder / f"{name}.key")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
        "-keyout", str(party.key), "-out", str(party.cert),
    )  # fmt: skip
    return party


def _signed(folder: Path, name: str, ca: Party, names: str = "DNS:localhost,IP:127.0.0.1") -> Party:
    party = Party(folder / f"{name}.pem", folder / f"{name}.key")
    request, extensions = folder / f"{name}.csr", folder / f"{name}.ext"
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(party.key), "-out", str(request)
    )
    # Both uses: each certificate serves as a server's and as a client's.
    extensions.write_text(f"subjectAltName={names}\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
        "-days", "2", "-extfile", str(extensions), "-out", str(party.cert),
    )  # fmt: skip
    return party


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca, other_ca = _ca(folder, "ca"), _ca(folder, "other-ca")
    return Pki(
        ca.cert,
        _signed(folder, "node", ca),
        _signed(folder, "pacs", ca),
        _signed(folder, "stranger", other_ca),
        _signed(folder, "misnamed", ca, "DNS:pacs.example.org"),
    )
