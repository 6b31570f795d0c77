# Slurm through slurmrestd instead of sudo + sbatch: the Hub needs no sudo rule, no munge and
# no Slurm commands, and may run as any unprivileged account on any host that reaches
# slurmrestd and that the compute nodes can reach (docs/slurm.md, "Without sudo: slurmrestd").
# Load it after the site's login config:
#   load_subconfig("slurm-pam.py")   # or slurm-ldap.py
#   load_subconfig("slurm-rest.py")
c.CARTASlurmSpawner.slurmrestd_url = "http://slurm-rest.cluster.example.org:6820"
# A copy of the cluster's AuthAltParameters=jwt_key, owned by the Hub's account, mode 0600
c.CARTASlurmSpawner.jwt_key_file = "/etc/carta-hub/slurm-jwt.key"
c.CARTASlurmSpawner.jwt_lifetime = 60  # seconds; keep the clocks in sync (NTP)
c.CARTASlurmSpawner.slurm_operator = "slurm"  # raises time limits ("Extend"); never root
