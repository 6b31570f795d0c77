"""LDAP login through a real Hub configured by jupyterhub_config/auth-ldap.py against a real
OpenLDAP slapd (StartTLS): group members log in and their spawner gets the LDAP uidNumber,
gidNumber and group GIDs; non-members and wrong passwords are refused; admins come from a
group."""

import secrets
from pathlib import Path

import pytest
from helpers.identity_record import RECORD_IDENTITY, recorded_identity
from helpers.slapd import SUFFIX, Group, Person, start_slapd

CONFIG = Path(__file__).parent.parent / "jupyterhub_config" / "auth-ldap.py"

PEOPLE = [
    Person("alice", "alice-pw", 20001, 20001),
    Person("bob", "bob-pw", 20002, 20002),
    Person("mallory", "mallory-pw", 20003, 20003),
]
LDAP_GROUPS = [
    Group("carta-users", ["alice", "bob"], gid=30000),
    Group("astro", ["alice"], gid=30001),
    Group("carta-admins", ["bob"]),
]


@pytest.fixture(scope="module")
def slapd(open_tmp):
    server = start_slapd(open_tmp / "slapd", PEOPLE, LDAP_GROUPS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hub(hub_factory, slapd):
    env = {
        "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32),
        "CARTA_LDAP_SERVER": "127.0.0.1",
        "CARTA_LDAP_PORT": str(slapd.port),
        "CARTA_LDAP_CA_FILE": slapd.ca_file,
        "CARTA_LDAP_BASE_DN": SUFFIX,
    }
    return hub_factory(RECORD_IDENTITY + f'load_subconfig("{CONFIG}")\n', env=env)


def test_member_logs_in_and_spawner_gets_ldap_identity(hub):
    session = hub.login("alice", "alice-pw")
    r = session.post(f"{hub.url}/hub/spawn", data={"_xsrf": session.cookies["_xsrf"]})
    assert r.status_code == 200, r.text[-500:]
    assert recorded_identity(hub, "alice") == {
        "uid": 20001,
        "gid": 20001,
        "groups": [30000, 30001],
        "name": "alice",
        "home": "/home/alice",
        "source": "auth_state",
    }
    assert hub.user_model("alice")["admin"] is False


def test_admin_from_group(hub):
    hub.login("bob", "bob-pw")
    assert hub.user_model("bob")["admin"] is True


def test_user_outside_allowed_group_refused(hub):
    with pytest.raises(PermissionError):
        hub.login("mallory", "mallory-pw")
    assert "User 'mallory' not allowed" in hub.log()


@pytest.mark.parametrize(
    "name,password", [("alice", "wrong"), ("nobody", "x"), ("alice)(uid=*", "x")]
)
def test_bad_credentials_refused(hub, name, password):
    with pytest.raises(PermissionError):
        hub.login(name, password)


def test_auth_state_is_encrypted_at_rest(hub):
    assert b"uidNumber" not in (hub.workdir / "jupyterhub.sqlite").read_bytes()
