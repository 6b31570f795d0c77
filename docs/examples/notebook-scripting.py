# In a notebook of your JupyterLab (carta-python installed: pip install carta),
# with CARTA open in a browser tab:
from carta.session import Session
from carta.token import BackendToken

from carta_hub.scripting import carta_session

url, session_id, token = carta_session()
session = Session.interact(url, session_id, BackendToken(token))

session.cd("obs")  # CARTA's File Browser goes to obs/ ...
print(session.ls())  # ... and lists it here
