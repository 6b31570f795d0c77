"""What a student sees when CARTA cannot start: a clear page naming the setting to fix,
and the Hub keeps running."""

from helpers.client import open_carta
from helpers.hub import SAME_USER_CARTA


def test_missing_backend_names_the_setting(hub_factory):
    hub = hub_factory(SAME_USER_CARTA + """
c.CartaBackend.executable = "/nonexistent/carta_backend"
""")
    hub.start_server("alice")
    page = open_carta(hub, hub.login("alice"), "alice")
    assert page.status_code == 503
    assert "c.CartaBackend.executable" in page.text
    assert "/nonexistent/carta_backend" in page.text
    assert hub.api("GET", "/").status_code == 200
