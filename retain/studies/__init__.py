"""Studies: many ordinary runs planned from one base config, each scored against the base model; and the
commands that make something from a model or runs without training (merge, init).

    common.py     what every study shares: the study file's common fields (with their help for
                  `retain config --explain`), planning a run, scoring the base once, skipping finished runs,
                  training then scoring, seeds
    explain.py    `retain config --explain sweep|tune|sequence`
    sweep/        `retain sweep`: the strategies you list, each with several seeds, and their summary
    tune/         `retain tune`: recipes searched for (Optuna, or Ray Tune across machines)
    continual/    `retain sequence`: tasks in sequence, with the strategies for sequences (buffers, isolation)
    merge.py      `retain merge`: WiSE-FT interpolation, task arithmetic or TIES over fine-tunes of one base
    starter.py    `retain init`: a starter config and suite fitted to a model and its data
    demo.py       `make demo` / `retain demo`: the lab end to end (base scored, two runs, report)
`retain doctor` lives in retain.report.doctor: the report's "what to try next" is its advice.
"""
