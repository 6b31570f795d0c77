"""carta/util.py"""

import json


class CartaRequestFailed(Exception):
    pass


class CartaActionFailed(Exception):
    pass


class Macro:
    def __init__(self, target, variable):
        self.target, self.variable = target, variable

    def json(self):
        return {"macroTarget": self.target, "macroVariable": self.variable}


class CartaEncoder(json.JSONEncoder):
    def default(self, obj):
        if hasattr(obj, "json") and callable(obj.json):
            return obj.json()
        return json.JSONEncoder.default(self, obj)


def split_action_path(path):
    parts = path.split(".")
    return ".".join(parts[:-1]), parts[-1]
