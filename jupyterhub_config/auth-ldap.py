# LDAP login for a carta-hub Hub (ldapauthenticator 2.x), e.g. on a Slurm login node.
# Load it from the Hub's own config: `load_subconfig("auth-ldap.py")` (paths are relative to
# the including file), then choose the spawner there.
#
# What it does:
# - a user logs in with their LDAP uid and password (a bind as uid=LOGIN,<people>, over
#   StartTLS with the server certificate checked);
# - only members of CARTA_LDAP_ALLOWED_GROUPS may log in; members of CARTA_LDAP_ADMIN_GROUPS
#   are Hub admins (re-evaluated at every login);
# - uidNumber, gidNumber, the gidNumbers of the user's groups, uid and homeDirectory are
#   stored in the user's auth_state, encrypted with JUPYTERHUB_CRYPT_KEY, where the spawner's
#   IdentityResolver reads the POSIX identity CARTA runs as.
#
# Site values (environment of the Hub, e.g. in its systemd unit or a Kubernetes secret):
#   JUPYTERHUB_CRYPT_KEY       required: `openssl rand -hex 32`, the same across Hub restarts
#   CARTA_LDAP_SERVER          LDAP server host name (default ldap.example.org)
#   CARTA_LDAP_PORT            default 389
#   CARTA_LDAP_CA_FILE         CA bundle for the server certificate (default: system store)
#   CARTA_LDAP_BASE_DN         default dc=example,dc=org; people are under ou=people and
#                              groups under ou=groups of it
#   CARTA_LDAP_ALLOWED_GROUPS  group DNs separated by ";" (default cn=carta-users,ou=groups,BASE)
#   CARTA_LDAP_ADMIN_GROUPS    group DNs separated by ";" (default cn=carta-admins,ou=groups,BASE)
# Groups may be posixGroups (memberUid) or groupOfNames (member).
import os
import ssl

if not os.environ.get("JUPYTERHUB_CRYPT_KEY"):
    raise SystemExit(
        "auth-ldap.py: set JUPYTERHUB_CRYPT_KEY (openssl rand -hex 32): "
        "the users' UID/GID are kept in encrypted auth_state"
    )


def dn_list(name, default):
    return [dn.strip() for dn in os.environ.get(name, default).split(";") if dn.strip()]


base_dn = os.environ.get("CARTA_LDAP_BASE_DN", "dc=example,dc=org")

c.JupyterHub.authenticator_class = "carta_hub.hub.ldapauth.CartaLDAPAuthenticator"
c.LDAPAuthenticator.server_address = os.environ.get("CARTA_LDAP_SERVER", "ldap.example.org")
c.LDAPAuthenticator.server_port = int(os.environ.get("CARTA_LDAP_PORT", "389"))
c.LDAPAuthenticator.tls_strategy = "before_bind"  # StartTLS; never send passwords in clear
c.LDAPAuthenticator.tls_kwargs = {
    "validate": ssl.CERT_REQUIRED,  # ldap3 checks nothing by default
    "ca_certs_file": os.environ.get("CARTA_LDAP_CA_FILE"),
}
c.LDAPAuthenticator.bind_dn_template = [f"uid={{username}},ou=people,{base_dn}"]

# Access: LDAP groups only, checked at every login (leaving the group locks a user out).
# admin_groups DNs must lie under group_search_base.
c.Authenticator.allow_all = False
c.Authenticator.allow_existing_users = False
c.LDAPAuthenticator.allowed_groups = dn_list(
    "CARTA_LDAP_ALLOWED_GROUPS", f"cn=carta-users,ou=groups,{base_dn}"
)
c.CartaLDAPAuthenticator.admin_groups = dn_list(
    "CARTA_LDAP_ADMIN_GROUPS", f"cn=carta-admins,ou=groups,{base_dn}"
)
c.CartaLDAPAuthenticator.group_search_base = f"ou=groups,{base_dn}"

# Identity: what the spawners need, in encrypted auth_state.
c.Authenticator.enable_auth_state = True
c.LDAPAuthenticator.auth_state_attributes = ["uid", "uidNumber", "gidNumber", "homeDirectory"]
c.IdentityResolver.auth_state_key = "user_attributes"
c.IdentityResolver.uid_attribute = "uidNumber"
c.IdentityResolver.gid_attribute = "gidNumber"
c.IdentityResolver.groups_attribute = "gidNumbers"  # added by CartaLDAPAuthenticator
c.IdentityResolver.name_attribute = "uid"
c.IdentityResolver.home_attribute = "homeDirectory"
