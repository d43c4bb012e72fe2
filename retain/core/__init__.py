"""The floor every other room stands on; imports nothing of retain above it and runs nothing on import.

    paths.py    package files, `lab:` paths and model aliases
    errors.py   the user-error classes (a bad config, file or model: exit code 2, naming file, line and field)
    schema.py   strict YAML -> frozen dataclasses: unknown keys, wrong types and missing fields are errors
    files.py    atomic writes (temp name, then rename), run folders that keep what was already written
"""
