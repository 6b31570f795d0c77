"""``carta-standin``: a STAND-IN for ``carta_backend`` 5.x (ICD 30), NOT CARTA.

It takes carta_backend's command line, config files, token, startup log lines, exit codes,
timeouts and HTTP/websocket behaviour, lists real folders to the real frontend, but cannot
open images. For tests and demos where CARTA itself cannot be installed.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import uuid

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from carta_standin import log
from carta_standin.database import ConfigStore
from carta_standin.files import folder_image_type
from carta_standin.http import Context, frontend_found, make_app
from carta_standin.icd import FileType
from carta_standin.lifecycle import Lifecycle
from carta_standin.session import platform_strings

VERSION = "5.1.0 (carta-standin)"
DEFAULT_PORT, PORT_TRIALS = 3002, 100
PREFIX_CHARS = re.compile(r"[0-9A-Za-z+/@_-]*")
SYSTEM_CONFIG = "/etc/carta/backend.json"
BANNER = (
    "carta-standin: this is a STAND-IN for carta_backend (CARTA 5.x, ICD 30) for tests "
    "and demos, NOT CARTA. It lists folders but cannot open images."
)

# Options as carta_backend's: long name -> (kind, default, short name). Kinds: bool (a flag),
# int, str, ports ("N" or "N,M").
OPTIONS = {
    "version": (bool, False, "v"),
    "verbosity": (int, 4, None),
    "no_log": (bool, False, None),
    "log_performance": (bool, False, None),
    "log_protocol_messages": (bool, False, None),
    "no_frontend": (bool, False, None),
    "no_database": (bool, False, None),
    "no_browser": (bool, False, None),
    "browser": (str, None, None),
    "host": (str, "0.0.0.0", None),
    "port": ("ports", None, "p"),
    "omp_threads": (int, -1, "t"),
    "top_level_folder": (str, None, None),
    "frontend_folder": (str, None, None),
    "exit_timeout": (int, -1, None),
    "initial_timeout": (int, -1, None),
    "idle_timeout": (int, -1, None),
    "read_only_mode": (bool, False, None),
    "enable_scripting": (bool, False, None),
    "no_user_config": (bool, False, None),
    "no_system_config": (bool, False, None),
    "reserved_memory": (int, 0, "m"),
    "http_url_prefix": (str, "", None),
    "debug_no_auth": (bool, False, None),
    "no_runtime_config": (bool, False, None),
    "controller_deployment": (bool, False, None),
    # deprecated in carta_backend, still accepted
    "threads": (int, None, None),
    "base": (str, None, None),
    "root": (str, None, None),
    "no_http": (bool, False, None),
}


# Keys a backend.json may set, as carta_backend's (src/Main/ProgramSettings.h, the int, bool,
# string and port key maps): not debug_no_auth; starting_folder is a key without a flag.
CONFIG_KEYS = {
    "verbosity",
    "omp_threads",
    "exit_timeout",
    "initial_timeout",
    "idle_timeout",
    "no_log",
    "log_performance",
    "log_protocol_messages",
    "no_http",
    "no_browser",
    "read_only_mode",
    "enable_scripting",
    "no_frontend",
    "no_database",
    "no_runtime_config",
    "host",
    "top_level_folder",
    "starting_folder",
    "frontend_folder",
    "browser",
    "http_url_prefix",
    "port",
}


class StartupError(Exception):
    """Logged as critical; the process exits 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise StartupError(message)


def port_range(text):
    ports = [int(p) for p in str(text).split(",")]
    if not 1 <= len(ports) <= 2:
        raise ValueError(text)
    return ports


def build_parser():
    parser = _Parser(prog="carta-standin", allow_abbrev=False, description=BANNER)
    for name, (kind, default, short) in OPTIONS.items():
        flags = [f"-{short}"] if short else []
        flags.append(f"--{name}")
        if kind is bool:
            parser.add_argument(*flags, action="store_true", default=default)
        else:
            parser.add_argument(
                *flags, type=port_range if kind == "ports" else kind, default=default
            )
    parser.add_argument("files", nargs="*", help="starting folder (the first existing folder)")
    return parser


