# carta-hub on a Slurm login node with LDAP login (auth-ldap.py: StartTLS, group access,
# POSIX identity from LDAP). The login node must resolve the same users (sssd/nslcd): sbatch
# runs as them through sudo.
#   JUPYTERHUB_CRYPT_KEY=... CARTA_LDAP_SERVER=... jupyterhub -f /etc/carta-hub/slurm-ldap.py
load_subconfig("slurm-common.py")
load_subconfig("auth-ldap.py")

# The job runs as the LDAP uid; its home comes from homeDirectory.
c.CARTASlurmSpawner.folder_roots = ["{home}", "/ceph/data"]
