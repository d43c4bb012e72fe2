"""tools.timed: a study's sittings add up in <out>/wall_seconds, and the command's exit status comes back."""
import sys

from tools.real_study import wall_time
from tools.timed import main


def test_each_sitting_adds_its_seconds_and_the_exit_status_comes_back(tmp_path):
    out = tmp_path / "study"
    assert main([str(out), "--", sys.executable, "-c", "pass"]) == 0
    first = float((out / "wall_seconds").read_text())
    (out / "wall_seconds").write_text("3600\n")  # as if the first sitting had run an hour
    # a sitting that fails still counts, and its status is the tool's (make stops on it)
    assert main([str(out), "--", sys.executable, "-c", "import sys; sys.exit(3)"]) == 3
    total = float((out / "wall_seconds").read_text())
    assert 0 <= first < 60 and 3600 <= total < 3660
    assert wall_time(out).startswith("1 h 00 min (") and "its sittings added up" in wall_time(out)
    assert wall_time(tmp_path / "never") == "not recorded"


def test_a_call_without_the_separator_is_a_usage_error_and_writes_nothing(tmp_path, capsys):
    assert main([str(tmp_path / "study"), sys.executable, "-c", "pass"]) == 2
    assert "usage: python -m tools.timed OUT_DIR -- COMMAND" in capsys.readouterr().err
    assert not (tmp_path / "study").exists()