def _config_file_settings(path):
    """Valid settings of one backend.json (keys are long option names), warning about others."""
    try:
        with open(path, encoding="utf-8") as f:
            settings = json.load(f)
    except (OSError, ValueError) as e:
        log.warning(f"Error reading config file {path}: {e}")
        return {}
    valid = {}
    for key, value in settings.items() if isinstance(settings, dict) else ():
        if key not in CONFIG_KEYS:
            continue  # carta_backend ignores unknown keys
        kind = str if key == "starting_folder" else OPTIONS[key][0]
        try:
            if kind == "ports":
                value = port_range(",".join(map(str, value)) if isinstance(value, list) else value)
            elif type(value) is not kind:
                raise ValueError(value)
            valid[key] = value
        except ValueError:
            log.warning(
                f"Problem in config file {path} at key {key}: current value is "
                f"{json.dumps(value)}, which is not valid for this option."
            )
    return valid


def parse_settings(argv, home):
    """Command line over ~/.carta/backend.json over /etc/carta/backend.json, as
    carta_backend's ProgramSettings::ApplyJSONSettings (src/Main/ProgramSettings.cc); a
    ``starting_folder`` key wins even over the positional folder (no flag sets it)."""
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    defaults = {}
    if not args.no_system_config and os.path.exists(SYSTEM_CONFIG):
        defaults.update(_config_file_settings(SYSTEM_CONFIG))
    user_config = os.path.join(home, ".carta", "backend.json")
    if not args.no_user_config and os.path.exists(user_config):
        defaults.update(_config_file_settings(user_config))
    starting_folder = defaults.pop("starting_folder", None)
    if defaults:
        parser.set_defaults(**defaults)
        args = parser.parse_intermixed_args(argv)
    args.starting_folder = starting_folder
    if args.no_http:
        args.no_frontend = args.no_database = True
    return args


def url_prefix(prefix):
    """``/prefix`` for a valid --http_url_prefix, "" for none or an invalid one."""
    prefix = prefix.strip("/")
    if not PREFIX_CHARS.fullmatch(prefix):
        log.warning(f"Ignoring invalid custom HTTP URL prefix {prefix}")
        return ""
    return f"/{prefix}" if prefix else ""


def _usable_folder(path):
    return os.path.isdir(path) and os.access(path, os.R_OK | os.X_OK)


def _positional_folder(args):
    """The starting folder as carta_backend takes it from its positional arguments
    (src/Main/ProgramSettings.cc, ApplyCommandLineSettings): the first existing folder that is
    not an image; a path that does not exist is skipped, so without a folder it stays
    ``--base`` or the working folder."""
    for path in args.files:
        if os.path.isdir(path) and folder_image_type(path) == FileType.UNKNOWN:
            return path
        if os.path.isdir(path) or os.path.isfile(path):
            log.warning(f"carta-standin cannot open files; ignoring {path}")
        elif os.path.exists(path):
            break  # neither a folder nor a regular file: carta_backend stops looking
    return args.base or "."


def check_folders(args):
    """``(top level, starting)`` folders resolved like carta_backend (src/Util/Casacore.cc,
    CheckFolderPaths: symbolic links resolved before the subfolder test), or StartupError."""
    top = args.top_level_folder or args.root or "/"
    if not _usable_folder(top):
        raise StartupError(
            "Invalid top level directory, does not exist or is not a readable "
            "directory. Exiting carta."
        )
    top = os.path.realpath(top)
    starting = args.starting_folder or _positional_folder(args)
    if _usable_folder(starting):
        starting = os.path.realpath(starting)
    else:
        log.warning("Invalid starting directory, using the provided top level directory instead.")
        starting = top
    if starting != top and not starting.startswith(top.rstrip("/") + "/"):
        raise StartupError(
            f"Starting {starting} must be a subdirectory of top level {top}. Exiting carta."
        )
    return top, starting


def frontend_folder(args):
    """The folder to serve the frontend from (None with --no_frontend), logging as
    carta_backend: by default ``<executable's folder>/../share/carta/frontend`` (src/Main/Main.cc,
    main, with the executable's resolved path); a folder without index.html is logged as
    missing (src/HttpServer/HttpServer.cc, HttpServer) and served all the same: 404s."""
    if args.no_frontend:
        return None
    exe_dir = os.path.dirname(os.path.realpath(sys.argv[0]))
    folder = args.frontend_folder or os.path.join(exe_dir, "../share/carta/frontend")
    if frontend_found(folder):
        log.info(f"Serving CARTA frontend from {os.path.realpath(folder)}")
    else:
        log.warning(f"Could not find CARTA frontend files in directory {folder}.")
        log.warning(
            "Failed to host the CARTA frontend. Please specify a custom location "
            "using the frontend_folder argument."
        )
    return os.path.realpath(folder)


