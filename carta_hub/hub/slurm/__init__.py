"""CARTA on Slurm: the spawner, its spawn form, the job script and the queue poller."""
