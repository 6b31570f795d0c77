"""Log lines in carta_backend's spdlog format: ``[UTC time] [CARTA] [level] text``
(``CARTA_LOGGER_PATTERN``; in the file ``CARTA_FILE_LOGGER_PATTERN``, without ``[CARTA]``).

As carta_backend's ``carta_sink`` (src/Logger/Logger.h): lines below error level go to stdout,
error and critical to stderr, the level coloured with ANSI codes even into a pipe, every line
flushed at once; unless disabled, also to ``~/.carta/log/carta.log`` without colours.
``--verbosity`` filters as ``InitLogger`` (src/Logger/Logger.cc) sets the spdlog level: below 4
no info line is printed, not even "Listening on port" or "CARTA is accessible at".
Before ``configure`` (a bad command line, a log file that cannot be opened) lines come from
spdlog's default logger instead: ``[local time] [level] text`` on stdout, at level info.
"""

import datetime
import os
import sys

# CARTA's --verbosity: 0 off, 1 critical, 2 error, 3 warning, 4 info, 5 debug.
LEVELS = {"critical": 1, "error": 2, "warning": 3, "info": 4, "debug": 5}
COLOURS = {
    "critical": "\033[1m\033[41m",
    "error": "\033[31m\033[1m",
    "warning": "\033[33m\033[1m",
    "info": "\033[32m",
    "debug": "\033[36m",
}
RESET = "\033[m"

_state = {"verbosity": 4, "file": None, "configured": False}


class LogFileError(Exception):
    """The log file cannot be opened: carta_backend's rotating file sink throws in
    ``InitLogger`` (src/Logger/Logger.cc), ``main`` logs it as critical and exits 1 (Main.cc)."""


def configure(verbosity, log_file=None):
    """Set the verbosity and open ``log_file`` for appending (None: no file)."""
    if log_file:
        try:
            os.makedirs(os.path.dirname(log_file), exist_ok=True)
        except OSError:
            pass  # like spdlog: only the file's opening counts
        try:
            _state["file"] = open(log_file, "a", buffering=1, encoding="utf-8")
        except OSError as e:
            raise LogFileError(
                f"Failed opening file {log_file} for writing: {e.strerror}"
            ) from None
    _state.update(verbosity=verbosity, configured=True)


def log(level, text):
    if LEVELS[level] > _state["verbosity"]:
        return
    if not _state["configured"]:  # spdlog's default logger
        now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        print(f"[{now}] [{level}] {text}", flush=True)
        return
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    stream = sys.stderr if LEVELS[level] <= LEVELS["error"] else sys.stdout
    stream.write(f"[{now}Z] [CARTA] [{COLOURS[level]}{level}{RESET}] {text}\n")
    stream.flush()
    if _state["file"]:
        _state["file"].write(f"[{now}Z] [{level}] {text}\n")


def debug(text):
    log("debug", text)


def info(text):
    log("info", text)


def warning(text):
    log("warning", text)


def error(text):
    log("error", text)


def critical(text):
    log("critical", text)