def listen(server, host, ports):
    """Bind like carta_backend: one given port, or the first free one of a range.

    Returns ``(port, bound)``; like carta_backend, ``port`` is reported even when nothing
    could be bound.
    """
    if ports and len(ports) == 1:
        try:
            server.add_sockets(bind_sockets(ports[0], address=host))
            return ports[0], True
        except OSError:
            log.error(f"Could not listen on port {ports[0]}!\n")
            return ports[0], False
    start = ports[0] if ports else DEFAULT_PORT
    end = (65535 if ports[1] == -1 else ports[1]) if ports else start + PORT_TRIALS
    for port in range(start, end + 1):
        try:
            server.add_sockets(bind_sockets(port, address=host))
            return port, True
        except OSError:
            log.warning(f"Port {port} is already in use. Trying next port.")
    log.error(f"Unable to listen on the port range {start}-{end}!")
    return end + 1, False


def log_startup(args, ctx, port):
    threads = (
        f", and {args.omp_threads} OpenMP worker threads."
        if args.omp_threads > 0
        else ". The number of OpenMP worker threads will be handled automatically."
    )
    log.info(
        f"Listening on port {port} with top level folder {ctx.top_level_folder}, "
        f"starting folder {ctx.starting_folder}{threads}"
    )
    host = args.host
    if host in ("", "0.0.0.0"):
        host = os.environ.get("SERVER_IP", "localhost")
    base_url = f"http://{host}:{port}{ctx.url_prefix}"
    if ctx.frontend_folder and frontend_found(ctx.frontend_folder):
        url = f"{base_url}/?token={ctx.token}" if ctx.token else base_url
        log.info(f"CARTA is accessible at {url}")
    if ctx.database:
        log.debug(f"The CARTA database API is accessible at {base_url}/api/database/...")


def build_context(args, home, stop):
    top, starting = check_folders(args)
    # Like carta_backend, a set but empty CARTA_AUTH_TOKEN means no token is required.
    token = "" if args.debug_no_auth else os.environ.get("CARTA_AUTH_TOKEN", str(uuid.uuid4()))
    return Context(
        top_level_folder=top,
        starting_folder=starting,
        token=token,
        url_prefix=url_prefix(args.http_url_prefix),
        frontend_folder=frontend_folder(args),
        database=not args.no_database,
        runtime_config=not args.no_runtime_config,
        enable_scripting=args.enable_scripting,
        read_only=args.read_only_mode,
        idle_timeout=args.idle_timeout,
        store=ConfigStore(os.path.join(home, ".carta", "config"), args.read_only_mode),
        lifecycle=Lifecycle(args.exit_timeout, args.initial_timeout, stop),
        platform_strings=platform_strings(args.controller_deployment),
    )


async def serve(args, home):
    """Run until a timeout or SIGINT ends the process; returns the exit code."""
    stopped = asyncio.Event()
    ctx = build_context(args, home, stopped.set)
    server = HTTPServer(make_app(ctx))
    port, bound = listen(server, args.host, args.port)
    log_startup(args, ctx, port)
    if not bound:
        return 0  # carta_backend's event loop has nothing to do and returns
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, _on_sigint, stopped)
    ctx.lifecycle.start()
    await stopped.wait()
    server.stop()
    return 0


def _on_sigint(stopped):
    log.info("Exiting backend.")
    stopped.set()


def main(argv=None):
    sys.stdout.reconfigure(line_buffering=True)
    print(BANNER, file=sys.stderr, flush=True)
    try:
        home = os.environ.get("HOME")
        if not home:
            raise StartupError("The HOME environment variable is not set. Exiting carta.")
        args = parse_settings(argv, home)
        if args.version:
            print(VERSION)
            return 0
        log.configure(
            args.verbosity,
            None if args.no_log else os.path.join(home, ".carta", "log", "carta.log"),
        )
        log.info(f"{os.path.realpath(sys.argv[0])}: Version {VERSION}")
        return asyncio.run(serve(args, home))
    except (StartupError, log.LogFileError) as e:
        log.critical(str(e))
        return 1
