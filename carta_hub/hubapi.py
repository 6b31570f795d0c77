"""POSTs from a single-user server to the Hub's API, with the server's own token."""

import json
import os

from tornado import httpclient


async def post(url, body):
    """POST ``body`` as JSON to ``url`` (a Hub API URL); raises on failure."""
    await httpclient.AsyncHTTPClient().fetch(
        url, method="POST", body=json.dumps(body),
        headers={"Authorization": f"token {os.environ.get('JUPYTERHUB_API_TOKEN', '')}",
                 "Content-Type": "application/json"},
    )
