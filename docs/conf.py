"""Sphinx configuration of the carta-hub documentation (MyST Markdown).

Two pages get generated content appended at every build, so they cannot go stale:
``configuration.md`` the settings of carta-hub's configurable classes, from their traitlets
help; ``deployment-complexity.md`` the figures of ``benchmarks/deploy_complexity.py``.
"""

import re
import sys
from importlib import import_module
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # document this tree's carta_hub
sys.path.insert(0, str(ROOT / "benchmarks"))

import deploy_complexity  # noqa: E402

project = "carta-hub"
extensions = ["myst_parser"]
myst_enable_extensions = ["deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build"]
html_theme = "alabaster"
smartquotes = False  # keep options like --port and quotes as written

# (module, class): documented with their own settings and those of carta_hub mixins that
# cannot be configured by their own name (ResourceFormMixin is no Configurable).
REFERENCE = [
    ("carta_hub.backend", "CartaBackend"),
    ("carta_hub.server.app", "CartaSingleUserApp"),
    ("carta_hub.hub.spawner", "CartaSpawnerMixin"),
    ("carta_hub.hub.slurm.spawner", "CARTASlurmSpawner"),
    ("carta_hub.hub.kube", "CARTAKubeSpawner"),
    ("carta_hub.hub.identity", "IdentityResolver"),
    ("carta_hub.hub.storage", "CartaStorage"),
    ("carta_hub.hub.ldapauth", "CartaLDAPAuthenticator"),
]
DOCUMENTED = {name for _, name in REFERENCE}
# Pages other issues write (the student guide, issue 7; performance, issue 8): in the index's
# toctrees as soon as they exist, left out until then.
OPTIONAL = {"student-guide", "performance"}


def own_traits(cls):
    """Config traits defined by ``cls`` or by its undocumented carta_hub mixins."""
    traits = {}
    for base in reversed(cls.__mro__):
        mine = base is cls or base.__name__ not in DOCUMENTED
        if mine and base.__module__.startswith("carta_hub") and hasattr(base, "class_own_traits"):
            traits.update(base.class_own_traits(config=True))
    return traits


def markdown_text(text):
    """``text`` as one Markdown paragraph: ``<`` and ``*`` escaped outside code spans."""
    parts = re.split(r"(`[^`]*`)", " ".join(text.split()))
    return "".join(p if p.startswith("`") else re.sub(r"([<*])", r"\\\1", p) for p in parts)


def without_missing(index, srcdir):
    """The index without toctree lines of OPTIONAL pages that do not exist yet."""
    missing = {name for name in OPTIONAL if not (srcdir / f"{name}.md").exists()}
    return "".join(line for line in index.splitlines(keepends=True) if line.strip() not in missing)


def class_reference(module, name):
    cls = getattr(import_module(module), name)
    summary = (cls.__doc__ or getattr(cls, "description", "")).strip().split("\n\n")[0]
    summary = re.sub(r":\w+:`", "`", summary)  # reST roles become code spans
    lines = [f"## {name}", "", f"`{module}.{name}`: {markdown_text(summary)}", ""]
    for trait_name, trait in sorted(own_traits(cls).items()):
        default = trait.default_value_repr().replace("`", "'")
        lines += [
            f"`c.{name}.{trait_name}` ({type(trait).__name__}, default `{default}`)",
            f": {markdown_text(trait.help) or 'Undocumented.'}",
            "",
        ]
    return "\n".join(lines)


def add_generated(app, docname, source):
    if docname == "index":
        source[0] = without_missing(source[0], Path(app.srcdir))
    elif docname == "configuration":
        source[0] += "\n" + "\n".join(class_reference(*entry) for entry in REFERENCE)
    elif docname == "deployment-complexity":
        figures = deploy_complexity.markdown(deploy_complexity.measure())
        source[0] += f"\n## Figures\n\n{figures}\n## Where the lines are\n\n"
        source[0] += deploy_complexity.detail_markdown()


def setup(app):
    app.connect("source-read", add_generated)
