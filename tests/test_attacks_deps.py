"""Dependency floors: carta-hub cannot be installed next to a jupyterhub, jupyter-server,
jupyterlab (the ``lab`` extra), tornado or jupyter-server-proxy release carrying a published
advisory that a release for the same Python fixes. Checked on pyproject.toml, on the metadata
of the wheel pip builds from this tree (read back with ``pip install --dry-run --report``),
and with pip's own resolver (offline, dry run, in this venv) against stand-in wheels of
vulnerable and fixed versions.
"""

import json
import re
import subprocess
import sys
import zipfile
from importlib.metadata import version as installed_version
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

pytestmark = pytest.mark.fast

ROOT = Path(__file__).parent.parent
PIP = [sys.executable, "-m", "pip"]
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]  # requires-python >= 3.10
# Affected versions per advisory (GitHub/PyPA advisory databases, the projects' changelogs);
# releases: a sample of each line, with the Pythons a release installs on where limited.
PACKAGES = {
    "jupyter-server-proxy": {
        "advisories": {
            "GHSA-gcv9-6737-pjqw (SSRF, allowed_hosts bypass)": ["<3.2.1"],
            "GHSA-w3vc-fx9p-wp4v / CVE-2024-28179 (unauthenticated websocket proxying)": [
                "<3.2.3",
                ">=4.0.0,<4.1.1",
            ],
            "GHSA-fvcq-4x64-hqxr / CVE-2024-35225 (reflected XSS in /proxy)": [
                "<3.2.4",
                ">=4.0.0,<4.2.0",
            ],
        },
        "releases": [
            "1.6.0",
            "3.2.0",
            "3.2.2",
            "3.2.3",
            "3.2.4",
            "4.0.0",
            "4.1.0",
            "4.1.1",
            "4.1.2",
            "4.2.0",
            "4.3.0",
            "4.4.0",
            "4.5.0",
            "4.6.0",
        ],
    },
    "jupyterhub": {
        "advisories": {
            "GHSA-7r3h-4ph8-w38g / CVE-2024-28233 (XSS via cookie tossing)": ["<4.1.0"],
            "GHSA-9x4q-3gxw-849f / CVE-2024-41942 (admin:users escalation)": [
                "<4.1.6",
                ">=5.0.0,<5.1.0",
            ],
            "GHSA-3vff-hjqv-m7h8 / CVE-2026-33709 (open redirect)": ["<5.4.4"],
            "GHSA-m68r-v472-jgq9 / CVE-2026-40864 (CSRF)": ["<5.4.5"],
            "GHSA-p43p-whwx-q52h / CVE-2026-54338 (unauthenticated DoS)": ["<5.5.0"],
            "GHSA-c4gm-pwx9-9w8j (user-initiated sharing)": ["<5.5.1"],
            "GHSA-69wv-m5fw-2fhp (filtered admin roles)": ["<5.5.1"],
        },
        "releases": [
            "4.1.0",
            "4.1.6",
            "5.0.0",
            "5.1.0",
            "5.2.1",
            "5.4.3",
            "5.4.4",
            "5.4.5",
            "5.4.6",
            "5.5.0",
            "5.5.1",
            "5.5.4",
            "6.0.0",
            "6.1.1",
        ],
    },
    "jupyter-server": {
        "advisories": {
            "GHSA-24qx-w28j-9m6p / CVE-2026-40110 (allow_origin_pat prefix match)": ["<2.18.0"],
            "GHSA-fcw5-x6j4-ccmp / CVE-2026-44727 (stored XSS in nbconvert)": ["<2.20.0"],
            "GHSA-c3mw-737p-c7g2 / CVE-2026-86049 (token-bearing Referer logged)": ["<2.21.0"],
        },
        "releases": ["2.0.0", "2.14.1", "2.17.0", "2.18.0", "2.19.0", "2.20.0", "2.21.0", "2.21.1"],
    },
    "jupyterlab": {
        "advisories": {
            "GHSA-rch3-82jr-f9w9 / CVE-2026-40171 (token theft via CommandLinker XSS)": ["<4.5.7"],
            "GHSA-37w4-hwhx-4rc4 / CVE-2026-42266 (extension allow-list)": [">=4.0.0,<4.5.7"],
            **{
                f"{ghsa} ({what})": ["<4.5.10", ">=4.6.0,<4.6.2"]
                for ghsa, what in [
                    ("GHSA-gx64-gj6p-pc4c", "XSS in the image viewer"),
                    ("GHSA-pppj-hq3g-57pj", "XSS via overrides.json"),
                    ("GHSA-h5v5-8746-g7mm", "plugin lock bypass"),
                    ("GHSA-89vp-jrxv-24w8", "extension block-list bypass"),
                    ("GHSA-whvh-wf3x-g77j", "extension allow-list not awaited"),
                ]
            },
        },
        "releases": [
            "4.0.0",
            "4.2.5",
            "4.4.8",
            "4.5.6",
            "4.5.7",
            "4.5.9",
            "4.5.10",
            "4.6.0",
            "4.6.1",
            "4.6.2",
            "4.6.6",
        ],
    },
    "tornado": {
        "advisories": {
            "GHSA-8w49-h785-mj3c / CVE-2024-52804 (cookie parsing DoS)": ["<6.4.2"],
            "GHSA-7cx3-6m66-7c5m / CVE-2025-47287 (multipart log DoS)": ["<6.5.0"],
            "GHSA-c98p-7wgm-6p64 / CVE-2025-67725 (repeated headers DoS)": ["<6.5.3"],
            "GHSA-qjxf-f2mg-c6mc / CVE-2026-31958 (multipart parts DoS)": ["<6.5.5"],
            "GHSA-cx3h-4qpv-8hc9 / CVE-2026-49854 (websocket mask out-of-bounds)": ["<6.5.6"],
            "GHSA-mpf4-983q-p7j4 / CVE-2026-82397 (urlencoded arguments DoS)": ["<6.5.8"],
            "GHSA-c2m8-h5v5-343r (StaticFileHandler follows symlinks)": ["<6.5.9"],
            "GHSA-5cjw-f85j-cv6r (open redirect, triple slash)": ["<6.6.1"],
        },
        "releases": [
            "6.3.3",
            "6.4.1",
            "6.4.2",
            "6.5.0",
            "6.5.4",
            "6.5.5",
            "6.5.7",
            "6.5.8",
            "6.5.9",
            "6.5.10",
            "6.6.0",
            "6.6.1",
        ],
        "requires_python": {"6.6.0": ">=3.11", "6.6.1": ">=3.11"},
    },
}
# Stand-in releases pip must refuse next to carta-hub (in this venv's Python), and accept
VULNERABLE = [("jupyter-server-proxy", v) for v in ("3.2.2", "4.0.0", "4.1.0", "4.1.1", "4.1.2")]
VULNERABLE += [
    ("jupyterhub", "5.4.3"),
    ("jupyterhub", "5.5.0"),
    ("jupyter-server", "2.20.0"),
    ("jupyterlab", "4.6.1"),
    ("jupyterlab", "4.5.9"),
    ("tornado", "6.5.10"),
]
FIXED = [
    ("jupyter-server-proxy", "4.6.0"),
    ("jupyterhub", "5.5.1"),
    ("jupyter-server", "2.21.0"),
    ("jupyterlab", "4.6.2"),
]
EXTRAS = {"jupyterlab": "[lab]"}


