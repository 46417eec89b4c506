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
        "\nassert [(e.text, e.qid) for e in apple.entities] == "
        "[('Apple Inc.', 'Q312'), ('Cupertino', 'Q189471'), ('California', 'Q99'), ('Steve Jobs', 'Q19837')]"
        "\nassert any(f.head == 'Q312' and f.tail == 'Q189471' and f.relation in ('P159', 'P131', 'P276') "
        "and f.evidence == (0,) for f in apple.facts), apple.facts\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    p = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env
    )
    assert p.returncode == 0, p.stderr[-2000:]
