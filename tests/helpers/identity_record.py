"""A test spawner that records the POSIX identity a carta-hub spawner would run the user's
server as (``IdentityResolver(parent=spawner).resolve(user)``, exactly what the Slurm and
Kubernetes spawners call) in ``{workdir}/identity-NAME.json``, then starts the server."""

import json

from .hub import SAME_USER_CARTA

RECORD_IDENTITY = (
    SAME_USER_CARTA
    + """
import json
from carta_hub.hub.identity import IdentityResolver

class IdentityRecordingSpawner(SameUserCartaSpawner):
    async def start(self):
        ident = await IdentityResolver(parent=self).resolve(self.user)
        record = {"uid": ident.uid, "gid": ident.gid, "groups": list(ident.groups),
                  "name": ident.name, "home": ident.home, "source": ident.source}
        with open(f"{workdir}/identity-{self.user.name}.json", "w") as f:
            json.dump(record, f)
        return await super().start()

c.JupyterHub.spawner_class = IdentityRecordingSpawner
c.IdentityResolver.sources = ["auth_state"]
"""
)


def recorded_identity(hub, name):
    return json.loads((hub.workdir / f"identity-{name}.json").read_text())
