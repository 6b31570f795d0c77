"""images/: the Dockerfiles pass hadolint, the Apptainer recipe parses (spython), and the
paths and commands they bake in are the ones the spawners and helm-values run."""

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest
import tomllib
import yaml
from spython.main.parse.parsers import DockerParser, SingularityParser
from traitlets.config import Config

from carta_hub.backend import CartaBackend
from carta_hub.hub.kube import CARTAKubeSpawner
from carta_hub.hub.spawner import COMMANDS

pytestmark = pytest.mark.fast

ROOT = Path(__file__).parent.parent
IMAGES = ROOT / "images"
HADOLINT = Path(sys.executable).with_name("hadolint")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
BASE_VALUES = yaml.safe_load((ROOT / "helm-values" / "base.yaml").read_text())


def recipe(parser, name):
    (parsed,) = parser(str(IMAGES / name)).recipe.values()
    return parsed


def install_text(parsed):
    return "\n".join(parsed.install)


@pytest.mark.parametrize("dockerfile", ["singleuser.Dockerfile", "hub.Dockerfile"])
def test_hadolint(dockerfile):
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(IMAGES / dockerfile)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", ["singleuser.Dockerfile", "hub.Dockerfile"])
def test_copied_sources_exist(dockerfile):
    for source, _ in recipe(DockerParser, dockerfile).files:
        assert (ROOT / source).exists(), source


def test_singleuser_image_has_what_the_pods_run():
    image = recipe(DockerParser, "singleuser.Dockerfile")
    text = install_text(image)
    assert image.fromHeader == "ubuntu:24.04"
    assert "add-apt-repository -y ppa:cartavis-team/carta" in text
    assert re.search(r"apt-get install .*\bcarta\b.*\blibnss-wrapper\b", text)
    # the backend the spawners run by default (carta_backend on PATH) is the PPA's; the kube
    # spawner preloads this nss_wrapper
    assert CartaBackend.class_traits()["executable"].default_value == "carta_backend"
    assert "test -x /usr/bin/carta_backend" in text
    nss = CARTAKubeSpawner.class_traits()["nss_wrapper_library"].default_value
    assert f"test -f {nss}" in text
    # the spawners' commands: carta-hub's console script, JupyterLab and batchspawner extras
    # (of the wheel the build stage makes: test_singleuser_image_installs_the_built_wheel)
    assert '"$1[lab,slurm]"' in text
    assert COMMANDS["carta"][0] in PYPROJECT["project"]["scripts"]
    assert any(
        d.startswith("batchspawner") for d in PYPROJECT["project"]["optional-dependencies"]["slurm"]
    )
    assert any(
        d.startswith("jupyterlab") for d in PYPROJECT["project"]["optional-dependencies"]["lab"]
    )
    path = dict(e.split("=", 1) for e in image.environ)["PATH"]
    assert path.startswith("/opt/carta-hub/bin:") and "/usr/bin" in path.split(":")
    assert image.cmd == COMMANDS["carta"] and image.entrypoint == ["tini", "--"]
    # the tag it is built as is the one helm-values deploy
    su = BASE_VALUES["singleuser"]
    assert f"-t {su['image']['name']}:{su['image']['tag']} ." in text


def test_hub_image_adds_carta_hub_to_the_chart_image():
    image = recipe(DockerParser, "hub.Dockerfile")
    text = install_text(image)
    assert image.fromHeader == "quay.io/jupyterhub/k8s-hub:4.4.0"
    assert "pip install --no-cache-dir --no-deps /tmp/carta-hub" in text
    assert "from carta_hub.hub.kube import CARTAKubeSpawner" in text
    # CARTASlurmSpawner for helm-values/slurm.yaml: batchspawner, which the chart image lacks
    assert re.search(r"pip install [^&]* batchspawner==1\.3\.\d+ ", text)
    assert "from carta_hub.hub.slurm.spawner import CARTASlurmSpawner" in text
    slurm_hub = yaml.safe_load((ROOT / "helm-values" / "slurm.yaml").read_text())["hub"]
    assert slurm_hub["image"] == BASE_VALUES["hub"]["image"]
    # the chart loads the image's jupyterhub_config.d: it names our spawner
    ((source, target),) = [f for f in image.files if f[0].startswith("images/hub-config.d/")]
    assert target.startswith("/usr/local/etc/jupyterhub/jupyterhub_config.d/")
    c = Config()
    exec((ROOT / source).read_text(), {"c": c})
    assert c.Authenticator.enable_auth_state is True
    entry = PYPROJECT["project"]["entry-points"]["jupyterhub.spawners"][c.JupyterHub.spawner_class]
    assert entry == "carta_hub.hub.kube:CARTAKubeSpawner"
    hub = BASE_VALUES["hub"]["image"]
    assert f"-t {hub['name']}:{hub['tag']} ." in text


def test_apptainer_recipe_is_the_singleuser_image():
    sif = recipe(SingularityParser, "carta-hub.def")
    su = BASE_VALUES["singleuser"]["image"]
    assert sif.fromHeader == f"{su['name']}:{su['tag']}"
    assert sif.cmd == 'exec carta-hub-singleuser "$@"'
    assert "/opt/carta-hub/bin" in dict(e.split("=", 1) for e in sif.environ)["PATH"]
    tests = install_text(sif)
    assert "test -x /usr/bin/carta_backend" in tests
    # what the Slurm spawner execs inside the image
    from carta_hub.hub.slurm.spawner import CARTASlurmSpawner

    wrapper = CARTASlurmSpawner.class_traits()["batchspawner_singleuser_cmd"].default_value
    for command in (wrapper, *(c[0] for c in COMMANDS.values())):
        assert command in tests, command


