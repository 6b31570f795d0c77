"""carta/session.py: interacting with an open CARTA session, and its file browsing."""

import posixpath

from .protocol import Protocol
from .util import Macro, split_action_path


class Session:
    def __init__(self, session_id, protocol):
        self.session_id = session_id
        self._protocol = protocol

    @classmethod
    def interact(cls, frontend_url, session_id, token=None):
        return cls(int(session_id), Protocol(frontend_url, token))

    def call_action(self, path, *args, **kwargs):
        return self._protocol.request_scripting_action(self.session_id, path, *args, **kwargs)

    def get_value(self, path, return_path=None):
        path, parameter = split_action_path(path)
        kwargs = {"response_expected": True}
        if return_path is not None:
            kwargs["return_path"] = return_path
        return self.call_action("fetchParameter", Macro(path, parameter), **kwargs)

    def resolve_file_path(self, path):
        return posixpath.normpath(posixpath.join(self.pwd(), path))

    def pwd(self):
        self.call_action(
            "fileBrowserStore.getFileList", Macro("fileBrowserStore", "startingDirectory")
        )
        directory = self.get_value("fileBrowserStore.fileList.directory")
        return f"/{directory}".rstrip("/")

    def ls(self):
        self.call_action("fileBrowserStore.getFileList", self.pwd())
        file_list = self.get_value("fileBrowserStore.fileList")
        items = []
        if "files" in file_list:
            items.extend([f["name"] for f in file_list["files"]])
        if "subdirectories" in file_list:
            items.extend([f"{d['name']}/" for d in file_list["subdirectories"]])
        return sorted(items)

    def cd(self, path):
        self.call_action("fileBrowserStore.saveStartingDirectory", self.resolve_file_path(path))
