"""A real OpenLDAP server (Debian's slapd) for the directory sign-in tests.

Each server gets a throwaway mdb directory in a temporary folder, loaded from an LDIF with slapadd,
and listens on a free loopback port until stopped. The people and groups below mirror a hospital's
directory: a clinicians' group, an admins' group and a person in neither.

The clinicians' group is loaded with slapadd (which bypasses overlays, so its members carry no
memberOf), the admins' group is added over LDAP once the server runs (the memberof overlay then
writes memberOf on its members, as Active Directory does). Both ways of reading membership are so
exercised against the real server.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ldap3 import Connection, Server

SUFFIX = "dc=hospital,dc=test"
ROOT_DN = f"cn=root,{SUFFIX}"
ROOT_PASSWORD = "root-secret-for-tests"
SERVICE_DN = f"cn=cxr-service,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "service-secret-for-tests"
PEOPLE = f"ou=people,{SUFFIX}"
CLINICIANS_GROUP = f"cn=cxr-clinicians,ou=groups,{SUFFIX}"
ADMINS_GROUP = f"cn=cxr-admins,ou=groups,{SUFFIX}"
# uid -> (password, group or None)
DIRECTORY_PEOPLE = {
    "alice": ("alice-directory-pass", CLINICIANS_GROUP),
    "bob": ("bob-directory-pass", ADMINS_GROUP),
    "carol": ("carol-directory-pass", None),
}
SLAPD_PATHS = ("/usr/sbin/slapd", "/usr/sbin/slapadd")

CONFIG = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {run}/slapd.pid
argsfile {run}/slapd.args

database mdb
maxsize 16777216
suffix "{suffix}"
rootdn "{root_dn}"
rootpw {root_password}
directory {run}/db
overlay memberof

access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
"""


def _entry(dn: str, *lines: str) -> str:
    return "\n".join([f"dn: {dn}", *lines]) + "\n"


def initial_ldif() -> str:
    entries = [
        _entry(SUFFIX, "objectClass: dcObject", "objectClass: organization", "dc: hospital", "o: Test Hospital"),
        *(
            _entry(f"ou={ou},{SUFFIX}", "objectClass: organizationalUnit", f"ou: {ou}")
            for ou in ("people", "groups", "services")
        ),
        _entry(
            SERVICE_DN,
            "objectClass: applicationProcess",
            "objectClass: simpleSecurityObject",
            "cn: cxr-service",
            f"userPassword: {SERVICE_PASSWORD}",
        ),
    ]
    for uid, (password, _group) in DIRECTORY_PEOPLE.items():
        entries.append(
            _entry(
                f"uid={uid},{PEOPLE}",
                "objectClass: inetOrgPerson",
                f"uid: {uid}",
                f"cn: {uid.title()} Example",
                "sn: Example",
                f"userPassword: {password}",
            )
        )
    members = [f"member: uid={uid},{PEOPLE}" for uid, (_, g) in DIRECTORY_PEOPLE.items() if g == CLINICIANS_GROUP]
    entries.append(_entry(CLINICIANS_GROUP, "objectClass: groupOfNames", "cn: cxr-clinicians", *members))
    return "\n".join(entries)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LdapServer:
    run_dir: Path
    port: int = field(default_factory=free_loopback_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def app_settings(self) -> dict[str, str]:
        return {
            "LDAP_URL": self.url,
            "LDAP_BIND_DN": SERVICE_DN,
            "LDAP_BIND_PASSWORD": SERVICE_PASSWORD,
            "LDAP_USER_BASE": PEOPLE,
            "LDAP_USER_FILTER": "(uid={username})",
            "LDAP_ADMIN_GROUP_DN": ADMINS_GROUP,
            "LDAP_CLINICIAN_GROUP_DN": CLINICIANS_GROUP,
        }

    def build(self) -> None:
        (self.run_dir / "db").mkdir(parents=True)
        conf = self.run_dir / "slapd.conf"
        conf.write_text(CONFIG.format(run=self.run_dir, suffix=SUFFIX, root_dn=ROOT_DN, root_password=ROOT_PASSWORD))
        ldif = self.run_dir / "initial.ldif"
        ldif.write_text(initial_ldif())
        subprocess.run(["slapadd", "-f", str(conf), "-l", str(ldif)], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        # -d keeps slapd in the foreground (a child we can stop); level 0 logs nothing.
        self.process = subprocess.Popen(
            ["slapd", "-f", str(self.run_dir / "slapd.conf"), "-h", f"{self.url}/", "-d", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited: {self.process.stderr.read().decode(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("slapd did not listen within 20 s")

    def admin(self) -> Connection:
        conn = Connection(Server(self.url), ROOT_DN, ROOT_PASSWORD, auto_bind=True)
        return conn

    def add_admins_group(self) -> None:
        members = [f"uid={uid},{PEOPLE}" for uid, (_, g) in DIRECTORY_PEOPLE.items() if g == ADMINS_GROUP]
        with self.admin() as conn:
            assert conn.add(ADMINS_GROUP, ["groupOfNames"], {"cn": "cxr-admins", "member": members}), conn.result

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def slapd_missing() -> bool:
    return not all(Path(p).exists() for p in SLAPD_PATHS) and not shutil.which("slapd")


def started_server(run_dir: Path) -> LdapServer:
    if slapd_missing():
        pytest.skip("slapd is not installed (Debian: apt-get install slapd ldap-utils); .ci/run installs it")
    server = LdapServer(run_dir)
    server.build()
    server.start()
    server.add_admins_group()
    return server


@pytest.fixture(scope="session")
def ldap_server():
    """One directory for the whole run; tests must leave its entries as they found them."""
    with tempfile.TemporaryDirectory(prefix="cxr-slapd-") as run_dir:
        server = started_server(Path(run_dir))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def own_ldap_server(tmp_path):
    """A directory of this test's own, which it may stop."""
    server = started_server(tmp_path / "slapd")
    try:
        yield server
    finally:
        server.stop()
