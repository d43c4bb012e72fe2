"""The package's import graph has no cycle: layers import downward only.

Every `import retain.x` / `from retain.x import ...` counts, at module level or inside a function
(an import hidden in a function to dodge a circle is still a circle).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "retain"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The retain modules `path` imports (a `from pkg import name` that names a submodule counts it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("retain"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("retain"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
    return {m for m in found if m in modules}


def parents(module: str) -> set[str]:
    """The sub-packages whose __init__ runs before `module` (the root package `retain` aside: it runs first)."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts))}


def import_graph() -> dict[str, set[str]]:
    """module -> the modules importing it runs: its imports, and the packages around each of them."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {}
    for m, p in files.items():
        direct = imports_of(p, modules)
        graph[m] = (direct | set().union(*map(parents, direct)) if direct else set()) & modules
        graph[m] -= {m, *parents(m)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_the_package_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 20
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_importing_a_submodule_runs_its_package():
    # retain.config.strict would run retain/config/__init__.py first: an edge the graph must hold
    assert parents("retain.config.strict") == {"retain.config"}
    assert parents("retain.core.paths") == {"retain.core"}


def test_the_objectives_sit_below_the_loop():
    # the loop asks an objective (retain.objectives: SFT, DPO, GRPO); none of them, nor the pairs', prompts' and
    # rewards' machinery they are built from (retain.preference), reaches back up
    graph = import_graph()
    below = {m: deps for m, deps in graph.items() if m.startswith(("retain.objectives", "retain.preference"))}
    assert {"retain.objectives.sft", "retain.objectives.dpo", "retain.objectives.grpo"} <= set(below)
    assert "retain.objectives" in graph["retain.training.step"]
    assert {m: sorted(d for d in deps if d.startswith("retain.training")) for m, deps in below.items()
            if any(d.startswith("retain.training") for d in deps)} == {}


def test_the_preference_machinery_sits_below_the_objectives():
    # retain.preference (data, options, rewards, log-probs) is what DPO and GRPO are built from: they import it, so
    # it never imports them back (and the config schema, which reads retain.preference.options, stays light)
    graph = import_graph()
    assert {"retain.preference.data", "retain.preference.options"} <= set(graph["retain.objectives.dpo"])
    assert {m: sorted(d for d in deps if d.startswith("retain.objectives")) for m, deps in graph.items()
            if m.startswith("retain.preference") and any(d.startswith("retain.objectives") for d in deps)} == {}


def test_the_package_root_holds_few_rooms():
    # a newcomer reads retain/ in one glance: the rooms (core, model, data, objectives, mitigations, training,
    # evaluation, report, studies, ...) and the entry points, no loose helper modules beside them
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__" and not p.name.endswith(".egg-info"))
    loose = [name for name in entries if name.endswith(".py") and name not in {"__init__.py", "__main__.py", "cli.py"}]
    assert loose == []
    assert len(entries) <= 15, entries


# Where an import of retain's own modules may sit inside a function: the command dispatch (each command loads only
# what it runs), the package's entry point (importing any retain module runs it, so `retain.train` loads the loop
# when called), and a module that needs an optional extra on import (ray, for `retain tune --backend ray`).
IMPORTS_INSIDE_FUNCTIONS = {"retain.cli": None, "retain": None,
                            "retain.studies.tune.run": {"retain.studies.tune.ray_backend"}}
# Other packages are imported at the top too, except the optional extras (a user may not have them) and four heavy
# libraries that only some commands need: with peft and datasets imported at the top, `import retain.cli` (what
# `retain --help` or `retain config --explain` pays) took 17.4-19.5 s instead of 6.8-7.8 s on a loaded 2-core EPYC
# (`/usr/bin/time python -c "import retain.cli, peft, datasets"`, 2026-12-04), so they load where a run needs them.
OPTIONAL_EXTRAS = {"lm_eval", "optuna", "ray", "bitsandbytes", "mlflow", "wandb", "trl"}
HEAVY = {"peft", "datasets", "transformers", "accelerate", "huggingface_hub"}


def imports_inside_functions(path: Path, retain_only: bool = True) -> set[str]:
    found = set()
    for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module)
                elif isinstance(node, ast.Import):
                    found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("retain")} if retain_only else found


def test_retain_modules_are_imported_at_the_top():
    # an import hidden in a function hides a dependency from the reader (and from this file's graph until it runs)
    misplaced = {}
    for path in PACKAGE.rglob("*.py"):
        module = module_name(path)
        allowed = IMPORTS_INSIDE_FUNCTIONS.get(module, set())
        inside = imports_inside_functions(path) - (allowed if allowed is not None else imports_inside_functions(path))
        if inside:
            misplaced[module] = sorted(inside)
    assert misplaced == {}


def test_other_packages_are_imported_at_the_top_but_optional_extras_and_heavy_libraries():
    misplaced = {}
    for path in PACKAGE.rglob("*.py"):
        if IMPORTS_INSIDE_FUNCTIONS.get(module_name(path), set()) is None:
            continue  # the dispatch and the entry point load per command
        inside = {m for m in imports_inside_functions(path, retain_only=False)
                  if m.split(".")[0] not in OPTIONAL_EXTRAS | HEAVY | {"retain"}}
        if inside:
            misplaced[module_name(path)] = sorted(inside)
    assert misplaced == {}


def test_the_import_rule_sees_an_import_inside_a_function(tmp_path):
    code = tmp_path / "m.py"
    code.write_text("import os\n\ndef f():\n    from retain.core.paths import resolve_path\n    import retain.data\n")
    assert imports_inside_functions(code) == {"retain.core.paths", "retain.data"}


def long_functions(path: Path, limit: int = 60) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{fn.name} ({fn.end_lineno - fn.lineno + 1} lines)" for fn in ast.walk(tree)
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.end_lineno - fn.lineno + 1 > limit]


def test_no_function_is_longer_than_a_screen():
    # a function a reader holds in view at once: a longer one is phases that want names (see the loop's four)
    too_long = {module_name(p): found for p in PACKAGE.rglob("*.py") if (found := long_functions(p))}
    assert too_long == {}


def test_the_length_rule_counts_a_long_function(tmp_path):
    code = tmp_path / "m.py"
    code.write_text("def f():\n" + "    x = 1\n" * 60 + "\n\ndef g():\n    pass\n")
    assert long_functions(code) == ["f (61 lines)"]


def test_what_the_lab_fills_in_is_written_in_one_place():
    # retain.lab.defaults is the one module that says which settings retain-tiny's runs may leave out, and to what
    from retain.lab.defaults import BUDGET_SUITE, GENERAL_DATA

    elsewhere = sorted(module_name(p) for p in PACKAGE.rglob("*.py") if "lab" not in p.relative_to(PACKAGE).parts[:1]
                       and (GENERAL_DATA in (text := p.read_text(encoding="utf-8")) or BUDGET_SUITE in text))
    assert elsewhere == []


# The rooms, bottom to top: each imports only rooms in layers below its own (rooms of one layer not each other).
# What the layers say: core knows nothing of retain; the lab is data and the defaults it fills; data and the model
# know nothing of training; evaluation scores any model; mitigations and objectives are what a run is made of; the
# config reads their options; the report judges results (and advises, through doctor); training runs a config and may
# write a report; studies plan many runs; the CLI and the package's entry point sit on top.
LAYERS = [{"core"}, {"lab"}, {"data", "model"}, {"preference", "evaluation"}, {"mitigations"}, {"objectives"},
          {"config"}, {"report"}, {"training"}, {"studies"}, {"cli"}, {"__main__"}]


def room(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "retain"


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    level = {name: k for k, names in enumerate(LAYERS) for name in names}
    return sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                  if room(m) != room(d) and room(m) != "retain" and room(d) != "retain"
                  and level[room(d)] >= level[room(m)])


def test_rooms_import_only_the_layers_below_them():
    graph = import_graph()
    assert {room(m) for m in graph} - {"retain"} == set().union(*LAYERS)  # every room has its layer
    assert layer_violations(graph) == []


def test_the_layer_rule_sees_an_import_upward_and_across():
    graph = {"retain.data.readers": {"retain.training.loop"}, "retain.model.loading": {"retain.data.readers"},
             "retain.training.loop": {"retain.data.readers"}}
    assert layer_violations(graph) == ["retain.data.readers -> retain.training.loop",
                                       "retain.model.loading -> retain.data.readers"]
