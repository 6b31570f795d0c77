"""carta/token.py: a backend token is a string with no further meaning."""


class BackendToken:
    def __init__(self, string):
        self.string = string