def test_images_have_setpriv_for_the_backend():
    """The wrapper starts carta_backend with setpriv --pdeathsig (util-linux 2.33+): the
    single-user image installs util-linux and both images check the option works."""
    text = install_text(recipe(DockerParser, "singleuser.Dockerfile"))
    assert re.search(r"apt-get install [^&]*\butil-linux\b", text)
    assert "setpriv --pdeathsig TERM -- true" in text
    assert "setpriv --pdeathsig TERM -- true" in install_text(
        recipe(SingularityParser, "carta-hub.def")
    )


# --- the JupyterLab extension ("Open in CARTA") in the single-user image ---

LABEXTENSION = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["shared-data"][
    "carta_hub/labextension"
]  # share/jupyter/labextensions/carta-hub


@dataclass
class Stage:
    base: str
    name: str
    instructions: list = field(default_factory=list)  # (INSTRUCTION, arguments)

    def args(self, instruction):
        return [a for i, a in self.instructions if i == instruction]


def stages(dockerfile):
    """The stages of ``dockerfile`` in order (spython merges them into one recipe)."""
    text = (IMAGES / dockerfile).read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, args = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            base, _, name = args.partition(" AS ")
            found.append(Stage(base.strip(), name.strip()))
        else:
            found[-1].instructions.append((instruction.upper(), " ".join(args.split())))
    return found


def singleuser_stages():
    build, final = stages("singleuser.Dockerfile")
    return build, final


def test_singleuser_image_installs_the_built_wheel():
    """node and npm build the wheel (and so the extension) in a stage of their own; the image
    installs that wheel and checks the extension is where JupyterLab looks, without node."""
    build, final = singleuser_stages()
    assert re.fullmatch(r"node:\d+-bookworm-slim", build.base) and build.name == "wheel"
    (wheel_run,) = [r for r in build.args("RUN") if " wheel " in r]
    dist = re.fullmatch(r"/opt/build/bin/pip wheel --no-cache-dir --no-deps -w (\S+) \.", wheel_run)
    assert dist, wheel_run
    assert final.base == "ubuntu:24.04"
    assert f"--from={build.name} {dist.group(1).rstrip('/')}/ /opt/src/dist/" in final.args("COPY")
    # the image copies no sources: the wheel is all it installs
    assert all(c.startswith("--from=") for c in final.args("COPY"))
    (install,) = [r for r in final.args("RUN") if "pip install" in r]
    assert "set -- /opt/src/dist/carta_hub-*.whl" in install
    assert '/opt/carta-hub/bin/pip install --no-cache-dir "$1[lab,slurm]"' in install
    assert f"test -f /opt/carta-hub/{LABEXTENSION}/package.json" in install
    assert not re.search(r"\b(node|nodejs|npm|yarn)\b", " ".join(final.args("RUN")))
    # the Slurm side's image is this one: it checks the extension too
    assert f"test -f /opt/carta-hub/{LABEXTENSION}/package.json" in install_text(
        recipe(SingularityParser, "carta-hub.def")
    )


def docker_ignored(patterns, relative):
    """Whether .dockerignore's ``patterns`` leave ``relative`` (a path in the context) out."""
    parts = PurePosixPath(relative).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatchcase(prefix, p) or (p.startswith("**/") and fnmatch.fnmatch(part, p[3:]))
        for p in patterns
        for prefix, part in zip(prefixes, parts)
    )


def copy_build_context(stage, dest):
    """The build stage's COPY instructions, from this checkout as `docker build .` sends it
    (without what .dockerignore leaves out), into ``dest`` standing for its WORKDIR."""
    ignore_file = ROOT / ".dockerignore"
    patterns = [
        line.strip()
        for line in (ignore_file.read_text() if ignore_file.exists() else "").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignore(folder, names):
        here = Path(folder).relative_to(ROOT)
        return [n for n in names if docker_ignored(patterns, (here / n).as_posix())]

    (workdir,) = stage.args("WORKDIR")
    for copy in stage.args("COPY"):
        *sources, target = copy.split()
        into = dest / PurePosixPath(workdir, target).relative_to(workdir)
        for source in sources:
            assert not docker_ignored(patterns, source), source
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, into, ignore=ignore, dirs_exist_ok=True)
            elif target.endswith("/"):
                into.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, into / Path(source).name)
            else:
                shutil.copy2(ROOT / source, into)


@pytest.mark.timeout(600)
def test_the_build_stage_makes_a_wheel_with_the_extension(tmp_path):
    """The wheel built from what the build stage copies, as it builds it (pip wheel of its
    WORKDIR; here without build isolation, with this venv's hatch-jupyter-builder and npm's
    cache), carries the extension, built afresh: a checkout's build output is not sent."""
    build, _ = singleuser_stages()
    src = tmp_path / "src"
    copy_build_context(build, src)
    assert not (src / "carta_hub" / "labextension").exists()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "npm_config_prefer_offline": "true",
    }
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp_path / "dist"), "."],
        cwd=src,
        env=env,
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("carta_hub-*.whl")
    data = f"carta_hub-{wheel.name.split('-')[1]}.data/data/{LABEXTENSION}/"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        package = z.read(data + "package.json").decode()
    assert '"name": "carta-hub"' in package
    assert data + "schemas/carta-hub/plugin.json" in names
    assert [n for n in names if n.startswith(data + "static/remoteEntry.")]
    assert not [n for n in names if n.startswith("carta_hub/labextension/")]  # in it once
