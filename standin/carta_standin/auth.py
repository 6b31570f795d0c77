"""carta_backend's token rule for /api routes and the websocket upgrade."""

import hmac

COOKIE = HEADER = "carta-auth-token"


def offered_tokens(request):
    """Tokens a tornado request carries, in CARTA's order: cookie, ``Authorization: Bearer``,
    ``?token=``, ``carta-auth-token`` header."""
    cookie = request.cookies.get(COOKIE)
    if cookie is not None:
        yield cookie.value
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        yield authorization[len("Bearer ") :]
    for value in request.query_arguments.get("token", [])[:1]:
        yield value.decode("utf-8", "replace")
    if HEADER in request.headers:
        yield request.headers[HEADER]


def authorised(request, token):
    """True when no token is required or any offered token matches (constant-time compare)."""
    if not token:
        return True
    expected = token.encode()
    return any(
        hmac.compare_digest(offered.encode(), expected) for offered in offered_tokens(request)
    )
