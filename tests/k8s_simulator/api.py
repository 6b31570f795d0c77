"""The simulator's API server: the core/v1 REST and watch calls KubeSpawner makes.

Objects live in memory. Every change gets a resourceVersion and goes to a change log, so a
watch started at resourceVersion N replays the changes after N and then streams new ones
until ``timeoutSeconds``, as the real API server does. Pods are validated (strict, at the
simulator's Kubernetes version) with kubernetes-validate before they are accepted, then
handed to the simulator's kubelet.
"""

import asyncio
import json
import time
import uuid

import kubernetes_validate
from aiohttp import web

KINDS = {
    "pods": "Pod",
    "events": "Event",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "secrets": "Secret",
    "services": "Service",
}


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Store:
    """Objects keyed by (plural, namespace, name), with a change log for watches."""

    def __init__(self):
        self.objects = {}
        self.log = []  # (resourceVersion, plural, type, object)
        self.changed = asyncio.Condition()

    def get(self, plural, ns, name):
        return self.objects.get((plural, ns, name))

    def list(self, plural, ns):
        return [o for (p, n, _), o in self.objects.items() if p == plural and ns in (None, n)]

    @property
    def version(self):
        return len(self.log)

    async def put(self, plural, obj, kind="MODIFIED"):
        meta = obj["metadata"]
        key = (plural, meta["namespace"], meta["name"])
        if kind == "MODIFIED" and key not in self.objects:
            return  # deleted meanwhile
        meta["resourceVersion"] = str(self.version + 1)
        if kind == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        await self._record(plural, kind, obj)

    async def _record(self, plural, kind, obj):
        async with self.changed:
            self.log.append((self.version + 1, plural, kind, json.loads(json.dumps(obj))))
            self.changed.notify_all()


def status(code, reason, message):
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


def matches(obj, label_selector, field_selector):
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, (label_selector or "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    for term in filter(None, (field_selector or "").split(",")):
        path, value = term.split("=", 1)
        found = obj
        for part in path.split("."):
            found = (found or {}).get(part)
        if str(found) != value:
            return False
    return True


class Api:
    """aiohttp handlers over a :class:`Store` and a kubelet."""

    def __init__(self, store, kubelet, kube_version):
        self.store = store
        self.kubelet = kubelet
        self.kube_version = kube_version

    def app(self):
        app = web.Application()
        app.router.add_get("/version", self.version)
        app.router.add_get("/api/v1/{plural}", self.list_or_watch)
        app.router.add_get("/api/v1/namespaces/{ns}/{plural}", self.list_or_watch)
        app.router.add_post("/api/v1/namespaces/{ns}/{plural}", self.create)
        app.router.add_get("/api/v1/namespaces/{ns}/{plural}/{name}", self.read)
        app.router.add_delete("/api/v1/namespaces/{ns}/{plural}/{name}", self.delete)
        return app

    async def version(self, request):
        major, minor = self.kube_version.split(".")[:2]
        return web.json_response(
            {"major": major, "minor": minor, "gitVersion": f"v{self.kube_version}-simulator"}
        )

    def _plural(self, request):
        plural = request.match_info["plural"]
        if plural not in KINDS:
            raise web.HTTPNotFound(text=f"the simulator does not serve {plural}")
        return plural

    async def list_or_watch(self, request):
        plural, q = self._plural(request), request.query
        ns = request.match_info.get("ns")
        if q.get("watch", "").lower() in ("true", "1"):
            return await self.watch(request, plural, ns)
        items = [
            o
            for o in self.store.list(plural, ns)
            if matches(o, q.get("labelSelector"), q.get("fieldSelector"))
        ]
        return web.json_response(
            {
                "kind": KINDS[plural] + "List",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self.store.version)},
                "items": items,
            }
        )

    async def watch(self, request, plural, ns):
        q = request.query
        since = int(q.get("resourceVersion") or 0)
        deadline = time.monotonic() + min(int(q.get("timeoutSeconds") or 300), 300)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        sent = since
        while time.monotonic() < deadline:
            for rv, p, kind, obj in self.store.log[sent:]:
                if (
                    p == plural
                    and ns in (None, obj["metadata"]["namespace"])
                    and matches(obj, q.get("labelSelector"), q.get("fieldSelector"))
                ):
                    line = json.dumps({"type": kind, "object": obj}) + "\n"
                    await response.write(line.encode())
            sent = len(self.store.log)
            async with self.store.changed:
                try:
                    await asyncio.wait_for(
                        self.store.changed.wait_for(lambda: len(self.store.log) > sent),
                        max(0.0, deadline - time.monotonic()),
                    )
                except asyncio.TimeoutError:
                    break
        await response.write_eof()
        return response

    async def create(self, request):
        plural, ns = self._plural(request), request.match_info["ns"]
        obj = await request.json()
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", KINDS[plural])
        if plural == "pods":
            try:
                kubernetes_validate.validate(obj, self.kube_version, strict=True)
            except kubernetes_validate.ValidationError as e:
                return status(422, "Invalid", f"Pod is invalid: {e.message} at {list(e.path)}")
        meta = obj.setdefault("metadata", {})
        if self.store.get(plural, ns, meta.get("name")):
            return status(409, "AlreadyExists", f'{plural} "{meta.get("name")}" already exists')
        meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=now())
        obj["status"] = (
            {"phase": "Bound"}
            if plural == "persistentvolumeclaims"
            else ({"phase": "Pending"} if plural == "pods" else obj.get("status", {}))
        )
        await self.store.put(plural, obj, "ADDED")
        if plural == "pods":
            self.kubelet.start(obj)
        return web.json_response(obj, status=201)

    async def read(self, request):
        plural, ns, name = (
            self._plural(request),
            request.match_info["ns"],
            request.match_info["name"],
        )
        obj = self.store.get(plural, ns, name)
        if obj is None:
            return status(404, "NotFound", f'{plural} "{name}" not found')
        return web.json_response(obj)

    async def delete(self, request):
        plural, ns, name = (
            self._plural(request),
            request.match_info["ns"],
            request.match_info["name"],
        )
        obj = self.store.get(plural, ns, name)
        if obj is None:
            return status(404, "NotFound", f'{plural} "{name}" not found')
        if plural == "pods":
            obj["metadata"]["deletionTimestamp"] = now()
            await self.store.put(plural, obj)
            self.kubelet.stop(obj, int(request.query.get("gracePeriodSeconds") or 30))
        else:
            await self.store.put(plural, obj, "DELETED")
        return web.json_response(obj)
