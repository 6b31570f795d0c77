# OpenID Connect login for a carta-hub Hub (oauthenticator's GenericOAuthenticator), e.g.
# Keycloak in front of the site LDAP. Load it from the Hub's own config:
# `load_subconfig("auth-oidc.py")` (paths are relative to the including file).
#
# What it does:
# - "Sign in with OIDC": the authorization-code flow with PKCE, the client authenticated with
#   HTTP Basic; the user's claims are read from the provider's userinfo endpoint;
# - only members of CARTA_OIDC_ALLOWED_GROUPS (names in the `groups` claim) may log in;
#   members of CARTA_OIDC_ADMIN_GROUPS are Hub admins; the Hub's own groups follow the claim;
# - the claims, including uidNumber, gidNumber and gidNumbers (the POSIX identity CARTA runs
#   as), are stored in the user's auth_state (auth_state["oauth_user"]), encrypted with
#   JUPYTERHUB_CRYPT_KEY, where the spawner's IdentityResolver reads them.
#
# The provider must release these claims to the Hub's client (in Keycloak: user-attribute
# mappers, a group-membership mapper for groups):
#   preferred_username  the JupyterHub user name (and POSIX login)
#   uidNumber, gidNumber  numbers; gidNumbers  a list of numbers (supplementary groups)
#   homeDirectory       optional (else IdentityResolver.home_template)
#   groups              list of group names
#
# Site values (environment of the Hub, e.g. a Kubernetes secret), as oauthenticator reads them:
#   JUPYTERHUB_CRYPT_KEY      required: `openssl rand -hex 32`, the same across Hub restarts
#   OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET   the Hub's client at the provider
#   OAUTH2_AUTHORIZE_URL, OAUTH2_TOKEN_URL, OAUTH2_USERDATA_URL   from the provider's
#       /.well-known/openid-configuration (authorization_, token_, userinfo_endpoint)
#   OAUTH_CALLBACK_URL        https://HUB/hub/oauth_callback (register it at the provider)
#   CARTA_OIDC_SCOPES         scopes releasing the claims above
#                             (default "openid profile groups posix")
#   CARTA_OIDC_ALLOWED_GROUPS group names separated by "," (default carta-users)
#   CARTA_OIDC_ADMIN_GROUPS   group names separated by "," (default carta-admins)
import os

if not os.environ.get("JUPYTERHUB_CRYPT_KEY"):
    raise SystemExit(
        "auth-oidc.py: set JUPYTERHUB_CRYPT_KEY (openssl rand -hex 32): "
        "the users' UID/GID are kept in encrypted auth_state"
    )


def names(variable, default):
    return {n.strip() for n in os.environ.get(variable, default).split(",") if n.strip()}


c.JupyterHub.authenticator_class = "generic-oauth"
c.GenericOAuthenticator.login_service = "OIDC"
c.GenericOAuthenticator.scope = os.environ.get(
    "CARTA_OIDC_SCOPES", "openid profile groups posix"
).split()
c.GenericOAuthenticator.username_claim = "preferred_username"
c.GenericOAuthenticator.basic_auth = True
c.GenericOAuthenticator.enable_pkce = True

# Access: the `groups` claim only, checked at every login (needs manage_groups).
c.Authenticator.allow_all = False
c.Authenticator.allow_existing_users = False
c.GenericOAuthenticator.manage_groups = True
c.GenericOAuthenticator.auth_state_groups_key = "oauth_user.groups"
c.GenericOAuthenticator.allowed_groups = names("CARTA_OIDC_ALLOWED_GROUPS", "carta-users")
c.GenericOAuthenticator.admin_groups = names("CARTA_OIDC_ADMIN_GROUPS", "carta-admins")

# Identity: the claims, in encrypted auth_state.
c.Authenticator.enable_auth_state = True
c.IdentityResolver.auth_state_key = "oauth_user"
c.IdentityResolver.uid_attribute = "uidNumber"
c.IdentityResolver.gid_attribute = "gidNumber"
c.IdentityResolver.groups_attribute = "gidNumbers"
c.IdentityResolver.name_attribute = "preferred_username"
c.IdentityResolver.home_attribute = "homeDirectory"
