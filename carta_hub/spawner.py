"""What every carta-hub spawner shares: which single-user server to run, and the operator's
``c.CartaBackend`` settings passed on to it."""

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Enum, default, observe, validate
from traitlets.config import Configurable

from .backend import CartaBackend

COMMANDS = {"carta": ["carta-hub-singleuser"], "lab": ["jupyterhub-singleuser"]}


class CartaSpawnerMixin(Configurable):
    """Mix into a Spawner (before it in the bases) to run CARTA."""

    carta_mode = Enum(
        list(COMMANDS),
        default_value="carta",
        help="""'carta': a CARTA-only server (CARTA at /user/NAME/);
        'lab': JupyterLab with a CARTA launcher tile (CARTA at /user/NAME/carta/).""",
    ).tag(config=True)

    @default("cmd")
    def _carta_cmd(self):
        return list(COMMANDS[self.carta_mode])

    @validate("cmd")
    def _stock_cmd_follows_mode(self, proposal):
        # a stock command (e.g. the z2jh chart's singleuser.cmd) means "this mode's server"
        if proposal.value in COMMANDS.values():
            return list(COMMANDS[self.carta_mode])
        return proposal.value

    @default("http_timeout")
    def _carta_http_timeout(self):
        # a CARTA-only server answers once its backend listens (CartaBackend.start_timeout)
        return max(30, CartaBackend(parent=self).start_timeout + 10)

    @observe("carta_mode")
    def _mode_changed(self, change):
        if self.cmd == COMMANDS[change.old]:
            self.cmd = list(COMMANDS[change.new])

    def carta_args(self):
        """``--CartaBackend.x=...`` for the operator's backend settings."""
        return CartaBackend(parent=self).cli_args()

    def get_args(self):
        return super().get_args() + self.carta_args()


class CARTALocalSpawner(CartaSpawnerMixin, LocalProcessSpawner):
    """CARTA for users of the Hub's own machine (the local demo; small single-host sites)."""
