"""images/: the Dockerfiles pass hadolint, the Apptainer recipe parses (spython), and the
paths and commands they bake in are the ones the spawners and helm-values run."""

import re
import subprocess
import sys
from pathlib import Path

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
    assert '"/opt/src/carta-hub[lab,slurm]"' in text
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
