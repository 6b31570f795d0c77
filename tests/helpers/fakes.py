"""Test doubles for the parts of JupyterHub objects a spawner or resolver uses."""


class FakeUser:
    """A JupyterHub User: name, id, URL, spawners and (async) auth_state."""

    def __init__(self, name, auth_state=None, user_id=1):
        self.name = name
        self.id = user_id
        self.url = f"/user/{name}/"
        self.spawners = {}
        self._state = auth_state

    async def get_auth_state(self):
        return self._state
