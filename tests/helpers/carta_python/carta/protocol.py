"""carta/protocol.py: backend-token authentication and the scripting request."""

import json
import urllib.parse

import requests

from .token import BackendToken
from .util import CartaActionFailed, CartaEncoder, CartaRequestFailed, split_action_path

KNOWN_ERRORS = {
    400: "The backend could not parse the request.",
    403: "Could not authenticate.",
    404: "No session with ID {} could be found.",
    500: "An internal error occurred, or the client cancelled the request.",
    501: "Scripting is not enabled in the backend.",
}


class Protocol:
    ACTION_PATH = "/api/scripting/action"

    def __init__(self, frontend_url, token):
        assert isinstance(token, BackendToken), "Unrecognised token."
        parsed = urllib.parse.urlparse(frontend_url)
        self.base_url = parsed._replace(query="").geturl().rstrip("/")
        self.backend_token = token

    def request_scripting_action(self, session_id, path, *args, **kwargs):
        timeout = kwargs.pop("timeout", 10)
        response_expected = kwargs.pop("response_expected", False)
        path, action = split_action_path(path)
        request_kwargs = {
            "session_id": session_id,
            "path": path,
            "action": action,
            "parameters": args,
            "async": kwargs.get("async", False),
        }
        if "return_path" in kwargs:
            request_kwargs["return_path"] = kwargs["return_path"]
            response_expected = True
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.backend_token.string}",
        }
        response = requests.post(
            url=self.base_url + self.ACTION_PATH,
            data=json.dumps(request_kwargs, cls=CartaEncoder),
            headers=headers,
            timeout=timeout,
        )
        if response.status_code != 200:
            known = KNOWN_ERRORS.get(response.status_code, "Unknown error.")
            raise CartaRequestFailed(
                f"failed with status {response.status_code}. {known.format(session_id)}"
            )
        data = response.json()
        if not data["success"]:
            raise CartaActionFailed(data.get("message", "No error message received."))
        if "response" not in data:
            assert not response_expected, "expected a response, but did not receive one"
            return None
        return data["response"]
