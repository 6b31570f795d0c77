"""The package's layout: two programs around shared backend settings, no test tool inside.

``carta_hub.hub`` runs in the Hub, ``carta_hub.server`` in each user's server; both may use
``carta_hub.backend`` (and the package root), never each other. The stand-in backend is its own
distribution (``standin/``), not part of what ``pip install carta-hub`` brings.
"""

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "carta_hub"


def imported(path: Path) -> set[str]:
    """Absolute names of the carta modules ``path`` imports (relative imports resolved)."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.update(f"{base}.{alias.name}" for alias in node.names)
            names.add(base)
    return {n for n in names if n.startswith(("carta_hub", "carta_standin"))}


def imports_of(part: str) -> dict[str, set[str]]:
    return {str(p.relative_to(ROOT)): imported(p) for p in (PACKAGE / part).rglob("*.py")}


def test_hub_and_server_never_import_each_other():
    for part, other in (("hub", "carta_hub.server"), ("server", "carta_hub.hub")):
        wrong = {
            f: sorted(n for n in names if n.startswith(other))
            for f, names in imports_of(part).items()
        }
        assert not {f: n for f, n in wrong.items() if n}, f"carta_hub/{part} imports {other}"


def test_shared_modules_import_neither_program():
    """The package's top-level modules (backend settings, user context) serve both."""
    shared = {p.name: imported(p) for p in PACKAGE.glob("*.py")}
    assert {"__init__.py", "backend.py", "usercontext.py"} <= set(shared)
    wrong = {
        f: [n for n in names if n.startswith(("carta_hub.hub", "carta_hub.server"))]
        for f, names in shared.items()
    }
    assert not {f: n for f, n in wrong.items() if n}


def test_the_product_never_imports_the_standin():
    every = {f: names for part in ("hub", "server") for f, names in imports_of(part).items()}
    assert not {f: n for f, n in every.items() if any(x.startswith("carta_standin") for x in n)}


def test_tests_import_this_checkout():
    """pytest's pythonpath puts this checkout first: an edit is tested without reinstalling."""
    import carta_standin

    import carta_hub

    assert Path(carta_hub.__file__).resolve() == PACKAGE / "__init__.py"
    assert Path(carta_standin.__file__).resolve().parent == ROOT / "standin" / "carta_standin"


def test_the_wheel_holds_no_standin_and_needs_no_protobuf(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("carta_hub-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert not [n for n in names if "standin" in n]
    assert "protobuf" not in metadata
    assert "carta-standin" not in entry_points
    # what ships: both programs, the job-script template, the launcher icon
    for shipped in (
        "carta_hub/hub/slurm/job.sh.j2",
        "carta_hub/server/carta.svg",
        "carta_hub/server/app.py",
        "carta_hub/backend.py",
    ):
        assert shipped in names
    # the prebuilt JupyterLab extension ("Open in CARTA"): installing the wheel needs no node
    labextension = "carta_hub-{}.data/data/share/jupyter/labextensions/carta-hub/".format(
        wheel.name.split("-")[1]
    )
    assert labextension + "package.json" in names
    assert labextension + "schemas/carta-hub/plugin.json" in names
    assert [n for n in names if n.startswith(labextension + "static/remoteEntry.")]