def vulnerable(name, version):
    return [
        advisory
        for advisory, ranges in PACKAGES[name]["advisories"].items()
        if any(Version(version) in SpecifierSet(r) for r in ranges)
    ]


def installable(name, version, python):
    return Version(python) in SpecifierSet(
        PACKAGES[name].get("requires_python", {}).get(version, "")
    )


def fixable(name, python):
    """The advisories that some release installable on ``python`` is free of."""
    releases = [v for v in PACKAGES[name]["releases"] if installable(name, v, python)]
    return {
        a
        for a in PACKAGES[name]["advisories"]
        if any(a not in vulnerable(name, v) for v in releases)
    }


def check_floor(requirements):
    """For each package and each supported Python, every requirement that applies admits
    some release, and none affected by an advisory a release for that Python fixes."""
    requirements = [Requirement(r) for r in requirements]
    for name in PACKAGES:
        for python in PYTHONS:
            found = [
                r
                for r in requirements
                if r.name == name
                and (
                    r.marker is None
                    or r.marker.evaluate({"python_version": python, "extra": "lab"})
                )
            ]
            assert found, (name, python, requirements)
            for requirement in found:
                check_requirement(name, python, requirement)


def check_requirement(name, python, requirement):
    fixes = fixable(name, python)
    allowed = [
        v
        for v in PACKAGES[name]["releases"]
        if installable(name, v, python) and requirement.specifier.contains(v, prereleases=True)
    ]
    assert allowed, (python, str(requirement))  # some fixed release remains installable
    for version in allowed:
        assert not fixes & set(vulnerable(name, version)), (python, str(requirement), version)
    for version in PACKAGES[name]["releases"]:
        for candidate in (version, f"{version}rc1", f"{version}.post1"):
            if fixes & set(vulnerable(name, candidate)):
                assert not requirement.specifier.contains(candidate, prereleases=True), (
                    python,
                    str(requirement),
                    candidate,
                )


