# carta-hub on a Slurm login node with PAM login (the cluster's own unix accounts).
#   jupyterhub -f /etc/carta-hub/slurm-pam.py     (as user `jupyterhub`, see docs/slurm.md:
#   it needs the sudo rule for sbatch/scancel/tail and membership of group `shadow` for PAM)
load_subconfig("slurm-common.py")

c.JupyterHub.authenticator_class = "pam"
c.PAMAuthenticator.allowed_groups = {"carta-users"}  # unix group of the students
c.Authenticator.admin_users = {"carta-admin"}
c.PAMAuthenticator.open_sessions = False  # the job is the session; nothing to open on the Hub
