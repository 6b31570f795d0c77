"""carta_hub.identity: sources, ranges, errors."""

import os
import pwd

import pytest

from carta_hub.identity import IdentityError, IdentityResolver
from helpers.fakes import FakeUser


LDAP_STATE = {"user_attributes": {"uidNumber": [5001], "gidNumber": [5000], "uid": ["alice"],
                                  "homeDirectory": ["/ceph/home/alice"]}}


async def test_ldap_auth_state():
    ident = await IdentityResolver().resolve(FakeUser("alice", LDAP_STATE))
    assert (ident.uid, ident.gid, ident.groups, ident.name) == (5001, 5000, (), "alice")
    assert ident.home == "/ceph/home/alice" and ident.source == "auth_state"
    assert "alice:x:5001:5000:alice:/ceph/home/alice:/bin/sh" in ident.passwd_lines()


async def test_oidc_claims_with_groups():
    state = {"oauth_user": {"uid_number": "6001", "gid_number": 6000, "gids": "6000, 7000,0"}}
    resolver = IdentityResolver(uid_attribute="uid_number", gid_attribute="gid_number",
                                groups_attribute="gids", home_template="/ceph/home/{login}")
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
    me = pwd.getpwuid(os.getuid())
    resolver = IdentityResolver(sources=["nss"], allowed_uids=(0, 10), allowed_gids=(0, 10))
    with pytest.raises(IdentityError, match="UID 0"):  # root is never allowed
        await resolver.resolve(FakeUser(me.pw_name))
    nobody = pwd.getpwnam("nobody")
    ident = await IdentityResolver(sources=["nss"], allowed_uids=(1, 2**31 - 1),
                                   allowed_gids=(1, 2**31 - 1)).resolve(FakeUser("nobody"))
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
    from carta_hub.kube import CARTAKubeSpawner
    from k8s_simulator import write_kubeconfig
    from kube_support import use_kubeconfig

    use_kubeconfig(monkeypatch, write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:9"))
    spawner = CARTAKubeSpawner(user=FakeUser("nobody"), _mock=True)
    with pytest.raises(IdentityError, match=r"\(auth_state: .*; mapping: [^;]*\)\."):
        await IdentityResolver(parent=spawner).resolve(FakeUser("nobody"))
    assert (await IdentityResolver().resolve(FakeUser("nobody"))).source == "nss"
