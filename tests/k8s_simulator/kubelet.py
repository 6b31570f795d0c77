"""The simulator's kubelet: runs a pod's containers as local processes.

Each container runs in its own mount namespace (``unshare --mount``) where the pod's volumes
are bind-mounted at their mountPaths (emptyDir: a fresh directory; hostPath: the path;
persistentVolumeClaim: ``<volume_root>/<claimName>``, plus ``subPath``; ``readOnly`` mounts
are remounted read-only), then switches to the effective ``runAsUser``/``runAsGroup``/
``supplementalGroups`` with no capabilities and no new privileges (``setpriv``) and runs
``command + args`` with only the container's env (plus the image PATH given to the simulator)
in its ``workingDir``. The image itself (its files and ENTRYPOINT) is not used. Init containers
run first, in order. A running pod gets podIP 127.0.0.1.

Like a real node it refuses ``runAsNonRoot`` pods that would run as UID 0, reports a missing
PVC or hostPath as a ``FailedMount`` event and leaves the pod Pending, and creates missing
mount points (on this machine's file system: pick test paths accordingly).
"""

import asyncio
import itertools
import json
import os
import signal
import sys
from pathlib import Path

from .api import now

RUNTIME = Path(__file__).with_name("runtime.py")


class MountError(Exception):
    pass


