"""The lab's builders: a user of the retain library, not part of it.

The installed package ships only what the lab's runs read (retain/lab/: the model, data, task YAMLs,
demo configs). What made them lives here:

    python -m tools.lab build-data        the corpus and task data (corpus.py), from registry packages
    python -m tools.lab pretrain          retain-tiny from scratch on that corpus (pretrain.py)
    python -m tools.lab card              the model card with measured scores (card.py)
    python -m tools.lab docs SWEEP.yaml…  docs/mitigations.md and docs/claims.md from finished sweeps (docs.py)
"""
