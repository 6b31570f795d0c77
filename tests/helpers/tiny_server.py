"""A server that only reports its port to batchspawner's API and answers 200: what a job
costs the Hub without CARTA (tests/test_slurm_scale.py, benchmarks/slurm_scale.py)."""

TINY = """\
import json, os, urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer


class Answer(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"tiny server")

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Answer)
request = urllib.request.Request(
    os.environ["JUPYTERHUB_API_URL"] + "/batchspawner", method="POST",
    data=json.dumps({"port": server.server_address[1]}).encode(),
    headers={"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"],
             "Content-Type": "application/json"})
urllib.request.urlopen(request).close()
server.serve_forever()
"""
