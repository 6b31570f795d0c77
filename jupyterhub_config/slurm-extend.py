# Students may extend a running CARTA session from its tab: the Hub raises the Slurm job's
# time limit as the Slurm operator account (the sudo rule in docs/slurm.md; through slurmrestd,
# slurm-rest.py, a token for it and no sudo rule), never beyond max_runtime nor the
# partition's MaxTime. Load it after slurm-common.py (and slurm-rest.py):
# load_subconfig("slurm-extend.py"). Both settings are minutes, per partition ("*": the others).
c.CARTASlurmSpawner.extend_step = {"gpu": 0, "*": 60}  # 1 h at a time; none on "gpu"
c.CARTASlurmSpawner.max_runtime = 8 * 60  # no session runs longer than 8 h in all
c.CARTASlurmSpawner.slurm_operator = "slurm"  # SlurmUser (or an operator: sacctmgr)
