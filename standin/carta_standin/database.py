"""carta_backend's file "database": preferences, layouts, snippets and workspaces as JSON
files under ``~/.carta/config/``, with the status codes and JSON bodies of its HttpServer.

Every method returns ``(HTTP status, body)``; body is a dict (sent as JSON) or None (empty).
Differences from carta_backend: no JSON-schema validation, no site-wide snippets.

Object names are used as given, as carta_backend does (src/HttpServer/HttpServer.cc:
GetExistingObject, WriteObjectFile, ClearObjectFromString build
``<config>/<kind>s/<name>.json`` from the URL's or the JSON body's name, unchecked): a name
such as ``../../x`` reads, writes or deletes outside the config folder. carta-hub's proxy
refuses such names (:func:`carta_hub.server.proxy.check_object_name`).
"""

import json
import os
import shutil
import sys

from carta_standin import log

SUCCESS = {"success": True}
OBJECT_TYPES = ("layout", "snippet", "workspace")
SCHEMAS = {
    name: f"https://cartavis.org/schemas/{name}_schema_{version}.json"
    for name, version in (("preferences", 2), ("layout", 2), ("snippet", 1), ("workspace", 1))
}


def _parse(body):
    """The request body as JSON, or None when malformed."""
    try:
        return json.loads(body or b"null")
    except ValueError as e:
        log.warning(str(e))
        return None


def _write_json(path, obj):
    """False when the folder cannot be created; True otherwise, even when the file could not be
    opened or written: carta_backend's WritePreferencesFile and WriteObjectFile
    (src/HttpServer/HttpServer.cc) catch the folder's filesystem_error, but std::ofstream
    fails silently, so nothing is kept (on a full disk, an empty file)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as e:
        log.warning(
            f"filesystem error: cannot create directories: {e.strerror} [{os.path.dirname(path)}]"
        )
        return False
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=4, sort_keys=True, ensure_ascii=False)
    except OSError:
        pass
    return True


def _exists(path):
    """std::filesystem::exists: False when ``path`` is not found; any other error escapes
    carta_backend's GetExistingPreferences (HttpServer.cc catches json errors only) and ends
    the process through std::terminate, as here."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        print(
            "terminate called after throwing an instance of "
            "'std::filesystem::__cxx11::filesystem_error'\n"
            f"  what():  filesystem error: status: {e.strerror} [{path}]",
            file=sys.stderr,
            flush=True,
        )
        os.abort()
    return True


