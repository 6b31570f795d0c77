# The two commands a newcomer needs. Both install what they need first (dev/install.sh).
PREFIX ?= /opt/carta-hub
VENV := $(PREFIX)/venv

.PHONY: install demo test

install:
	bash dev/install.sh

demo: install
	$(VENV)/bin/jupyterhub -f jupyterhub_config/demo.py

test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)
