# The single-user CARTA image: Ubuntu 24.04, CARTA from the official PPA, carta-hub.
# Build from the repository root:
#   docker build -f images/singleuser.Dockerfile -t registry.example.org/carta-hub/singleuser:0.1.0 .
# Pods run it as the user's own UID (any UID: nothing here is owned by a user) with a
# read-only root filesystem; nss_wrapper (libnss-wrapper) lets that UID resolve its name.

# Build stage: carta-hub's wheel with its JupyterLab extension ("Open in CARTA"), which the
# package build's hook (hatch-jupyter-builder) builds with npm from labextension/. Node stays
# in this stage; the image below installs the wheel.
FROM node:22-bookworm-slim AS wheel

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY carta_hub carta_hub
COPY labextension/package.json labextension/package-lock.json labextension/tsconfig.json labextension/
COPY labextension/src labextension/src
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps -w /dist .

# The image
FROM ubuntu:24.04

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive

# carta = carta_backend (/usr/bin/carta_backend) + frontend (/usr/share/carta/frontend).
# Versions follow the PPA and Ubuntu's updates: rebuild to update CARTA. util-linux's setpriv
# (--pdeathsig) starts the backend so that it ends with its server.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gpg-agent software-properties-common \
 && add-apt-repository -y ppa:cartavis-team/carta \
 && apt-get install -y --no-install-recommends carta libnss-wrapper python3 python3-venv tini \
    util-linux \
 && apt-get purge -y --auto-remove software-properties-common gpg-agent \
 && rm -rf /var/lib/apt/lists/* \
 && test -x /usr/bin/carta_backend \
 && setpriv --pdeathsig TERM -- true \
 && test -f /usr/share/carta/frontend/index.html \
 && test -f /usr/lib/x86_64-linux-gnu/libnss_wrapper.so

# carta-hub's wheel with JupyterLab (lab mode) and its "Open in CARTA" extension, and
# batchspawner-singleuser (Slurm, via Apptainer)
COPY --from=wheel /dist/ /opt/src/dist/
RUN python3 -m venv /opt/carta-hub \
 && set -- /opt/src/dist/carta_hub-*.whl \
 && /opt/carta-hub/bin/pip install --no-cache-dir "$1[lab,slurm]" \
 && rm -rf /opt/src \
 && test -f /opt/carta-hub/share/jupyter/labextensions/carta-hub/package.json
ENV PATH=/opt/carta-hub/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# A non-root default; Kubernetes and Apptainer run it as the user.
USER 65534:65534
WORKDIR /tmp
EXPOSE 8888
ENTRYPOINT ["tini", "--"]
CMD ["carta-hub-singleuser"]
