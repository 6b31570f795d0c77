"""The login-node site that tests/test_slurm_hub.py and tests/test_browser_slurm.py share: two
of helpers/slurm.py's students, their data file, the spawn form's choices, the poll interval."""

ALICE, BOB = "cs-alice", "cs-bob"
FITS = b"SIMPLE  =                    T" + b" " * 2850
POLL = 2.0
CONFIG = """
c.CARTASlurmSpawner.partitions = ["debug", "short"]
c.CARTASlurmSpawner.cores = [1, 2]
c.CARTASlurmSpawner.memory_gb = {"min": 1, "max": 2}
c.CARTASlurmSpawner.runtimes = ["0:30:00", "2:00:00"]
c.CartaBackend.top_level_folder = "/home"
"""


def job_of(slurm, name, state="RUNNING"):
    return [i for i, (s, user) in slurm.jobs().items() if user == name and s == state]
