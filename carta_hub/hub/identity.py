"""Who a user's CARTA server runs as: POSIX UID, primary GID and supplementary GIDs.

Shared by the Kubernetes and Slurm spawners. Sources are tried in the configured order and
the first that knows the user wins:

- ``auth_state``: attributes the authenticator stored, e.g. LDAP ``uidNumber``/``gidNumber``
  (ldapauthenticator 2.x puts them in ``auth_state["user_attributes"]`` when
  ``c.LDAPAuthenticator.auth_state_attributes`` lists them) or OIDC claims
  (oauthenticator: ``auth_state["oauth_user"]``). Needs ``c.Authenticator.enable_auth_state``.
- ``mapping``: a YAML file ``{username: {uid: 1234, gid: 1234, groups: [..], home: .., name: ..}}``
  (mountable from a ConfigMap).
- ``nss``: the Hub's own user database (``pwd``/``grp``, e.g. sssd).

UID 0, a UID or primary GID outside the allowed ranges, a login name or home that could
not safely reach a shell command, a job script or a passwd file, or a user no source knows
raises :class:`IdentityError` before anything is created. Supplementary GIDs outside
``allowed_gids`` (and GID 0) are dropped with a warning: they only ever add access.
"""

import grp
import os
import posixpath
import pwd
import re
from dataclasses import dataclass, field

import yaml
from traitlets import Enum, Integer, List, Tuple, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from carta_hub import usercontext
from carta_hub.usercontext import UserContext

# A login (or group) name that is safe in passwd/group files, as a path component, after
# `sudo -u` in batchspawner's shell commands and on #SBATCH lines. Always fullmatch: with
# match() and "$", "alice\n" would pass.
_POSIX_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")
# A home: absolute, of such components only (it goes on #SBATCH --chdir, into Apptainer
# binds and passwd lines); also checked to be normalised (no '.', '..' or '//').
_HOME = re.compile(r"/|(?:/[A-Za-z0-9_.@+-]+)+")


SOURCES = ("auth_state", "mapping", "nss")


class IdentityError(Exception):
    """No acceptable identity for a user; the message is shown on the spawn page."""


@dataclass(frozen=True)
class Identity:
    """A resolved POSIX identity."""

    name: str
    uid: int
    gid: int
    groups: tuple = ()
    home: str = ""
    source: str = ""
    group_names: dict = field(default_factory=dict, compare=False)

    def context(self, username: str) -> UserContext:
        """The template fields of this identity for JupyterHub user ``username``."""
        return UserContext(
            username=username, login=self.name, uid=self.uid, gid=self.gid, home=self.home
        )

    def passwd_lines(self) -> str:
        """/etc/passwd content naming this user (plus root) for NSS wrappers."""
        return (
            "root:x:0:0:root:/root:/bin/sh\n"
            f"{self.name}:x:{self.uid}:{self.gid}:{self.name}:{self.home or '/'}:/bin/sh\n"
        )

    def group_lines(self) -> str:
        """/etc/group content with the primary and supplementary groups."""
        lines = ["root:x:0:"]
        for gid in (self.gid, *self.groups):
            name = self.group_names.get(gid) or f"g{gid}"
            members = "" if gid == self.gid else self.name
            lines.append(f"{name}:x:{gid}:{members}")
        return "\n".join(lines) + "\n"