class ConfigStore:
    def __init__(self, config_folder, read_only=False):
        self.folder = config_folder
        self.read_only = read_only
        self.preferences_path = os.path.join(config_folder, "preferences.json")

    # Preferences

    def existing_preferences(self):
        """Stored preferences; ``{"version": 2}`` when none, ``{}`` when the file is malformed."""
        if not _exists(self.preferences_path):
            return {"version": 2}
        try:
            with open(self.preferences_path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            text = "-"  # std::ifstream reads nothing: a JSON parse error
        if not text:
            return {"version": 2}
        try:
            obj = json.loads(text)
        except ValueError as e:
            log.warning(f"Preferences file is malformed: {e}")
            return {}
        return obj if isinstance(obj, dict) else {}

    def get_preferences(self):
        existing = self.existing_preferences()
        if not existing:
            return 500, None
        return 200, {"success": True, "preferences": existing}

    def set_preferences(self, body):
        """Merge a JSON object of preferences into the stored ones."""
        if self.read_only:
            log.warning("Writing preferences file is not allowed in read-only mode")
            return 400, None
        update = _parse(body)
        if not isinstance(update, dict):
            return 400, None
        update.update({"$schema": SCHEMAS["preferences"], "version": 2})
        existing = self.existing_preferences()
        malformed = not existing
        existing.update({"$schema": SCHEMAS["preferences"], "version": 2})
        changed = {k: v for k, v in update.items() if existing.get(k, object()) != v}
        if changed:
            if malformed:
                self._backup_preferences()
            existing.update(changed)
            if not _write_json(self.preferences_path, existing):
                return 500, None
            log.debug(f"Updated {len(changed)} preferences")
        return 200, SUCCESS

    def clear_preferences(self, body):
        """Remove the preferences named in ``{"keys": [...]}``."""
        if self.read_only:
            log.warning("Writing preferences file is not allowed in read-only mode")
            return 400, None
        data = _parse(body)
        keys = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(keys, list) or not keys:
            return 400, None
        existing = self.existing_preferences()
        if not existing:
            return 500, None
        removed = [k for k in keys if isinstance(k, str) and k in existing]
        if removed:
            for key in removed:
                existing.pop(key, None)
            existing.update({"$schema": SCHEMAS["preferences"], "version": 2})
            if not _write_json(self.preferences_path, existing):
                return 500, None
            log.debug(f"Cleared {len(removed)} preferences")
        return 200, SUCCESS

    def _backup_preferences(self):
        backup = self.preferences_path + ".bak"
        log.warning(
            "Preferences file is malformed. All preferences will be reset to defaults "
            "before update. Attempting to back up preferences file."
        )
        try:
            shutil.copyfile(self.preferences_path, backup)
            log.info(f"Backed up preferences file to {backup}.")
        except OSError as e:
            log.warning(f"Could not back up preferences file: {e}")

    # Layouts, snippets, workspaces

    def _object_path(self, kind, name):
        # carta_backend opens the path as a C string: a NUL in the name ends the path there
        return os.path.join(self.folder, f"{kind}s", f"{name}.json").split("\0", 1)[0]

    def _read_object(self, path, kind):
        try:
            with open(path, encoding="utf-8") as f:
                obj = json.load(f)
        except (OSError, ValueError) as e:
            log.warning(f"{kind.title()} file {path} is malformed: {e}")
            return {}
        return obj if isinstance(obj, dict) else {}

    def _names(self, kind):
        folder = os.path.join(self.folder, f"{kind}s")
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return []
        return [
            n[:-5]
            for n in names
            if n.endswith(".json") and len(n) > 5 and os.path.isfile(os.path.join(folder, n))
        ]

    def list_objects(self, kind):
        """``{"success": true, "<kind>s": [{"name", "date"}...]}`` sorted by name."""
        entries = [
            {"name": name, "date": int(os.stat(self._object_path(kind, name)).st_mtime)}
            for name in self._names(kind)
        ]
        return 200, {"success": True, f"{kind}s": entries}

    def get_objects(self, kind):
        """``{"success": true, "<kind>s": {name: object}}`` of all valid stored objects."""
        objects = {}
        for name in self._names(kind):
            obj = self._read_object(self._object_path(kind, name), kind)
            if obj:
                objects[name] = obj
        return 200, {"success": True, f"{kind}s": objects}

    def get_object(self, kind, name):
        if not name or not os.path.isfile(self._object_path(kind, name)):
            return 404, None
        obj = self._read_object(self._object_path(kind, name), kind)
        if not obj:
            return 404, None
        obj.setdefault("name", name)
        return 200, {"success": True, kind: obj}

    def set_object(self, kind, body):
        """Store ``{"<kind>Name": name, "<kind>": {...}}``."""
        if self.read_only:
            log.warning(f"Writing {kind} file is not allowed in read-only mode")
            return 400, None
        data = _parse(body)
        if not isinstance(data, dict):
            return 400, None
        name, obj = data.get(f"{kind}Name"), data.get(kind)
        if not isinstance(name, str) or not name or not isinstance(obj, dict):
            return 400, None
        obj["$schema"] = SCHEMAS[kind]
        if not _write_json(self._object_path(kind, name), obj):
            return 400, None
        return 200, SUCCESS

    def clear_object(self, kind, body):
        """Delete the object named in ``{"<kind>Name": name}``."""
        if self.read_only:
            log.warning(f"Writing {kind} file is not allowed in read-only mode")
            return 400, None
        data = _parse(body)
        name = data.get(f"{kind}Name") if isinstance(data, dict) else None
        if (
            not isinstance(name, str)
            or not name
            or not os.path.isfile(self._object_path(kind, name))
        ):
            return 400, None
        os.remove(self._object_path(kind, name))
        return 200, SUCCESS
