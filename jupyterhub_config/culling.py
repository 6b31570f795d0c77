# Ending idle CARTA sessions, and stopping a student's CARTA at logout. Load it from the Hub's
# own config: `load_subconfig("culling.py")`. See docs/idle-culling.md.
#
# "Idle" means the student did nothing in CARTA: an open tab is NOT activity. The Hub cannot
# see the difference (configurable-http-proxy counts CARTA's 5-second PING as traffic), CARTA
# can: with carta-hub-singleuser (carta_mode "carta"),
# 1. CARTA disconnects a tab that sent no request for CARTA_IDLE_TIMEOUT (--idle_timeout);
# 2. CARTA exits CARTA_EXIT_TIMEOUT after its last tab disconnected or closed
#    (--exit_timeout), and the server stops with it; the Hub notices within
#    Spawner.poll_interval and frees the job or pod;
# 3. jupyterhub-idle-culler stops servers with no traffic at all for CARTA_IDLE_TIMEOUT
#    (started but never opened, JupyterLab mode, a hung backend), checking every
#    CARTA_CULL_EVERY.
# A session in use is never ended. An idle one ends within CARTA_IDLE_TIMEOUT +
# CARTA_CULL_EVERY of the student's last action, open tab or not, provided that
# CARTA_EXIT_TIMEOUT + 5 s (one PING) + Spawner.poll_interval <= CARTA_CULL_EVERY.
#
# Site values (environment of the Hub), in seconds:
#   CARTA_IDLE_TIMEOUT  default 86400 (24 h)
#   CARTA_CULL_EVERY    default 600
#   CARTA_EXIT_TIMEOUT  default CARTA_CULL_EVERY / 2: how long a closed tab can be reopened
import os
import sys

idle_timeout = int(os.environ.get("CARTA_IDLE_TIMEOUT", 24 * 3600))
cull_every = int(os.environ.get("CARTA_CULL_EVERY", 600))
exit_timeout = int(os.environ.get("CARTA_EXIT_TIMEOUT", cull_every // 2))

c.CartaBackend.idle_timeout = idle_timeout
c.CartaBackend.exit_timeout = exit_timeout

c.JupyterHub.services.append(
    {
        "name": "idle-culler",
        "command": [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={idle_timeout}",
            f"--cull-every={cull_every}",
        ],
    }
)
c.JupyterHub.load_roles.append(
    {
        "name": "idle-culler",
        "services": ["idle-culler"],
        # what the culler needs to find idle servers and stop them; it never deletes users
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
    }
)

# Logging out of the Hub stops the student's CARTA (set False to keep it running).
c.JupyterHub.shutdown_on_logout = True