class IdentityResolver(LoggingConfigurable):
    """Resolve a JupyterHub user to the POSIX identity their server runs as."""

    sources = List(
        Enum(SOURCES),
        help="""Identity sources, tried in this order; the first that knows the user wins.
        Remove a source to never use it (e.g. ['auth_state'] to trust only the
        authenticator). Default: all three; on Kubernetes auth_state and mapping (the hub
        pod's own user database is not the site's).""",
    ).tag(config=True)

    @default("sources")
    def _sources_default(self):
        return list(getattr(self.parent, "identity_sources", SOURCES))

    auth_state_key = Unicode(
        "",
        help="""Key of the dict in auth_state that holds the attributes:
        'user_attributes' for ldapauthenticator, 'oauth_user' for oauthenticator.
        Empty: try both, then the top level of auth_state.""",
    ).tag(config=True)

    uid_attribute = Unicode("uidNumber", help="Attribute or claim holding the numeric UID.").tag(
        config=True
    )

    gid_attribute = Unicode(
        "gidNumber", help="Attribute or claim holding the numeric primary GID."
    ).tag(config=True)

    groups_attribute = Unicode(
        "",
        help="""Attribute or claim holding supplementary GIDs (a list of numbers, or a
        comma-separated string). Empty: none from auth_state.""",
    ).tag(config=True)

    name_attribute = Unicode(
        "uid",
        help="""Attribute or claim holding the POSIX login name (used in the pod's passwd
        entry and in `{login}` path templates). Missing: the JupyterHub username.""",
    ).tag(config=True)

    home_attribute = Unicode(
        "homeDirectory", help="Attribute or claim holding the home directory."
    ).tag(config=True)

    mapping_file = Unicode(
        "",
        help="""YAML file mapping JupyterHub usernames to identities:
        `alice: {uid: 1234, gid: 1234, groups: [2000], home: /ceph/home/alice, name: alice}`
        (`groups`, `home`, `name` optional). Read at every spawn, so a mounted ConfigMap
        can change without a Hub restart. Empty: the source is skipped.""",
    ).tag(config=True)

    home_template = Unicode(
        "/home/{login}",
        help="""HOME when the source gives none. A template of the user fields, all but
        {home}: {login}, {username} (escaped), {uid}, {gid}.""",
    ).tag(config=True, user_template=True)

    @validate("home_template")
    def _known_fields(self, proposal):
        return usercontext.check(proposal.value, "c.IdentityResolver.home_template", ("home",))

    allowed_uids = Tuple(
        Integer(),
        Integer(),
        default_value=(1000, 2**31 - 1),
        help="Inclusive [min, max] range of acceptable UIDs. 0 is always refused.",
    ).tag(config=True)

    allowed_gids = Tuple(
        Integer(),
        Integer(),
        default_value=(1000, 2**31 - 1),
        help="""Inclusive [min, max] range of acceptable primary GIDs; supplementary GIDs
        outside it are dropped. 0 is always refused.""",
    ).tag(config=True)

    @validate("allowed_uids", "allowed_gids")
    def _check_range(self, proposal):
        low, high = proposal["value"]
        if not 0 <= low <= high:
            raise ValueError(f"need 0 <= min <= max, got {proposal['value']}")
        return proposal["value"]

    async def resolve(self, user) -> Identity:
        """The :class:`Identity` of a JupyterHub ``user``, or :class:`IdentityError`."""
        reasons = []
        for source in self.sources:
            found, why = await getattr(self, f"_from_{source}")(user)
            if found is not None:
                return self._checked(user.name, found)
            reasons.append(f"{source}: {why}")
        raise IdentityError(
            f"No POSIX identity for user {user.name!r} ({'; '.join(reasons) or 'no sources'}). "
            "Ask the administrators to add your UID/GID "
            "(c.IdentityResolver.sources / mapping_file / LDAP attributes)."
        )

    # --- sources: each returns (Identity or None, reason when None) ---

    async def _from_auth_state(self, user):
        state = await user.get_auth_state()
        if not state:
            return None, "no auth_state (is c.Authenticator.enable_auth_state set?)"
        attrs = self._attributes(state)
        if attrs.get(self.uid_attribute) in (None, []):
            return None, f"no {self.uid_attribute!r} attribute"
        if attrs.get(self.gid_attribute) in (None, []):
            return None, f"no {self.gid_attribute!r} attribute"
        entry = {
            "uid": _scalar(attrs[self.uid_attribute]),
            "gid": _scalar(attrs[self.gid_attribute]),
            "groups": _gid_list(attrs.get(self.groups_attribute)) if self.groups_attribute else [],
            "name": _scalar(attrs.get(self.name_attribute)),
            "home": _scalar(attrs.get(self.home_attribute)),
        }
        return self._build(user.name, entry, "auth_state"), ""

    def _attributes(self, state):
        keys = [self.auth_state_key] if self.auth_state_key else ["user_attributes", "oauth_user"]
        for key in keys:
            if isinstance(state.get(key), dict):
                return state[key]
        return {} if self.auth_state_key else state

    async def _from_mapping(self, user):
        if not self.mapping_file:
            return None, "no mapping_file configured"
        with open(self.mapping_file) as f:
            mapping = yaml.safe_load(f) or {}
        entry = mapping.get(user.name)
        if not isinstance(entry, dict):
            return None, f"{user.name!r} not in {self.mapping_file}"
        if "uid" not in entry or "gid" not in entry:
            return None, f"entry for {user.name!r} lacks uid or gid"
        return self._build(user.name, entry, "mapping"), ""

    async def _from_nss(self, user):
        try:
            pw = pwd.getpwnam(user.name)
        except KeyError:
            return None, f"no passwd entry for {user.name!r}"
        groups = [g for g in os.getgrouplist(pw.pw_name, pw.pw_gid) if g != pw.pw_gid]
        entry = {
            "uid": pw.pw_uid,
            "gid": pw.pw_gid,
            "groups": groups,
            "name": pw.pw_name,
            "home": pw.pw_dir,
        }
        return self._build(user.name, entry, "nss"), ""

    # --- helpers ---

    def _build(self, username, entry, source):
        try:
            uid, gid = int(entry["uid"]), int(entry["gid"])
            groups = tuple(_gid_list(entry.get("groups")))
        except (TypeError, ValueError) as e:
            raise IdentityError(f"Malformed identity for {username!r} from {source}: {e}") from e
        name = str(entry.get("name") or username)
        home = entry.get("home") or self._home(UserContext(username, name, uid, gid))
        return Identity(
            name=name,
            uid=uid,
            gid=gid,
            groups=groups,
            home=str(home),
            source=source,
            group_names=_group_names((gid, *groups)),
        )

    def _home(self, user):
        fields = {k: v for k, v in user.fields().items() if k != "home"}
        return usercontext.fill(self.home_template, fields, "c.IdentityResolver.home_template")

    def _checked(self, username, ident):
        _check_names(username, ident)
        if ident.uid == 0 or not _within(ident.uid, self.allowed_uids):
            raise IdentityError(
                f"User {username!r} maps to UID {ident.uid} ({ident.source}), outside the "
                f"allowed range {list(self.allowed_uids)}: refusing to start a server."
            )
        if ident.gid == 0 or not _within(ident.gid, self.allowed_gids):
            raise IdentityError(
                f"User {username!r} maps to primary GID {ident.gid} ({ident.source}), outside "
                f"the allowed range {list(self.allowed_gids)}: refusing to start a server."
            )
        kept = tuple(g for g in ident.groups if g != 0 and _within(g, self.allowed_gids))
        if kept != ident.groups:
            dropped = sorted(set(ident.groups) - set(kept))
            self.log.warning("Dropping supplementary GIDs %s of %s: not allowed", dropped, username)
        return Identity(
            ident.name, ident.uid, ident.gid, kept, ident.home, ident.source, ident.group_names
        )


