"""README's picture of the report (docs/report-screenshot.png), from a demo-like run.

    python tools/report_screenshot.py [--demo runs/demo-report] [--out docs/report-screenshot.png]

`retain demo`'s three models (base, unprotected, protected; run first if DEMO holds no results), and beside them
a run held to a retention budget (configs/retention-budget.yaml, trained into DEMO/budgeted), so that the page
shows every section: the verdict lines, forgetting over training (the budget's checks), the early warnings,
answers that changed and what to try next. The report goes to DEMO/report-screenshot/; headless Chromium
(`apt-get install chromium`) takes the picture.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

BUDGET_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "retention-budget.yaml"


def screenshot(html: Path, png: Path, size: str = "1200,1800") -> bool:
    """`html` as Chromium draws it, into `png`; False where no Chromium is installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return False
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--no-first-run", "--hide-scrollbars",
                    f"--screenshot={png.resolve()}", f"--window-size={size}",
                    f"file://{html.resolve()}"], capture_output=True, timeout=120)
    return png.is_file()


def main() -> None:
    import retain
    from retain.config import load_config
    from retain.evaluation.runner import evaluate_path
    from retain.studies.demo import SUITE, run_demo
    from retain.report.build import write_report

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", default="runs/demo-report")
    parser.add_argument("--out", default="docs/report-screenshot.png")
    parser.add_argument("--size", default="1200,2400", help="the browser window, width,height")
    args = parser.parse_args()
    demo = Path(args.demo)
    names = ["base", "unprotected", "protected"]
    if not all((demo / f"{n}.json").is_file() for n in names):
        run_demo(demo)
    if not (demo / "budgeted.json").is_file():
        config = load_config(BUDGET_CONFIG, [f"output.dir={demo / 'budgeted'}"])
        run = retain.train(config, overwrite=True)
        evaluate_path(str(run.final_dir), SUITE, "test", demo / "budgeted.json")
    names.append("budgeted")
    paths = write_report([demo / f"{n}.json" for n in names], demo / "report-screenshot", labels=names)
    print(paths["verdicts"])
    if not screenshot(paths["html"], Path(args.out), args.size):
        raise SystemExit(f"no chromium here: open {paths['html']} in a browser instead")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
