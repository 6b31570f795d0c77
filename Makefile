# The two commands a newcomer needs. Both install what they need first (dev/install.sh).
# They need only the system's commands on PATH (not the venv's): a plain root shell or sudo.
# CARTA_HUB_PREFIX: where dev/install.sh installs, and the demo and the tests look.
CARTA_HUB_PREFIX ?= /opt/carta-hub
export CARTA_HUB_PREFIX
VENV := $(CARTA_HUB_PREFIX)/venv

.PHONY: install demo test

install:
	bash dev/install.sh

demo: install
	$(VENV)/bin/jupyterhub -f jupyterhub_config/demo.py

test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)
