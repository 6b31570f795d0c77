"""``POST /hub/api/carta-hub/job-log``: a Slurm job sends the Hub the end of its log.

On the slurmrestd path the Hub reads no files as the student (no sudo, maybe no shared file
system), so the job script posts its log's last lines when it exits (:func:`report_command`),
with the server's own token: the Hub keeps them on the spawner whose token it is, and shows
them when the job ended before CARTA was ready.
"""

import json
import shlex

from jupyterhub.apihandlers import APIHandler
from jupyterhub.utils import url_path_join
from tornado import web

from carta_hub.hub.slurm.extend import is_server_token

PATH = "api/carta-hub/job-log"
MAX_BYTES = 16384  # what a job may send; the Hub keeps the last lines of it


class JobLogHandler(APIHandler):
    """Owner-only: the token must be the api_token of one of the caller's servers."""

    @web.authenticated
    def post(self) -> None:
        body = self.request.body
        if len(body) > MAX_BYTES:
            raise web.HTTPError(413, f"At most {MAX_BYTES} bytes of log are accepted here.")
        token = self.get_auth_token()
        for spawner in self.current_user.spawners.values():
            if hasattr(spawner, "job_log") and is_server_token(spawner, token):
                spawner.job_log = body.decode(errors="replace")
                self.set_status(201)
                self.finish(json.dumps({"message": "log kept"}))
                return
        raise web.HTTPError(404, "No Slurm server of yours uses this token.")


def handlers(hub_prefix: str) -> list[tuple]:
    return [(url_path_join(hub_prefix, PATH), JobLogHandler)]


def report_command(lines: int) -> str:
    """A bash ``trap`` for the job script: at exit, post the last ``lines`` of its log
    (``$node_log`` or ``$log``) with curl. The token goes through a pipe, never argv."""
    post = (
        f'tail -n {int(lines)} -- "${{node_log:-$log}}" | tail -c {MAX_BYTES} | '
        "curl -sS --max-time 10 --config <(printf 'header = \"Authorization: token %s\"\\n' "
        '"$JUPYTERHUB_API_TOKEN") -H "Content-Type: text/plain" --data-binary @- '
        f'"$JUPYTERHUB_API_URL/{PATH.removeprefix("api/")}" >/dev/null || true'
    )
    return f"trap {shlex.quote(post)} EXIT"
