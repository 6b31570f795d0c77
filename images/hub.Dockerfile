# The Hub image for Zero-to-JupyterHub 4.4.0: the chart's hub image plus carta-hub
# (CARTAKubeSpawner, or CARTASlurmSpawner through slurmrestd; identity and storage). Build
# from the repository root:
#   docker build -f images/hub.Dockerfile -t registry.example.org/carta-hub/hub:0.1.0 .
FROM quay.io/jupyterhub/k8s-hub:4.4.0

USER 0
COPY pyproject.toml README.md /tmp/carta-hub/
COPY carta_hub /tmp/carta-hub/carta_hub
# The chart image already has JupyterHub, KubeSpawner 7, the authenticators and the idle
# culler; --no-deps keeps it that way (the single-user side's dependencies are not needed).
# batchspawner: CARTASlurmSpawner for a Hub on Kubernetes with CARTA on Slurm
# (helm-values/slurm.yaml), which reaches Slurm through slurmrestd only.
RUN pip install --no-cache-dir --no-deps /tmp/carta-hub batchspawner==1.3.0 \
 && rm -rf /tmp/carta-hub \
 && python3 -c "from carta_hub.hub.kube import CARTAKubeSpawner" \
 && python3 -c "from carta_hub.hub.slurm.spawner import CARTASlurmSpawner"
# the chart's jupyterhub_config.py loads this folder after hub.config
COPY images/hub-config.d/carta-hub.py /usr/local/etc/jupyterhub/jupyterhub_config.d/00-carta-hub.py
# the chart image's user (jovyan)
USER 1000
