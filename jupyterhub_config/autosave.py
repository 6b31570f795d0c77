# Save each student's open CARTA as a workspace a few minutes before their session ends (the
# Slurm job's wall time, or CARTA's idle timeout), and offer it in their next session. Load it
# from the Hub's own config: `load_subconfig("autosave.py")`. See docs/idle-culling.md.
#
# The server asks the open CARTA tab to save itself through CARTA's scripting interface, so
# scripting must be on (it also lets students script CARTA from a notebook: carta-python).
c.CartaBackend.enable_scripting = True
# Seconds before the end (for an idle end at most half of idle_timeout); 0 turns it off.
c.CartaBackend.autosave_before_end = 5 * 60
