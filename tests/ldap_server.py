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

TLS_CONFIG = """\
TLSCACertificateFile {run}/ca.pem
TLSCertificateFile {run}/server.pem
TLSCertificateKeyFile {run}/server.key
"""

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

{extra_access}access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
"""
# OpenLDAP's password policy overlay (its schema built in since 2.5), with the lockout said in its
# response control, and the policy entry PASSWORD_POLICY_ENTRY adds once the server runs.
PASSWORD_POLICY = """\
overlay ppolicy
ppolicy_default "{policy_dn}"
ppolicy_use_lockout
"""
POLICY_DN = f"cn=password-policy,ou=services,{SUFFIX}"
# Passwords set over LDAP expire after 2 seconds (those slapadd loaded have no pwdChangedTime: never),
# three wrong ones lock the account, and one set by an administrator must be changed before use.
PASSWORD_POLICY_ENTRY = {
    "cn": "password-policy",
    "pwdAttribute": "userPassword",
    "pwdMaxAge": "2",
    "pwdGraceAuthNLimit": "0",
    "pwdLockout": "TRUE",
    "pwdMaxFailure": "3",
    "pwdMustChange": "TRUE",
}
# A directory whose service account may not read the entries' identity (entryUUID), as some hide it.
HIDE_IDENTITY = "access to attrs=entryUUID by * none\n"


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


def make_certificates(run_dir: Path, certificate_ip: str) -> None:
    """A throwaway CA and a server certificate for `certificate_ip` signed by it (openssl's command line)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=run_dir, check=True, capture_output=True, timeout=60)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=CXR test CA",
    )
    (run_dir / "san.ext").write_text(f"subjectAltName=IP:{certificate_ip}\n")
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        f"/CN={certificate_ip}",
    )
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    )


@dataclass
class LdapServer:
    run_dir: Path
    tls: bool = False  # also serve ldaps:// (and StartTLS on ldap://) with a certificate from a test CA
    certificate_ip: str = "127.0.0.1"  # the address the certificate names (the server listens on 127.0.0.1)
    extra_access: str = ""  # slapd access lines before the usual ones (HIDE_IDENTITY)
    password_policy: bool = False  # OpenLDAP's ppolicy overlay, with PASSWORD_POLICY_ENTRY
    port: int = field(default_factory=free_loopback_port)
    tls_port: int = field(default_factory=free_loopback_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    @property
    def ca_file(self) -> Path:
        return self.run_dir / "ca.pem"

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
        config = CONFIG.format(
            run=self.run_dir,
            suffix=SUFFIX,
            root_dn=ROOT_DN,
            root_password=ROOT_PASSWORD,
            extra_access=self.extra_access,
        )
        if self.password_policy:
            config = config.replace("moduleload memberof", "moduleload memberof\nmoduleload ppolicy")
            config = config.replace(
                "overlay memberof\n", "overlay memberof\n" + PASSWORD_POLICY.format(policy_dn=POLICY_DN)
            )
        if self.tls:
            make_certificates(self.run_dir, self.certificate_ip)
            # TLS settings are global: they must come before the first "database" line.
            config = config.replace("\ndatabase mdb", "\n" + TLS_CONFIG.format(run=self.run_dir) + "\ndatabase mdb")
        conf.write_text(config)
        ldif = self.run_dir / "initial.ldif"
        ldif.write_text(initial_ldif())
        subprocess.run(["slapadd", "-f", str(conf), "-l", str(ldif)], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        # -d keeps slapd in the foreground (a child we can stop); level 0 logs nothing.
        urls = f"{self.url}/ {self.ldaps_url}/" if self.tls else f"{self.url}/"
        self.process = subprocess.Popen(
            ["slapd", "-f", str(self.run_dir / "slapd.conf"), "-h", urls, "-d", "0"],
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


def started_server(
    run_dir: Path,
    tls: bool = False,
    certificate_ip: str = "127.0.0.1",
    extra_access: str = "",
    password_policy: bool = False,
) -> LdapServer:
    if slapd_missing():
        pytest.skip("slapd is not installed (Debian: apt-get install slapd ldap-utils); .ci/run installs it")
    if tls and not shutil.which("openssl"):
        pytest.skip("openssl is not installed (Debian: apt-get install openssl); needed for the test certificates")
    server = LdapServer(
        run_dir, tls=tls, certificate_ip=certificate_ip, extra_access=extra_access, password_policy=password_policy
    )
    server.build()
    server.start()
    server.add_admins_group()
    if password_policy:
        with server.admin() as conn:
            assert conn.add(POLICY_DN, ["pwdPolicy", "device"], PASSWORD_POLICY_ENTRY), conn.result
    return server


def serving(run_dir: Path, **options):
    """A fixture's body: a server started in `run_dir` (started_server's options), stopped after the test."""
    server = started_server(run_dir, **options)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ldap_server():
    """One directory for the whole run; tests must leave its entries as they found them."""
    with tempfile.TemporaryDirectory(prefix="cxr-slapd-") as run_dir:
        yield from serving(Path(run_dir))


@pytest.fixture
def tls_ldap_server(tmp_path):
    """A directory that also speaks TLS, with a certificate from a throwaway CA (ca_file)."""
    yield from serving(tmp_path / "slapd-tls", tls=True)


@pytest.fixture
def misnamed_tls_ldap_server(tmp_path):
    """A TLS directory whose certificate, from the trusted test CA, names another host (127.0.0.2)."""
    yield from serving(tmp_path / "slapd-misnamed", tls=True, certificate_ip="127.0.0.2")


@pytest.fixture
def own_ldap_server(tmp_path):
    """A directory of this test's own, which it may stop."""
    yield from serving(tmp_path / "slapd")


@pytest.fixture
def password_policy_ldap_server(tmp_path):
    """A directory of this test's own with OpenLDAP's password policy overlay (PASSWORD_POLICY_ENTRY)."""
    yield from serving(tmp_path / "slapd-ppolicy", password_policy=True)
