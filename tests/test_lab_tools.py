"""The lab's builders live outside the installed package (tools/lab) and share retain's error boundary."""

import subprocess
import sys
from pathlib import Path

import retain

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_package_holds_no_lab_builder():
    lab = Path(retain.__file__).parent / "lab"
    assert not {"corpus.py", "pretrain.py", "card.py", "docs.py"} & {p.name for p in lab.glob("*.py")}


def test_lab_docs_without_sweeps_is_a_user_error():
    done = subprocess.run([sys.executable, "-m", "tools.lab", "docs"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "name the finished sweeps' files" in done.stderr
    assert "Traceback" not in done.stderr
