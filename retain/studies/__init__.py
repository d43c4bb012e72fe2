"""Studies: many ordinary runs planned from one base config, each scored against the base model.

common.py holds what they share (the study file's common fields, planning a run, scoring the base once,
skipping finished runs, training then scoring); explain.py, `retain config --explain sweep|tune|sequence`.
The studies themselves: retain.sweep (strategies you list), retain.tune (recipes searched for),
retain.continual (tasks in sequence), retain.lab.demo (the lab end to end).
"""
