"""``GET <server>/carta-hub/link?path=P``: the CARTA URL that opens ``P`` (a path relative to
the Jupyter root, as JupyterLab's file browser names it), for the "Open in CARTA" JupyterLab
extension and for scripts.

The one place that maps the Jupyter root onto CARTA's ``top_level_folder``. The answer is
``{"url": ..., "kind": "image" | "folder"}``: an image (a file, or a CASA or MIRIAD image
folder) opens with ``?folder=D&file=F``, another folder with ``?folder=D`` (CARTA's File
Browser there). carta-frontend reads these parameters in ``AppStore.loadDefaultFiles``
(src/stores/AppStore/AppStore.ts; the same in 6.0.0's build): ``file``/``files`` are loaded
from ``folder`` (OPEN_FILE), a ``folder`` alone opens the File Browser in it. Both are
relative to the backend's top-level folder (carta_backend joins them onto it:
src/Util/Casacore.cc, GetResolvedFilename). The URL never carries a ``token=``: the server
adds the backend's token itself, and JupyterHub reads ``?token=`` as its own.
"""

import os
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from carta_hub.server.routes import Route


class LinkError(Exception):
    """A path CARTA cannot open; ``str()`` is the message for the student."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Target:
    """What CARTA opens: ``folder`` relative to the top-level folder, ``file`` in it or ""."""

    folder: str
    file: str

    @property
    def kind(self) -> str:
        return "image" if self.file else "folder"

    def query(self) -> str:
        params = {"folder": self.folder, **({"file": self.file} if self.file else {})}
        return urlencode(params, quote_via=quote, safe="/")


def image_folder(path: str) -> bool:
    """A CASA or MIRIAD image folder, as casacore's ``ImageOpener::imageType`` sees it (which
    carta_backend asks: src/Util/Casacore.h, CasacoreImageType): a table whose table.info
    says ``Type = Image``, or a folder with MIRIAD's ``header`` and ``image`` items."""
    try:
        with open(os.path.join(path, "table.info"), encoding="latin-1") as f:
            if os.path.isfile(os.path.join(path, "table.dat")) and "Type = Image" in f.read(200):
                return True
    except OSError:
        pass
    return all(os.path.isfile(os.path.join(path, item)) for item in ("header", "image"))


def inside(path: str, top: str) -> bool:
    return os.path.commonpath([path, top]) == top


def target(root: str, top: str, path: str) -> Target:
    """What CARTA opens for ``path`` (relative to the Jupyter root ``root``) with the
    top-level folder ``top``; :class:`LinkError` when it cannot."""
    shown = "/" + path.strip("/")
    full = os.path.normpath(os.path.join(root, path.lstrip("/")))
    if not inside(full, os.path.normpath(root)) or not os.path.exists(full):
        raise LinkError(404, f"{shown} does not exist.")
    is_image_file = not os.path.isdir(full) or image_folder(full)
    # folders compared resolved, as carta_backend does (src/Util/Casacore.cc, IsSubdirectory
    # on resolved names); a file keeps its own name
    folder = os.path.realpath(os.path.dirname(full) if is_image_file else full)
    real_top = os.path.realpath(top)
    if not inside(folder, real_top):
        raise LinkError(
            403,
            f"{shown} is outside CARTA's top-level folder ({top}): CARTA cannot open it. "
            "Copy or move it into that folder, or ask your site's support for access.",
        )
    relative = os.path.relpath(folder, real_top)  # "." for the top: the frontend skips ""
    return Target(folder=relative, file=os.path.basename(full) if is_image_file else "")


class Link(Route):
    path = "link"

    async def get(self) -> None:
        path = self.get_query_argument("path", "")
        top = self.backend.backend.setting("top_level_folder") or "/"
        try:
            found = target(self.root_dir(), top, path)
        except LinkError as e:
            self.write_json({"message": str(e)}, e.status)
            return
        self.write_json({"url": f"{self.carta_url()}?{found.query()}", "kind": found.kind})
