"""One version: ``carta_hub.__version__`` is the release (the wheel takes it, pyproject's
[tool.hatch.version]); the image tags in helm-values/, the Apptainer recipe's base image and
every ``carta-hub/hub:TAG`` or ``carta-hub/singleuser:TAG`` written in the repository say the
same, and CHANGELOG.md has its entry."""

import re
from pathlib import Path

import pytest
import tomllib
import yaml

import carta_hub

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parent.parent
VERSION = carta_hub.__version__
IMAGE = re.compile(r"carta-hub/(?:hub|singleuser):([^\s\"']+)")
# where carta-hub's images are named (tests/ derive theirs from carta_hub.__version__)
NAMED_IN = ["helm-values", "images", "docs", "jupyterhub_config", "dev", "README.md", "Makefile"]


def text_files():
    for name in NAMED_IN:
        path = ROOT / name
        for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if p.is_file() and "_build" not in p.parts and p.suffix not in (".png", ".svg"):
                yield p


def image_tags(node):
    """Tags of the images in a YAML tree that are carta-hub's (name .../carta-hub/...)."""
    if isinstance(node, dict):
        if "carta-hub/" in str(node.get("name", "")) and "tag" in node:
            yield node["name"], str(node["tag"])
        for value in node.values():
            yield from image_tags(value)
    elif isinstance(node, list):
        for value in node:
            yield from image_tags(value)


def test_the_wheel_takes_the_package_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["hatch"]["version"]["path"] == "carta_hub/__init__.py"
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)


def test_helm_values_image_tags():
    tags = {}
    for path in sorted((ROOT / "helm-values").glob("*.yaml")):
        for name, tag in image_tags(yaml.safe_load(path.read_text())):
            tags[f"{path.name}: {name}"] = tag
    assert {name.rsplit("/", 1)[1] for name in tags} >= {"hub", "singleuser"}
    assert {name: tag for name, tag in tags.items() if tag != VERSION} == {}, VERSION


def test_apptainer_recipe_builds_on_this_release():
    (base,) = re.findall(
        r"^From:\s*(\S+)", (ROOT / "images" / "carta-hub.def").read_text(), re.MULTILINE
    )
    assert base.endswith(f"/carta-hub/singleuser:{VERSION}")


def test_every_image_reference_names_this_release():
    found = {
        f"{p.relative_to(ROOT)}: {m.group(0)}"
        for p in text_files()
        for m in IMAGE.finditer(p.read_text(errors="replace"))
    }
    assert found  # the build commands in images/ and docs/kubernetes.md at least
    assert sorted(f for f in found if not f.endswith(f":{VERSION}")) == [], VERSION


def test_changelog_has_this_release():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(VERSION)}\]", changelog, re.MULTILINE)
