"""carta_hub.hub.identity: sources, ranges, errors."""

import grp
import pwd

import pytest
import yaml
from helpers.fakes import FakeUser

from carta_hub.hub import identity
from carta_hub.hub.identity import IdentityError, IdentityResolver

pytestmark = pytest.mark.fast


LDAP_STATE = {
    "user_attributes": {
        "uidNumber": [5001],
        "gidNumber": [5000],
        "uid": ["alice"],
        "homeDirectory": ["/ceph/home/alice"],
    }
}


async def test_ldap_auth_state():
    ident = await IdentityResolver().resolve(FakeUser("alice", LDAP_STATE))
    assert (ident.uid, ident.gid, ident.groups, ident.name) == (5001, 5000, (), "alice")
    assert ident.home == "/ceph/home/alice" and ident.source == "auth_state"
    assert "alice:x:5001:5000:alice:/ceph/home/alice:/bin/sh" in ident.passwd_lines()


async def test_oidc_claims_with_groups():
    state = {"oauth_user": {"uid_number": "6001", "gid_number": 6000, "gids": "6000, 7000,0"}}
    resolver = IdentityResolver(
        uid_attribute="uid_number",
        gid_attribute="gid_number",
        groups_attribute="gids",
        home_template="/ceph/home/{login}",
    )
    ident = await resolver.resolve(FakeUser("jo@uni.edu", state))
    assert (ident.uid, ident.gid, ident.groups) == (6001, 6000, (6000, 7000))
    assert ident.name == "jo@uni.edu" and ident.home == "/ceph/home/jo@uni.edu"
    assert "g7000:x:7000:jo@uni.edu" in ident.group_lines()


async def test_mapping_file(tmp_path):
    path = tmp_path / "ids.yaml"
    path.write_text("a.student: {uid: 7001, gid: 7000, groups: [7100], home: /ceph/home/as}\n")
    resolver = IdentityResolver(mapping_file=str(path))
    ident = await resolver.resolve(FakeUser("a.student"))
    assert (ident.uid, ident.gid, ident.groups, ident.source) == (7001, 7000, (7100,), "mapping")


async def test_nss():
    resolver = IdentityResolver(sources=["nss"], allowed_uids=(0, 10), allowed_gids=(0, 10))
    with pytest.raises(IdentityError, match="UID 0"):  # root is never allowed
        await resolver.resolve(FakeUser(pwd.getpwuid(0).pw_name))
    nobody = pwd.getpwnam("nobody")
    ident = await IdentityResolver(
        sources=["nss"], allowed_uids=(1, 2**31 - 1), allowed_gids=(1, 2**31 - 1)
    ).resolve(FakeUser("nobody"))
    assert (ident.uid, ident.source) == (nobody.pw_uid, "nss")


@pytest.mark.parametrize(
    "state, message",
    [
        ({"user_attributes": {"uidNumber": [0], "gidNumber": [5000]}}, "UID 0"),
        ({"user_attributes": {"uidNumber": [50], "gidNumber": [5000]}}, "UID 50"),
        ({"user_attributes": {"uidNumber": [5001], "gidNumber": [10]}}, "primary GID 10"),
        ({"user_attributes": {"gidNumber": [5000]}}, "no 'uidNumber' attribute"),
        ({"user_attributes": {"uidNumber": ["x"], "gidNumber": [1]}}, "Malformed"),
        (None, "no auth_state"),
    ],
)
async def test_bad_identities(state, message):
    resolver = IdentityResolver(sources=["auth_state"])
    with pytest.raises(IdentityError, match=message):
        await resolver.resolve(FakeUser("mallory", state))


async def test_no_source_knows_user():
    with pytest.raises(IdentityError, match="No POSIX identity for user 'ghost-x'.*nss"):
        await IdentityResolver().resolve(FakeUser("ghost-x", {}))


