"""ldapauthenticator 2.x plus what a CARTA server needs from LDAP: the user's POSIX groups
and admin rights from a group.

ldapauthenticator already stores ``auth_state_attributes`` (e.g. ``uidNumber``,
``gidNumber``) in ``auth_state["user_attributes"]``. :class:`CartaLDAPAuthenticator` adds,
from one search bound as the user:

- ``gidNumbers``: the gidNumber of every group the user belongs to (supplementary GIDs for
  :class:`carta_hub.hub.identity.IdentityResolver`, ``groups_attribute = "gidNumbers"``);
- ``memberOf``: the DNs of those groups, which make the user a Hub admin when one is in
  ``admin_groups``.

Membership is matched with ldapauthenticator's ``group_search_filter`` (``memberUid`` of a
posixGroup, ``member``/``uniqueMember`` of a groupOfNames).
"""

import ldap3
from ldap3.utils.conv import escape_filter_chars
from ldapauthenticator import LDAPAuthenticator
from traitlets import List, Unicode

GIDS = "gidNumbers"
MEMBER_OF = "memberOf"


class CartaLDAPAuthenticator(LDAPAuthenticator):
    group_search_base = Unicode(
        "",
        help="""Subtree holding the groups (e.g. ou=groups,dc=example,dc=org) searched for the
        user's gidNumbers and memberOf. Empty: no group lookup (no supplementary GIDs, no
        admin_groups).""",
    ).tag(config=True)

    admin_groups = List(
        Unicode(),
        help="""Group DNs whose members are Hub admins (authoritative at every login, like
        oauthenticator's admin_groups; admin_users are admins too). They must lie under
        group_search_base.""",
    ).tag(config=True)

    def get_user_attributes(self, conn: ldap3.Connection, userdn: str) -> dict:
        attributes = super().get_user_attributes(conn, userdn)
        if self.group_search_base:
            dns, gids = self._user_groups(conn, userdn)
            attributes.update({MEMBER_OF: dns, GIDS: gids})
        return attributes

    def _user_groups(self, conn, userdn):
        """(group DNs, gidNumbers) of the groups ``userdn`` is a member of."""
        conn.search(userdn, "(objectClass=*)", ldap3.BASE, attributes=["uid"])
        uids = conn.entries[0].entry_attributes_as_dict.get("uid") if conn.entries else None
        login = uids[0] if uids else ""
        group_filter = self.group_search_filter.format(
            userdn=escape_filter_chars(userdn), uid=escape_filter_chars(login)
        )
        conn.search(self.group_search_base, group_filter, ldap3.SUBTREE, attributes=["gidNumber"])
        dns, gids = [], []
        for entry in conn.entries:
            dns.append(entry.entry_dn)
            gids += entry.entry_attributes_as_dict.get("gidNumber", [])
        return dns, sorted(int(g) for g in gids)

    async def authenticate(self, handler, data: dict) -> dict | None:
        model = await super().authenticate(handler, data)
        if model and self.admin_groups:
            attributes = model["auth_state"]["user_attributes"]
            member_of = {dn.lower() for dn in attributes.get(MEMBER_OF, [])}
            in_group = any(dn.lower() in member_of for dn in self.admin_groups)
            model["admin"] = in_group or bool(self.is_admin(handler, model))
        return model