class Kubelet:
    def __init__(self, store, state_dir, volume_root, image_path):
        self.store = store
        self.state_dir = Path(state_dir)
        self.volume_root = Path(volume_root)
        self.image_path = image_path
        self.procs = {}  # pod uid -> [Process]
        self.tasks = {}
        self._events = itertools.count()

    def start(self, pod):
        self.tasks[pod["metadata"]["uid"]] = asyncio.ensure_future(self._run(pod))

    def stop(self, pod, grace):
        asyncio.ensure_future(self._stop(pod, grace))

    async def shutdown(self):
        for pod_uid in list(self.procs):
            self._signal(pod_uid, signal.SIGKILL)

    # --- lifecycle ---

    async def _run(self, pod):
        await self._event(pod, "Normal", "Scheduled", "Successfully assigned to simulator-node")
        try:
            volumes = self._volumes(pod)
        except MountError as e:
            await self._event(pod, "Warning", "FailedMount", str(e))
            return
        for container in pod["spec"].get("initContainers") or []:
            proc = await self._exec(pod, container, volumes)
            if proc is None or await proc.wait() != 0:
                await self._set_status(pod, "Failed", exit_code=1)
                return
        procs = [await self._exec(pod, c, volumes) for c in pod["spec"]["containers"]]
        if None in procs:
            await self._set_status(pod, "Failed", exit_code=1)
            return
        await self._set_status(pod, "Running")
        code = await procs[0].wait()
        await self._set_status(pod, "Succeeded" if code == 0 else "Failed", exit_code=code)

    async def _stop(self, pod, grace):
        pod_uid = pod["metadata"]["uid"]
        self._signal(pod_uid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self._wait(pod_uid), timeout=min(grace, 10))
        except asyncio.TimeoutError:
            self._signal(pod_uid, signal.SIGKILL)
            await self._wait(pod_uid)
        task = self.tasks.pop(pod_uid, None)
        if task:
            task.cancel()
        self.procs.pop(pod_uid, None)
        await self._event(pod, "Normal", "Killing", "Stopping container notebook")
        await self.store.put("pods", pod, "DELETED")

    def _signal(self, pod_uid, sig):
        for proc in self.procs.get(pod_uid, []):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass

    async def _wait(self, pod_uid):
        for proc in self.procs.get(pod_uid, []):
            await proc.wait()

    # --- containers ---

    async def _exec(self, pod, container, volumes):
        ctx = {
            **(pod["spec"].get("securityContext") or {}),
            **(container.get("securityContext") or {}),
        }
        uid, gid = ctx.get("runAsUser", 0), ctx.get("runAsGroup", ctx.get("runAsUser", 0))
        if ctx.get("runAsNonRoot") and uid == 0:
            await self._event(
                pod,
                "Warning",
                "Failed",
                "Error: container has runAsNonRoot and image will run as root",
            )
            return None
        groups = [gid, *(ctx.get("supplementalGroups") or [])]  # as container runtimes do
        if "fsGroup" in ctx:
            groups.append(ctx["fsGroup"])
        env = {"PATH": self.image_path}
        env.update({e["name"]: e.get("value", "") for e in container.get("env") or []})
        mounts = [
            [
                volumes[m["name"]] + ("/" + m["subPath"] if m.get("subPath") else ""),
                m["mountPath"],
                bool(m.get("readOnly")),
            ]
            for m in container.get("volumeMounts") or []
        ]
        spec = {
            "mounts": sorted(mounts, key=lambda m: m[1].count("/")),
            "uid": uid,
            "gid": gid,
            "groups": groups,
            "env": env,
            "cwd": container.get("workingDir") or "/",
            "argv": (container.get("command") or []) + (container.get("args") or []),
        }
        pod_dir = self._pod_dir(pod)
        spec_file = pod_dir / f"{container['name']}.json"
        spec_file.write_text(json.dumps(spec))
        log = open(pod_dir / f"{container['name']}.log", "ab")
        proc = await asyncio.create_subprocess_exec(
            "unshare",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            str(RUNTIME),
            str(spec_file),
            stdout=log,
            stderr=log,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.procs.setdefault(pod["metadata"]["uid"], []).append(proc)
        await self._event(pod, "Normal", "Started", f"Started container {container['name']}")
        return proc

    def _pod_dir(self, pod):
        path = self.state_dir / "pods" / f"{pod['metadata']['namespace']}_{pod['metadata']['name']}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _volumes(self, pod):
        """Map each volume name to the local directory that backs it."""
        found = {}
        for volume in pod["spec"].get("volumes") or []:
            found[volume["name"]] = str(self._volume_dir(pod, volume))
        return found

    def _volume_dir(self, pod, volume):
        if "emptyDir" in volume:
            path = self._pod_dir(pod) / "volumes" / volume["name"]
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)
            return path
        if "hostPath" in volume:
            path = Path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type") == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            if not path.is_dir():
                raise MountError(f"hostPath type check failed: {path} is not a directory")
            return path
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if not self.store.get("persistentvolumeclaims", pod["metadata"]["namespace"], claim):
                raise MountError(f'persistentvolumeclaim "{claim}" not found')
            return self.volume_root / claim
        raise MountError(f"the simulator does not support volume {volume}")

    # --- status and events ---

    async def _set_status(self, pod, phase, exit_code=None):
        names = [c["name"] for c in pod["spec"]["containers"]]
        if exit_code is None:
            state, ready = {"running": {"startedAt": now()}}, True
        else:
            state, ready = {"terminated": {"exitCode": exit_code, "finishedAt": now()}}, False
        pod["status"] = {
            "phase": phase,
            "podIP": "127.0.0.1",
            "hostIP": "127.0.0.1",
            "startTime": now(),
            "conditions": [{"type": "Ready", "status": str(ready)}],
            "containerStatuses": [
                {
                    "name": n,
                    "ready": ready,
                    "restartCount": 0,
                    "state": state,
                    "image": pod["spec"]["containers"][0]["image"],
                    "imageID": "",
                    "started": ready,
                }
                for n in names
            ],
        }
        await self.store.put("pods", pod)

    async def _event(self, pod, kind, reason, message):
        meta = pod["metadata"]
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{next(self._events)}",
                "namespace": meta["namespace"],
                "uid": os.urandom(8).hex(),
            },
            "involvedObject": {
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": kind,
            "reason": reason,
            "message": message,
            "count": 1,
            "firstTimestamp": now(),
            "lastTimestamp": now(),
            "eventTime": None,
            "source": {"component": "kubelet", "host": "simulator-node"},
        }
        await self.store.put("events", event, "ADDED")