async def test_kubernetes_hub_never_uses_its_own_passwd(tmp_path, monkeypatch):
    """On Kubernetes the hub pod's /etc/passwd is not the site's: a user it happens to list
    (here 'nobody', UID 65534) gets no identity without auth_state or a mapping."""
    from k8s_simulator import write_kubeconfig
    from kube_support import use_kubeconfig

    from carta_hub.hub.kube import CARTAKubeSpawner

    use_kubeconfig(monkeypatch, write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:9"))
    spawner = CARTAKubeSpawner(user=FakeUser("nobody"), _mock=True)
    with pytest.raises(IdentityError, match=r"\(auth_state: .*; mapping: [^;]*\)\."):
        await IdentityResolver(parent=spawner).resolve(FakeUser("nobody"))
    assert (await IdentityResolver().resolve(FakeUser("nobody"))).source == "nss"


# login names and homes that would break `sudo -u NAME` in batchspawner's shell commands, an
# #SBATCH line, a bind spec or a passwd line (match() with "$" let "alice\n" through)
BAD_NAMES = [
    "alice\n",
    "alice\nid",
    "alice\r",
    "alice; id",
    "$(id)",
    "`id`",
    "al ice",
    "-alice",
    ".alice",
    "@alice",
    "al:ice",
    "a/b",
    "ali\x00ce",
    "x" * 65,
]
BAD_HOMES = [
    "home/alice",
    "/home/alice\n",
    "/home/alice\n#SBATCH --uid=0",
    "/home/al ice",
    "/home/$(id)",
    "/home/alice;id",
    "/home/../root",
    "/home/./alice",
    "/home//alice",
    "/home/alice/",
    "//home/alice",
    "/home/alice/..",
    "/home/al\tice",
    "/home/a:b",
    "/home/a,b",
    "~alice",
    "",
]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_unsafe_login_names_refused(name, tmp_path):
    """From auth_state, from the mapping file, or as the JupyterHub username (no name
    attribute): refused, not replaced by u<uid> (on Slurm the login is who sudo runs as)."""
    state = {
        "user_attributes": {
            "uidNumber": [5001],
            "gidNumber": [5000],
            "uid": [name],
            "homeDirectory": ["/home/alice"],
        }
    }
    with pytest.raises(IdentityError, match="is not a valid login name"):
        await IdentityResolver(sources=["auth_state"]).resolve(FakeUser("alice", state))
    path = tmp_path / "ids.yaml"
    path.write_text(
        yaml.safe_dump({"alice": {"uid": 5001, "gid": 5000, "name": name, "home": "/home/alice"}})
    )
    with pytest.raises(IdentityError, match="maps to the login name .* \\(mapping\\)"):
        await IdentityResolver(mapping_file=str(path)).resolve(FakeUser("alice"))
    del state["user_attributes"]["uid"]
    with pytest.raises(IdentityError, match="is not a valid login name"):
        await IdentityResolver(sources=["auth_state"]).resolve(FakeUser(name, state))


@pytest.mark.parametrize("home", BAD_HOMES)
async def test_unsafe_homes_refused(home, tmp_path):
    state = {
        "user_attributes": {
            "uidNumber": [5001],
            "gidNumber": [5000],
            "uid": ["alice"],
            "homeDirectory": [home],
        }
    }
    resolver = IdentityResolver(sources=["auth_state"], home_template="{username}")
    with pytest.raises(IdentityError, match="is not a plain absolute path"):
        await resolver.resolve(FakeUser("alice", state))
    path = tmp_path / "ids.yaml"
    path.write_text(yaml.safe_dump({"alice": {"uid": 5001, "gid": 5000, "home": home}}))
    resolver = IdentityResolver(mapping_file=str(path), home_template="/home/x y")
    with pytest.raises(IdentityError, match="maps to the home .* \\(mapping\\)"):
        await resolver.resolve(FakeUser("alice"))


async def test_home_template_with_an_unsafe_username_refused():
    state = {"user_attributes": {"uidNumber": [5001], "gidNumber": [5000], "uid": ["alice"]}}
    resolver = IdentityResolver(sources=["auth_state"], home_template="/home/{username}")
    with pytest.raises(IdentityError, match="is not a plain absolute path"):
        await resolver.resolve(FakeUser("al ice", state))


@pytest.mark.parametrize(
    "name, home", [("alice\n", "/home/alice"), ("alice", "/home/al ice"), ("alice", "home/alice")]
)
async def test_unsafe_nss_entries_refused(monkeypatch, name, home):
    entry = pwd.struct_passwd((name, "x", 5001, 5000, "", home, "/bin/sh"))
    monkeypatch.setattr(identity.pwd, "getpwnam", lambda _: entry)
    monkeypatch.setattr(identity.os, "getgrouplist", lambda *_: [5000])
    with pytest.raises(IdentityError, match="\\(nss\\), which is not"):
        await IdentityResolver(sources=["nss"]).resolve(FakeUser("alice"))


@pytest.mark.parametrize(
    "name, home",
    [
        ("jo@uni.edu", "/ceph/home/jo@uni.edu"),
        ("a.student_2", "/home/a.student_2"),
        ("_x-y", "/"),
        ("A" * 64, "/home/u+1/..."),
    ],
)
async def test_plain_names_and_homes_accepted(name, home):
    state = {
        "user_attributes": {
            "uidNumber": [5001],
            "gidNumber": [5000],
            "uid": [name],
            "homeDirectory": [home],
        }
    }
    ident = await IdentityResolver(sources=["auth_state"]).resolve(FakeUser("x", state))
    assert (ident.name, ident.home) == (name, home)


async def test_unsafe_group_names_written_as_gids(monkeypatch):
    monkeypatch.setattr(
        identity.grp, "getgrgid", lambda gid: grp.struct_group(("staff\nroot::0:", "x", gid, []))
    )
    state = {"user_attributes": {"uidNumber": [5001], "gidNumber": [5000]}}
    ident = await IdentityResolver(
        sources=["auth_state"], name_attribute="", home_template="/home/{login}"
    ).resolve(FakeUser("al", state))
    assert ident.group_lines() == "root:x:0:\ng5000:x:5000:\n"
