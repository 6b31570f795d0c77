"""The user fields of carta-hub's templates: one context per spawn, one list of fields.

Every setting that names a path or a job after its user (``c.CartaStorage.mounts``,
``c.CartaBackend.top_level_folder``/``starting_folder``, ``c.CARTASlurmSpawner.job_name``/
``log_path``/``folder_roots``, ``c.IdentityResolver.home_template``) is filled from one
:class:`UserContext` with :func:`fill`, on the Hub and in the user's server alike. The fields
(:data:`FIELDS`, listed in docs/identity-storage.md) are the same in every template; only
``{username}`` is escaped, the others are checked where they are resolved.
"""

import os
import pwd
import re
import string
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from traitlets import TraitError

#: Every field a template may use, and what it holds.
FIELDS = {
    "username": "the JupyterHub username, escaped as one path component: characters other "
    "than letters, digits and _ . @ + - become %XX, and . or .. are escaped",
    "login": "the POSIX login name the server runs as (as it is: the identity checks it)",
    "uid": "the numeric UID",
    "gid": "the numeric primary GID",
    "home": "the home folder, an absolute path (as it is: the identity checks it)",
}

_UNSAFE = re.compile(r"[^A-Za-z0-9_.@+-]")


class TemplateError(TraitError, ValueError):
    """A template uses a field that does not exist, or is no template: bad configuration
    (a traitlets application exits with the message)."""


def escape_component(name: str) -> str:
    """``name`` as one path component: unsafe characters become ``%XX``, never ``.``/``..``."""
    escaped = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), name)
    if escaped in ("", ".", ".."):
        escaped = escaped.replace(".", "%2E") or "%00"
    return escaped


@dataclass(frozen=True)
class UserContext:
    """Who one server is for, resolved once per spawn; ``username`` is the raw JupyterHub
    name (templates get it escaped)."""

    username: str
    login: str
    uid: int
    gid: int
    home: str = ""

    def fields(self) -> dict[str, str]:
        """The template fields (:data:`FIELDS`) of this user."""
        return {
            "username": escape_component(self.username),
            "login": self.login,
            "uid": str(self.uid),
            "gid": str(self.gid),
            "home": self.home,
        }

    def as_dict(self) -> dict:
        """As JSON-able data (:meth:`from_dict` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "UserContext":
        return cls(
            username=str(data["username"]),
            login=str(data["login"]),
            uid=int(data["uid"]),
            gid=int(data["gid"]),
            home=str(data.get("home", "")),
        )

    @classmethod
    def of_this_process(cls, environ: Mapping[str, str] = os.environ) -> "UserContext":
        """The context of a server started without one (by hand, or by the local
        spawner): its own user, named ``$JUPYTERHUB_USER`` when set, with its own home."""
        pw = pwd.getpwuid(os.getuid())
        return cls(
            username=environ.get("JUPYTERHUB_USER") or pw.pw_name,
            login=pw.pw_name,
            uid=pw.pw_uid,
            gid=pw.pw_gid,
            home=os.path.expanduser("~"),
        )


#: A context only to check templates with (at Hub start, in ``carta-hub check``).
SAMPLE = UserContext("sample", "sample", 1000, 1000, "/home/sample")


def fill(template: str, fields: Mapping[str, str], setting: str) -> str:
    """``template`` with its ``{field}`` replaced from ``fields``; :class:`TemplateError`
    naming ``setting`` (e.g. ``c.CartaBackend.top_level_folder``) and the valid fields."""
    for name in used_fields(template, setting):
        if name not in fields:
            raise TemplateError(
                f"{setting} = {template!r}: {{{name}}} is an unknown template field. The user "
                f"fields are {', '.join('{' + f + '}' for f in fields)} (docs/identity-storage.md,"
                " Template fields); write {{ or }} for a literal brace."
            )
    return template.format_map(fields)


def used_fields(template: str, setting: str) -> list[str]:
    """The fields ``template`` names; :class:`TemplateError` for anything but ``{name}``."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise TemplateError(
            f"{setting} = {template!r} is no template: {e} (write {{{{ and }}}} for literal braces)"
        ) from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise TemplateError(
                f"{setting} = {template!r}: write a field as {{name}}, "
                f"without index, attribute, format or conversion"
            )
        names.append(name)
    return names


def check(template: str, setting: str, without: tuple[str, ...] = ()) -> str:
    """``template`` if it uses only the user fields (less ``without``), else TemplateError."""
    fields = {k: v for k, v in SAMPLE.fields().items() if k not in without}
    fill(template, fields, setting)
    return template
