"""carta-standin: a stand-in for ``carta_backend`` 5.x (ICD 30) for tests and demos, NOT CARTA.

Modules: :mod:`.cli` (command line, startup, ports), :mod:`.http` (HTTP routes),
:mod:`.session` (websocket ICD sessions), :mod:`.icd` (ICD 30 messages, reusable as a client),
:mod:`.files` (folder listings), :mod:`.database` (preferences, layouts, snippets, workspaces),
:mod:`.auth` (token rule), :mod:`.lifecycle` (exit timers), :mod:`.log` (CARTA log lines).
"""
