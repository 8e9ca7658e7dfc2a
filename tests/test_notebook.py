"""notebooks/analysis.ipynb runs (papermill) on the report of a real two-job sweep."""

from __future__ import annotations

import csv
from pathlib import Path

import nbformat
import papermill
import pytest

from r2r.report import main as report

ROOT = Path(__file__).resolve().parents[1]


def test_analysis_notebook_on_a_small_sweep(shared_sweep, tmp_path: Path) -> None:
    # Two of its four jobs fail on purpose (test_sweep.py); the report lists them.
    assert shared_sweep.done.returncode == 1, shared_sweep.done.stderr[-3000:]
    assert report([str(shared_sweep.sweep), "--out", str(tmp_path / "report"), "--no-plots"]) == 0

    executed = tmp_path / "analysis.ipynb"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "analysis.ipynb"),
        str(executed),
        parameters={"report_dir": str(tmp_path / "report")},
        kernel_name="python3",
        progress_bar=False,
        cwd=str(tmp_path),
    )
    figures = sorted(p.name for p in (tmp_path / "report" / "notebook_figures").iterdir())
    assert figures == ["bars.png", "forgetting_0.png", "forgetting_1.png"]
    # The EAG-minus-direct cell shows the difference of the two runs' fine-tuned rows.
    with open(tmp_path / "report" / "table1.csv") as f:
        ndcg = {
            r["curriculum"]: float(r["ndcg@10"])
            for r in csv.DictReader(f)
            if (r["split"], r["domain"], r["stage"]) == ("test", "all", "fine-tuned")
        }
    gain = ndcg["eag"] - ndcg["direct"]
    cells = nbformat.read(executed, as_version=4).cells
    shown = next(c for c in cells if c.cell_type == "code" and c.source.startswith("gains = "))
    text = shown.outputs[0]["data"]["text/plain"]
    # (shown to one decimal: within half a unit of the last place)
    assert float(text.splitlines()[-1].split()[-1]) == pytest.approx(gain, abs=0.05 + 1e-9)