def _check_names(username, ident):
    """The login name and home are safe in shell commands, job scripts and passwd files."""
    if not _POSIX_NAME.fullmatch(ident.name):
        raise IdentityError(
            f"User {username!r} maps to the login name {ident.name!r} ({ident.source}), which "
            "is not a valid login name (letters, digits, _ . @ -, not starting with . @ or -, "
            "at most 64 characters): refusing to start a server. Ask the administrators to "
            "fix it at its source (c.IdentityResolver.name_attribute, the mapping file's name)."
        )
    if not _HOME.fullmatch(ident.home) or posixpath.normpath(ident.home) != ident.home:
        raise IdentityError(
            f"User {username!r} maps to the home {ident.home!r} ({ident.source}), which is not "
            "a plain absolute path (letters, digits and _ . @ + - between single slashes, "
            "without '.' or '..' parts): refusing to start a server. Ask the administrators "
            "to fix it at its source (c.IdentityResolver.home_attribute, home_template, the "
            "mapping file's home)."
        )


def valid_login(name: str) -> bool:
    """``name`` is a login name the identity rules accept (safe in commands and tokens)."""
    return bool(_POSIX_NAME.fullmatch(name))


def _within(value, bounds):
    return bounds[0] <= value <= bounds[1]


def _scalar(value):
    """First element of an LDAP multi-valued attribute, or the value itself."""
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def _gid_list(value):
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        value = [value]
    return [int(v) for v in value]


def _group_names(gids):
    names = {}
    for gid in gids:
        try:
            name = grp.getgrgid(gid).gr_name
        except KeyError:
            continue
        if _POSIX_NAME.fullmatch(name):  # else group_lines() writes g<gid>
            names[gid] = name
    return names
