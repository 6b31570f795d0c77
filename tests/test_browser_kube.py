"""A student's CARTA on Kubernetes, in a real browser (Chromium) with the real carta-frontend
6.0.0: log in, pick the "CARTA" profile on KubeSpawner's form, and CARTA opens connected,
listing the student's CephFS home. The Hub, the Kubernetes API simulator (whose kubelet runs
the pod's container as local processes with the student's UID) and the student are those of
tests/test_kube_e2e.py (fixtures in conftest.py). The backend is carta-standin, a stand-in
for carta_backend (NOT CARTA: it lists folders, it cannot open images)."""

import os

import pytest
from helpers.browser import Student, browser  # noqa: F401  (fixture)
from kube_support import KUBE_STUDENT as STUDENT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the simulator's kubelet needs root")

FITS = b"SIMPLE  =                    T" + b" " * 2850
DATA = "kube-student-cube.fits"


@pytest.fixture(scope="module")
def data(kube_site, kube_student):
    path = os.path.join(kube_site["root"], "pv", "cephfs", "home", STUDENT, DATA)
    with open(path, "wb") as f:
        f.write(FITS)
    os.chown(path, kube_student.pw_uid, kube_student.pw_gid)
    return path


def test_profile_and_carta_on_kubernetes(
    browser,  # noqa: F811
    kube_hub,
    kube_site,
    kube_student,
    data,
    artifacts,
):
    hub, sim = kube_hub, kube_site["sim"]
    with Student(browser, artifacts, "kube", timeout=120) as you:
        page = you.page
        you.login(hub.url, STUDENT, hub.password)
        page.wait_for_url(f"{hub.url}/hub/spawn**")  # KubeSpawner's profile form
        page.check('input[name="profile"][value="carta"]')
        you.screenshot("kube-profiles")
        page.click("#spawn_form button[type=submit]")

        page.wait_for_url(hub.user_url(STUDENT) + "**")
        you.wait_connected()
        assert DATA in you.files(DATA)
        # the top level is the CephFS tree ({ceph}); CARTA starts in the student's home
        assert you.folder() == ["home", STUDENT]
        you.assert_healthy()
        you.screenshot("kube-carta")

    (pod,) = sim.pods()
    assert pod["spec"]["securityContext"]["runAsUser"] == kube_student.pw_uid
    hub.stop_server(STUDENT)
    assert sim.pods() == []
