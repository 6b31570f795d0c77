# carta-hub's hub image: the chart's Hub runs CARTAKubeSpawner, whose identities come from the
# login (auth_state; the chart generates its encryption key). The chart loads this file after
# hub.config; an operator's own file in jupyterhub_config.d (hub.extraFiles) sorts after it.
c.JupyterHub.spawner_class = "carta-kube"
c.Authenticator.enable_auth_state = True
