"""OpenID Connect login through a real Hub configured by jupyterhub_config/auth-oidc.py
against a real provider (npm oidc-provider): the full redirect flow, claims reaching the
spawner's identity, group-based access and admins, and tampered or replayed callbacks
refused."""

import secrets
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from helpers.identity_record import RECORD_IDENTITY, recorded_identity
from helpers.oidc import (
    authorize,
    callback_params,
    finish,
    new_client,
    provider_env,
    start_oidc_provider,
)
from helpers.ports import free_port

CONFIG = Path(__file__).parent.parent / "jupyterhub_config" / "auth-oidc.py"

ACCOUNTS = {
    "carol": {
        "password": "carol-pw",
        "claims": {
            "uidNumber": 21001,
            "gidNumber": 21001,
            "gidNumbers": [31000, 31001],
            "groups": ["carta-users", "radio"],
            "homeDirectory": "/ceph/home/carol",
        },
    },
    "dave": {
        "password": "dave-pw",
        "claims": {
            "uidNumber": 21002,
            "gidNumber": 21002,
            "gidNumbers": [],
            "groups": ["carta-admins"],
        },
    },
    "eve": {
        "password": "eve-pw",
        "claims": {"uidNumber": 21003, "gidNumber": 21003, "groups": ["students"]},
    },
}


@pytest.fixture(scope="module")
def oidc_hub(hub_factory, open_tmp):
    port, client = free_port(), new_client()
    env = {"JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32), **provider_env(port, client)}
    hub = hub_factory(RECORD_IDENTITY + f'load_subconfig("{CONFIG}")\n', env=env)
    provider = start_oidc_provider(
        open_tmp / "oidc", port, client, f"{hub.url}/hub/oauth_callback", ACCOUNTS
    )
    yield hub
    provider.stop()


def login(hub, name):
    session, callback = authorize(hub, name, ACCOUNTS[name]["password"])
    r = finish(session, callback)
    return session, r


def test_full_redirect_flow_and_claims_reach_identity(oidc_hub):
    hub = oidc_hub
    session, r = login(hub, "carol")
    assert r.status_code == 302, r.text[-500:]
    r = session.post(f"{hub.url}/hub/spawn", data={"_xsrf": session.cookies["_xsrf"]})
    assert r.status_code == 200, r.text[-500:]
    assert recorded_identity(hub, "carol") == {
        "uid": 21001,
        "gid": 21001,
        "groups": [31000, 31001],
        "name": "carol",
        "home": "/ceph/home/carol",
        "source": "auth_state",
    }
    user = hub.user_model("carol")
    assert user["admin"] is False and sorted(user["groups"]) == ["carta-users", "radio"]


def test_admin_from_group_claim(oidc_hub):
    assert login(oidc_hub, "dave")[1].status_code == 302
    assert oidc_hub.user_model("dave")["admin"] is True


def test_user_outside_allowed_groups_refused(oidc_hub):
    assert login(oidc_hub, "eve")[1].status_code == 403


def test_wrong_password_refused(oidc_hub):
    with pytest.raises(PermissionError):
        authorize(oidc_hub, "carol", "wrong")


def tampered(callback, **changes):
    base, _ = callback.split("?", 1)
    return f"{base}?{urlencode({**callback_params(callback), **changes})}"


def refused(hub, session, callback):
    r = finish(session, callback)
    return r.status_code >= 400 and not logged_in(hub, session)


def logged_in(hub, session):
    return session.get(f"{hub.url}/hub/home", allow_redirects=False).status_code == 200


def test_tampered_state_refused(oidc_hub):
    session, callback = authorize(oidc_hub, "carol", "carol-pw")
    assert refused(oidc_hub, session, tampered(callback, state="forged"))


def test_tampered_code_refused(oidc_hub):
    session, callback = authorize(oidc_hub, "carol", "carol-pw")
    code = callback_params(callback)["code"]
    assert refused(oidc_hub, session, tampered(callback, code=code[:-4] + "AAAA"))


def test_replayed_callback_refused(oidc_hub):
    """A stolen callback URL (and state cookie) is useless once the code was redeemed."""
    session, callback = authorize(oidc_hub, "carol", "carol-pw")
    state_cookie = session.cookies["oauthenticator-state"]
    assert finish(session, callback).status_code == 302
    thief = requests.Session()
    thief.cookies.set("oauthenticator-state", state_cookie)
    assert refused(oidc_hub, thief, callback)
