"""A real OpenLDAP ``slapd`` on loopback for tests, seeded with POSIX users and groups.

``start_slapd(workdir, people, groups)`` writes a slapd.conf (mdb backend, the Debian schemas,
StartTLS with a fresh self-signed certificate for 127.0.0.1), loads the entries with
``slapadd`` and starts ``slapd`` on a free port. ``Slapd.stop()`` ends exactly that PID.
"""

import base64
import hashlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .hub import _end
from .ports import await_server, free_port

SUFFIX = "dc=carta,dc=test"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"

CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {dir}/slapd.pid
TLSCertificateFile {dir}/cert.pem
TLSCertificateKeyFile {dir}/key.pem
security simple_bind=128

database mdb
suffix "{suffix}"
directory {dir}/data
maxsize 16777216
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by * none
"""


@dataclass
class Person:
    login: str
    password: str
    uid: int
    gid: int


@dataclass
class Group:
    """A posixGroup (members by ``memberUid``) when ``gid`` is set, else a groupOfNames."""

    name: str
    members: list = field(default_factory=list)
    gid: int | None = None

    @property
    def dn(self):
        return f"cn={self.name},{GROUPS}"


def person_dn(login):
    return f"uid={login},{PEOPLE}"


def _ssha(password):
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _ldif(people, groups):
    top = SUFFIX.split(",")[0].split("=")[1]
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: {top}\no: {top}",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people",
        f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups",
    ]
    for p in people:
        entries.append(
            f"dn: {person_dn(p.login)}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n"
            f"uid: {p.login}\ncn: {p.login}\nsn: {p.login}\nuidNumber: {p.uid}\n"
            f"gidNumber: {p.gid}\nhomeDirectory: /home/{p.login}\n"
            f"userPassword: {_ssha(p.password)}"
        )
    for g in groups:
        if g.gid is not None:
            lines = [f"objectClass: posixGroup\ngidNumber: {g.gid}"]
            lines += [f"memberUid: {m}" for m in g.members]
        else:
            lines = ["objectClass: groupOfNames"]
            lines += [f"member: {person_dn(m)}" for m in g.members]
        entries.append(f"dn: {g.dn}\ncn: {g.name}\n" + "\n".join(lines))
    return "\n\n".join(entries) + "\n"


def _self_signed(directory):
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            f"{directory}/key.pem",
            "-out",
            f"{directory}/cert.pem",
        ],
        check=True,
        capture_output=True,
    )


class Slapd:
    def __init__(self, directory, proc, port):
        self.directory = Path(directory)
        self.proc = proc
        self.port = port
        self.ca_file = str(self.directory / "cert.pem")

    def stop(self):
        _end(self.proc.pid, self.proc)


def start_slapd(directory, people, groups):
    """Start a seeded slapd with its files in ``directory``; returns a :class:`Slapd`."""
    directory = Path(directory)
    (directory / "data").mkdir(parents=True)
    _self_signed(directory)
    conf = directory / "slapd.conf"
    conf.write_text(CONF.format(dir=directory, suffix=SUFFIX))
    (directory / "seed.ldif").write_text(_ldif(people, groups))
    subprocess.run(
        ["slapadd", "-q", "-f", conf, "-l", directory / "seed.ldif"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    with open(directory / "slapd.log", "wb") as log:
        proc = subprocess.Popen(
            ["slapd", "-d", "0", "-f", conf, "-h", f"ldap://127.0.0.1:{port}/"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Slapd(directory, proc, port)
    return await_server(server, lambda: _answers(server), 20, "slapd to answer")


def _answers(server):
    if server.proc.poll() is not None:
        log = (server.directory / "slapd.log").read_text(errors="replace")
        raise RuntimeError(f"slapd exited with {server.proc.returncode}:\n{log}")
    return (
        subprocess.run(
            [
                "ldapsearch",
                "-x",
                "-H",
                f"ldap://127.0.0.1:{server.port}/",
                "-b",
                "",
                "-s",
                "base",
                "namingContexts",
            ],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
