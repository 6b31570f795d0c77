"""Dependency floor: carta-hub cannot be installed next to a jupyter-server-proxy carrying a
published advisory. Checked on pyproject.toml, on the metadata of the wheel pip builds from
this tree (read back with ``pip install --dry-run --report``), and with pip's own resolver
(offline, dry run, in this venv) against stand-in wheels of vulnerable and fixed versions.
"""

import json
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).parent.parent
PIP = [sys.executable, "-m", "pip"]
# Affected versions of jupyter-server-proxy (PyPA advisory database, PYSEC-2024-234/236)
ADVISORIES = {
    "GHSA-gcv9-6737-pjqw (SSRF, allowed_hosts bypass)": ["<3.2.1"],
    "GHSA-w3vc-fx9p-wp4v / CVE-2024-28179 (unauthenticated websocket proxying)":
        ["<3.2.3", ">=4.0.0,<4.1.1"],
    "GHSA-fvcq-4x64-hqxr / CVE-2024-35225 (reflected XSS in /proxy)": ["<3.2.4", ">=4.0.0,<4.2.0"],
}
RELEASES = ["1.6.0", "3.2.0", "3.2.2", "3.2.3", "3.2.4", "4.0.0", "4.1.0", "4.1.1", "4.1.2",
            "4.2.0", "4.3.0", "4.4.0", "4.5.0", "4.6.0"]


def vulnerable(version):
    return [name for name, ranges in ADVISORIES.items()
            if any(Version(version) in SpecifierSet(r) for r in ranges)]


def check_floor(requirements):
    """Every jupyter-server-proxy requirement admits no vulnerable release."""
    found = [r for r in map(Requirement, requirements) if r.name == "jupyter-server-proxy"]
    assert found, requirements
    for requirement in found:
        allowed = [v for v in RELEASES if requirement.specifier.contains(v, prereleases=True)]
        assert allowed, requirement  # some fixed release remains installable
        for version in allowed:
            assert not vulnerable(version), (str(requirement), version, vulnerable(version))
        for version in RELEASES:
            if vulnerable(version):
                assert not requirement.specifier.contains(version, prereleases=True)
                for pre in (f"{version}rc1", f"{version}.post1"):
                    if vulnerable(pre):
                        assert not requirement.specifier.contains(pre, prereleases=True)


def test_pyproject_floor():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += [r for r in extra if Requirement(r).name == "jupyter-server-proxy"]
    check_floor(requirements)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(PIP + ["wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)], check=True,
                   capture_output=True, timeout=300)
    (built,) = out.glob("carta_hub-*.whl")
    return built


def test_built_wheel_metadata_floor(wheel, tmp_path):
    report = tmp_path / "report.json"
    subprocess.run(PIP + ["install", "-q", "--dry-run", "--no-deps", "--ignore-installed",
                          "--report", str(report), str(wheel)], check=True, capture_output=True)
    (item,) = json.loads(report.read_text())["install"]
    assert item["metadata"]["name"] == "carta-hub"
    check_floor(item["metadata"]["requires_dist"])


def fake_wheel(folder, version):
    """An empty wheel claiming to be jupyter-server-proxy ``version`` (for the resolver only)."""
    info = f"jupyter_server_proxy-{version}.dist-info"
    files = {f"{info}/METADATA": "Metadata-Version: 2.1\nName: jupyter-server-proxy\n"
                                 f"Version: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: carta-hub-tests\n"
                              "Root-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{p},,\n" for p in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / f"jupyter_server_proxy-{version}-py3-none-any.whl", "w") as z:
        for path, text in files.items():
            z.writestr(path, text)


@pytest.mark.parametrize("version", ["3.2.2", "4.0.0", "4.1.0", "4.1.1", "4.1.2"])
def test_pip_refuses_a_vulnerable_jupyter_server_proxy(wheel, tmp_path, version):
    assert vulnerable(version)
    fake_wheel(tmp_path, version)
    r = subprocess.run(PIP + ["install", "--dry-run", "--no-index", "--find-links", str(tmp_path),
                              str(wheel), f"jupyter-server-proxy=={version}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "ResolutionImpossible" in r.stderr, r.stderr[-2000:]
    assert re.search(r"carta-hub \S+ depends on jupyter-server-proxy>=", r.stdout + r.stderr)


def test_pip_accepts_a_fixed_jupyter_server_proxy(wheel, tmp_path):
    """Control: the same resolution with a fixed release succeeds."""
    fake_wheel(tmp_path, "4.5.0")
    r = subprocess.run(PIP + ["install", "--dry-run", "--no-index", "--find-links", str(tmp_path),
                              str(wheel), "jupyter-server-proxy==4.5.0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Would install" in r.stdout and "jupyter-server-proxy-4.5.0" in r.stdout


def test_installed_jupyter_server_proxy_is_fixed():
    from importlib.metadata import version

    assert not vulnerable(version("jupyter-server-proxy"))
