"""What every carta-hub spawner shares: which single-user server to run, and the operator's
``c.CartaBackend`` settings passed on to it (in its environment: the server's command line
holds no settings)."""

import asyncio
import functools
import os
import sysconfig

from jupyterhub.spawner import LocalProcessSpawner
from tornado import web
from traitlets import Enum, default, observe, validate
from traitlets.config import Config, Configurable

from carta_hub import usercontext
from carta_hub.backend import CartaBackend, server_environment
from carta_hub.hub import exitwatch
from carta_hub.hub.identity import Identity, IdentityResolver
from carta_hub.hub.storage import CartaStorage
from carta_hub.usercontext import UserContext

COMMANDS = {"carta": ["carta-hub-singleuser"], "lab": ["jupyterhub-singleuser"]}


class CartaSpawnerMixin(Configurable):
    """Mix into a Spawner (before it in the bases) to run CARTA."""

    carta_mode = Enum(
        list(COMMANDS),
        default_value="carta",
        help="""'carta': a CARTA-only server (CARTA at /user/NAME/);
        'lab': JupyterLab with a CARTA launcher tile (CARTA at /user/NAME/carta/).""",
    ).tag(config=True)

    @classmethod
    def check_hub(cls, app) -> None:
        """Checks made once at Hub start (``app``: the JupyterHub, its handlers built); an
        error stops the Hub. Here: the user templates of ``app.config``."""
        check_user_templates(app.config)

    def carta_command(self, mode: str) -> list[str]:
        """The server command of ``mode``: a name looked up on the PATH where the server runs
        (a pod's image, a Slurm job)."""
        return list(COMMANDS[mode])

    def _stock_commands(self) -> list[list[str]]:
        return [c for mode in COMMANDS for c in (COMMANDS[mode], self.carta_command(mode))]

    @default("cmd")
    def _carta_cmd(self):
        return self.carta_command(self.carta_mode)

    @validate("cmd")
    def _stock_cmd_follows_mode(self, proposal):
        # a stock command (e.g. the z2jh chart's singleuser.cmd) means "this mode's server"
        if proposal.value in self._stock_commands():
            return self.carta_command(self.carta_mode)
        return proposal.value

    @default("http_timeout")
    def _carta_http_timeout(self):
        # a CARTA-only server answers once its backend listens (CartaBackend.start_timeout)
        return max(30, CartaBackend(parent=self).start_timeout + 10)

    @observe("carta_mode")
    def _mode_changed(self, change):
        if self.cmd in (COMMANDS[change.old], self.carta_command(change.old)):
            self.cmd = self.carta_command(change.new)

    #: The user of the current spawn, set by spawners that resolve an identity (Kubernetes,
    #: Slurm); None: the server takes its own process's user (the local spawner)
    carta_user: UserContext | None = None

    async def resolve_user(self) -> Identity:
        """This spawn's user, resolved once: its POSIX identity, and :attr:`carta_user` for
        every template (storage, backend folders, the job script)."""
        ident = await IdentityResolver(parent=self).resolve(self.user)
        self.carta_user = ident.context(self.user.name)
        return ident

    def carta_server_config(self) -> dict[str, dict]:
        """Settings for the user's server, ``{section: {setting: value}}``: the operator's
        ``c.CartaBackend``. Subclasses add their own."""
        return {"CartaBackend": CartaBackend(parent=self).settings()}

    def get_env(self) -> dict:
        env = super().get_env()
        env.update(server_environment(self.carta_server_config(), self.carta_user))
        return env

    def fill_setting(self, name: str, fields: dict[str, str]) -> str:
        """This spawner's template setting ``name`` filled with the user ``fields``."""
        return usercontext.fill(getattr(self, name), fields, f"c.{type(self).__name__}.{name}")

    _exit_watch = None

    def start_polling(self) -> None:
        """The Hub's periodic poll and, for a local process, a poll as soon as it ends: the
        Hub then removes its route at once, before another user can bind the freed port."""
        super().start_polling()
        if isinstance(self, LocalProcessSpawner) and self.pid:
            self._exit_watch = exitwatch.when_ended(self.pid, self._process_ended)

    def stop_polling(self) -> None:
        super().stop_polling()
        cancel, self._exit_watch = self._exit_watch, None
        if cancel:
            cancel()

    def _process_ended(self):
        if not self.pending:  # a spawn or stop in progress handles the end itself
            asyncio.ensure_future(self.poll_and_notify())


class CARTALocalSpawner(CartaSpawnerMixin, LocalProcessSpawner):
    """CARTA for users of the Hub's own machine (the local demo; small single-host sites)."""

    def carta_command(self, mode: str) -> list[str]:
        """carta-hub's own script installed beside the Hub's, when it is there: the server
        then starts whatever the Hub's PATH (a root shell's may hold folders that users
        cannot enter, or not the venv)."""
        cmd = super().carta_command(mode)
        # where pip put this interpreter's scripts: the venv's bin/ for a venv
        beside = os.path.join(sysconfig.get_path("scripts"), cmd[0])
        if os.access(beside, os.X_OK):
            cmd[0] = beside
        return cmd

    async def start(self) -> tuple[str, int]:
        try:
            return await super().start()
        except (FileNotFoundError, PermissionError) as e:
            if e.filename != self.cmd[0]:
                raise
            raise CommandError(self, e) from None


class CommandError(web.HTTPError):
    """The server command cannot be run as the user: said on the spawn page, with the fix."""

    def __init__(self, spawner: LocalProcessSpawner, error: OSError):
        command = spawner.cmd[0]
        where = "" if os.path.isabs(command) else ", looked up on the Hub's PATH"
        message = (
            f"The server command {command} cannot be run as {spawner.user.name} "
            f"({error.strerror}{where}). Set c.{type(spawner).__name__}.cmd to the absolute "
            f"path of {os.path.basename(command)} in an environment every user can "
            "read and execute."
        )
        super().__init__(500, message)
        self.jupyterhub_message = message


def check_user_templates(config: Config) -> None:
    """Build the settings holding user templates from ``config``: a template with a field
    that does not exist raises a TemplateError naming the setting and the fields."""
    CartaBackend(config=config)
    CartaStorage(config=config)
    IdentityResolver(config=config)


def _check_at_hub_start() -> None:
    """JupyterHub makes a spawner only when someone spawns, and has no hook for checking
    settings at start: run the spawner class's ``check_hub`` once the Hub has built its
    handlers (its configuration is loaded then), so that a wrong setting stops the Hub
    instead of failing every spawn."""
    from jupyterhub.app import JupyterHub

    init_handlers = JupyterHub.init_handlers

    @functools.wraps(init_handlers)
    def checked(app):
        init_handlers(app)
        if issubclass(app.spawner_class, CartaSpawnerMixin):
            app.spawner_class.check_hub(app)

    JupyterHub.init_handlers = checked


_check_at_hub_start()
