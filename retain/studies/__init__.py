"""Studies: many ordinary runs planned from one base config, each scored against the base model; and the
commands that read a config or runs without training one (doctor, merge, init).

    common.py     what every study shares: the study file's common fields (with their help for
                  `retain config --explain`), planning a run, scoring the base once, skipping finished runs,
                  training then scoring, seeds
    explain.py    `retain config --explain sweep|tune|sequence`
    sweep/        `retain sweep`: the strategies you list, each with several seeds, and their summary
    tune/         `retain tune`: recipes searched for (Optuna, or Ray Tune across machines)
    continual/    `retain sequence`: tasks in sequence, with the strategies for sequences (buffers, isolation)
    doctor.py     `retain doctor`: the causes of forgetting looked for in a config, and a recipe
    merge.py      `retain merge`: WiSE-FT interpolation, task arithmetic or TIES over fine-tunes of one base
    starter.py    `retain init`: a starter config and suite fitted to a model and its data
The lab end to end (`make demo`) is retain.lab.demo.
"""
