"""The part of carta-python (github.com/CARTAvis/carta-python, not on the package index here)
that a notebook uses to script an open CARTA, following its source line for line where it
talks to CARTA: carta/protocol.py (``Protocol.request_scripting_action``), carta/util.py
(``Macro``, ``CartaEncoder``, ``split_action_path``), carta/session.py (``Session.interact``,
``call_action``, ``get_value``, ``pwd``, ``ls``, ``cd``, ``resolve_file_path``)."""
