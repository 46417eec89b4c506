"""The README's Python examples run as written (those that need no data beyond the project's)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
NEEDS_MORE = ("store/", "train.jsonl", "../shared")  # a store, training data or the shared data sets


def blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


@pytest.mark.slow
def test_the_readme_python_examples_run() -> None:
    runnable = [b for b in blocks() if not any(n in b for n in NEEDS_MORE)]
    assert len(runnable) >= 4
    # each example, and then what its comments promise for the extraction example
    script = "\n\n".join(runnable) + (
        "\nassert [(e.text, e.qid, e.name) for e in paris.entities] == "
        "[('Paris', 'Q90', 'Paris'), ('France', 'Q142', 'France')]"
        "\nassert [(f.head_name, f.relation_name, f.tail_name) for f in paris.facts "
        "if f.relation_name == 'capital'] == [('France', 'capital', 'Paris')]\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    p = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env
    )
    assert p.returncode == 0, p.stderr[-2000:]
