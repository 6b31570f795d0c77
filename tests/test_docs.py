"""The documentation: docs/ builds with Sphinx with warnings as errors, every configuration it
shows is included from a file that a test exercises, and its documented changes work."""

import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from helpers.helm import CHART, VARIANTS, hub_config, load, merge, spawner_class_for
from k8s_simulator import write_kubeconfig
from kube_support import FakeUser, container, pod_manifest, use_kubeconfig

pytestmark = pytest.mark.fast

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import deploy_complexity  # noqa: E402

DOCS = ROOT / "docs"
CONFIG_DIRS = [ROOT / "jupyterhub_config", ROOT / "helm-values"]
INCLUDE = re.compile(r"^```\{literalinclude\}\s+(\S+)", re.MULTILINE)
PASTED = re.compile(r"^\s*```(python|py|yaml|yml|toml|json|ini)\s*$", re.MULTILINE)

# docs/profiles.md's "add a GPU profile": these lines, added under hub.config in
# helm-values/base.yaml (deploy_complexity.with_gpu_profile), are the whole change.
GPU_PROFILE = """\
    CARTAKubeSpawner:
      extra_profiles:
        - display_name: CARTA on a GPU node
          slug: gpu
          description: CARTA with one NVIDIA GPU.
          kubespawner_override:
            extra_resource_limits: {nvidia.com/gpu: "1"}
            node_selector: {nvidia.com/gpu.present: "true"}
"""  # GPU_PROFILE end


def doc_texts():
    return {path.name: path.read_text() for path in sorted(DOCS.glob("*.md"))}


def test_docs_build_without_warnings(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(DOCS),
            str(tmp_path / "html"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    reference = (tmp_path / "html" / "configuration.html").read_text()
    for setting in (
        "c.CartaBackend.executable",
        "c.CartaSingleUserApp.activity_interval",
        "c.CartaSpawnerMixin.carta_mode",
        "c.CARTASlurmSpawner.cores",
        "c.CARTAKubeSpawner.fs_group",
        "c.IdentityResolver.allowed_uids",
        "c.CartaStorage.mounts",
        "c.CartaLDAPAuthenticator.admin_groups",
    ):
        assert setting in reference, setting


def test_literalinclude_targets_exist():
    targets = [
        (name, target) for name, text in doc_texts().items() for target in INCLUDE.findall(text)
    ]
    assert targets
    for name, target in targets:
        assert (DOCS / target).resolve().is_file(), f"{name} includes missing {target}"


def test_configs_are_included_not_pasted():
    for name, text in doc_texts().items():
        pasted = PASTED.findall(text)
        assert not pasted, f"{name} pastes {pasted} blocks: include a tested file instead"


def _code(path):
    return "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
    )


def test_every_config_file_is_tested():
    """Named by a test (its file name, or its stem as a string), or loaded by such a file."""
    tests = "\n".join(
        p.read_text() for p in (ROOT / "tests").rglob("*.py") if p.name != "test_docs.py"
    )
    files = [p for folder in CONFIG_DIRS for p in sorted(folder.rglob("*")) if p.is_file()]
    tested = {p for p in files if p.name in tests or re.search(rf"[\"']{p.stem}[\"']", tests)}
    loaded = {
        p
        for p in files
        for parent in tested
        if parent.suffix == ".py" and f'load_subconfig("{p.name}")' in _code(parent)
    }
    untested = [str(p.relative_to(ROOT)) for p in files if p not in tested | loaded]
    assert not untested, f"no test exercises {untested}"


@pytest.mark.skipif(not CHART.is_dir(), reason=f"{CHART} is missing")
async def test_gpu_profile_example(tmp_path, monkeypatch):
    text = deploy_complexity.with_gpu_profile(
        (ROOT / "helm-values" / "base.yaml").read_text(), GPU_PROFILE
    )
    values = merge(
        merge(load(CHART / "values.yaml"), yaml.safe_load(text)),
        load(ROOT / "helm-values" / "oidc.yaml"),
    )
    jsonschema.validate(values, load(CHART / "values.schema.yaml"))
    use_kubeconfig(monkeypatch, write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:9"))
    spawner = spawner_class_for(values)(
        user=FakeUser("jo", VARIANTS["oidc"]), config=hub_config(values), _mock=True
    )
    spawner.user_options = {"profile": "gpu", "resources": "large"}
    pod = await pod_manifest(spawner)
    kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)
    assert container(pod)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container(pod)["resources"]["limits"]["memory"] == 32 * 2**30  # the "large" choice
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert container(pod)["args"][0] == "carta-hub-singleuser"


def test_deploy_complexity_figures():
    """The benchmark counts what the docs say it counts."""
    figures = {title: value for title, value, _, _ in deploy_complexity.measure()}
    assert figures["CARTA on Zero-to-JupyterHub: steps"] == len(
        re.findall(r"^## Step \d+:", (DOCS / "kubernetes.md").read_text(), re.MULTILINE)
    )
    assert figures["CARTA on a Slurm login node: lines written"] == sum(
        len(deploy_complexity.written(s.text())) for s in deploy_complexity.GUIDES[1].sources
    )
    assert figures["Add a GPU profile (Kubernetes): lines"] == len(
        deploy_complexity.written(GPU_PROFILE)
    )
    sudoers = deploy_complexity.Source("docs/slurm.md", "Cmnd_Alias").text()
    assert "NOPASSWD:SETENV: CARTA_SLURM" in sudoers
    guide = deploy_complexity.GUIDES[2]
    assert figures["CARTA on Slurm, Hub on Kubernetes: steps"] == len(
        re.findall(r"^## Step \d+:", (ROOT / guide.doc).read_text(), re.MULTILINE)
    )
    assert figures["CARTA on Slurm, Hub on Kubernetes: lines written"] == sum(
        len(deploy_complexity.written(s.text())) for s in guide.sources
    )
    assert {s.path for s in guide.sources} >= {"helm-values/slurm.yaml", guide.doc}


def test_slurm_from_kubernetes_matches_the_test_cluster():
    """docs/slurm-from-kubernetes.md's Slurm side is what the test cluster runs
    (tests/helpers/slurm.py): its slurm.conf line, slurmrestd's account, authentication
    and API version, in the daemon's JWT mode."""
    from helpers import slurm

    guide = ROOT / "docs" / "slurm-from-kubernetes.md"
    conf = deploy_complexity.Source(str(guide.relative_to(ROOT)), "AuthAltTypes=").text()
    for line in deploy_complexity.written(conf):
        assert line in slurm.CONF.splitlines(), line
    (start,) = [b for b in guide.read_text().split("\n\n") if "slurmrestd -a" in b]
    argv = start.replace("\\\n", " ").split()
    assert argv[argv.index("-u") + 1] == slurm.REST_USER
    assert "SLURM_JWT=daemon" in argv
    assert argv[argv.index("-a") + 1] == "rest_auth/jwt"
    assert argv[argv.index("-s") + 1] == f"openapi/{slurm.REST_VERSION}"
