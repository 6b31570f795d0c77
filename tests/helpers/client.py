"""Talk to a user's CARTA through the Hub as the browser would: cookies from the Hub login,
an Origin header, and a websocket through configurable-http-proxy."""

import websockets


def cookie_header(session):
    return "; ".join(f"{c.name}={c.value}" for c in session.cookies)


def open_carta(hub, session, name, path=""):
    """GET the user's CARTA page, following the Hub's OAuth redirects (which set the
    server's login cookie); returns the final response."""
    return session.get(hub.user_url(name, path))


def connect(hub, session, name, path="", **kwargs):
    """A websocket to the user's CARTA (``path`` under the user's prefix) as a browser opens it."""
    url = hub.user_url(name, path).replace("http://", "ws://", 1)
    headers = {"Cookie": cookie_header(session), "Origin": hub.url}
    return websockets.connect(url, additional_headers=headers, max_size=None, **kwargs)