def test_pyproject_floor():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += [r for r in extra if Requirement(r).name in PACKAGES]
    check_floor(requirements)


def test_no_fixed_tornado_for_python_3_10_is_known():
    """The pyproject comment's claim: 6.6.1's fix has no release that installs on 3.10."""
    assert "GHSA-5cjw-f85j-cv6r (open redirect, triple slash)" not in fixable("tornado", "3.10")
    assert fixable("tornado", "3.11") == set(PACKAGES["tornado"]["advisories"])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        PIP + ["wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("carta_hub-*.whl")
    return built


def test_built_wheel_metadata_floor(wheel, tmp_path):
    report = tmp_path / "report.json"
    subprocess.run(
        PIP
        + [
            "install",
            "-q",
            "--dry-run",
            "--no-deps",
            "--ignore-installed",
            "--report",
            str(report),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    (item,) = json.loads(report.read_text())["install"]
    assert item["metadata"]["name"] == "carta-hub"
    check_floor(item["metadata"]["requires_dist"])


def fake_wheel(folder, name, version):
    """An empty wheel claiming to be ``name`` ``version`` (for the resolver only)."""
    stem = f"{name.replace('-', '_')}-{version}"
    info = f"{stem}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: carta-hub-tests\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{p},,\n" for p in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / f"{stem}-py3-none-any.whl", "w") as z:
        for path, text in files.items():
            z.writestr(path, text)


def resolve(wheel, folder, name, version):
    """pip's dry-run resolution of carta-hub with ``name==version`` from stand-in wheels."""
    fake_wheel(folder, name, version)
    return subprocess.run(
        PIP
        + [
            "install",
            "--dry-run",
            "--no-index",
            "--find-links",
            str(folder),
            f"{wheel}{EXTRAS.get(name, '')}",
            f"{name}=={version}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("name, version", VULNERABLE)
def test_pip_refuses_a_vulnerable_release(wheel, tmp_path, name, version):
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert fixable(name, python) & set(vulnerable(name, version))
    r = resolve(wheel, tmp_path, name, version)
    assert r.returncode != 0
    assert "ResolutionImpossible" in r.stderr, r.stderr[-2000:]
    assert re.search(rf"carta-hub(\[lab\])? \S+ depends on {name}>=", r.stdout + r.stderr), (
        r.stdout[-2000:]
    )


@pytest.mark.parametrize("name, version", FIXED)
def test_pip_accepts_a_fixed_release(wheel, tmp_path, name, version):
    """Control: the same resolution with a fixed release succeeds."""
    assert not vulnerable(name, version)
    r = resolve(wheel, tmp_path, name, version)
    assert r.returncode == 0, r.stderr[-2000:]
    # pip chose the fixed release: to be installed, or this venv's own (then, with carta-hub
    # installed as the same version, a non-editable install, pip has nothing to install)
    would_install = re.search(r"^Would install (.*)$", r.stdout, re.M)
    chosen = (would_install and f"{name}-{version}" in would_install.group(1).split()) or (
        f"Requirement already satisfied: {name}=={version} in" in r.stdout
    )
    assert chosen, r.stdout[-2000:]


def test_pip_refuses_a_proxy_without_activity_hook(wheel, tmp_path):
    """carta-hub counts real use through jupyter-server-proxy's update_last_activity
    callable (4.6): 4.5, free of advisories, is refused all the same."""
    r = resolve(wheel, tmp_path, "jupyter-server-proxy", "4.5.0")
    assert r.returncode != 0 and "ResolutionImpossible" in r.stderr, r.stderr[-2000:]
    assert "depends on jupyter-server-proxy>=4.6" in r.stdout + r.stderr


@pytest.mark.parametrize("name", PACKAGES)
def test_installed_release_is_fixed(name):
    assert not vulnerable(name, installed_version(name))


def test_installed_environment_meets_the_floors():
    """This venv (which dev/install.sh upgrades) meets pyproject.toml's floors, and pip check
    finds its packages consistent."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["lab"]
    for requirement in map(Requirement, requirements):
        if requirement.marker is None or requirement.marker.evaluate():
            assert requirement.specifier.contains(installed_version(requirement.name)), (
                str(requirement),
                installed_version(requirement.name),
            )
    r = subprocess.run(PIP + ["check"], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
