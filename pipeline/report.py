"""`demo_output/report.html`: one self-contained page (plots inline as PNG data, no scripts, nothing
fetched) with what the demo did: the KG, TransE's training curve, linking confidence, the batch
job's throughput, the classifier's scores and example searches."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kg.storage import atomic_write


@dataclass
class Report:
    title: str = "kgpipe demo"
    sections: list[tuple[str, str]] = field(default_factory=list)

    def add(self, heading: str, body_html: str) -> None:
        self.sections.append((heading, body_html))

    def text(self, heading: str, text: str) -> None:
        self.add(heading, f"<p>{html.escape(text)}</p>")

    def table(self, heading: str, columns: list[str], rows: list[list[Any]], note: str = "") -> None:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>" for r in rows
        )
        extra = f"<p class=note>{html.escape(note)}</p>" if note else ""
        self.add(heading, f"<table><tr>{head}</tr>{body}</table>{extra}")

    def figure(self, heading: str, fig: Any, note: str = "") -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        self.image(heading, buf.getvalue(), note)

    def image(self, heading: str, png: bytes, note: str = "") -> None:
        data = base64.b64encode(png).decode()
        extra = f"<p class=note>{html.escape(note)}</p>" if note else ""
        self.add(heading, f'<img alt="{html.escape(heading)}" src="data:image/png;base64,{data}">{extra}')

    def write(self, path: Path) -> Path:
        parts = "".join(f"<section><h2>{html.escape(h)}</h2>{b}</section>" for h, b in self.sections)
        page = f"""<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(self.title)}</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;max-width:62rem;margin:2rem auto;padding:0 1rem;color:#222}}
table{{border-collapse:collapse;margin:.5rem 0}}td,th{{text-align:left;padding:.2rem .6rem;border-bottom:1px solid #eee}}
img{{max-width:100%}}.note{{color:#666;font-size:.9em}}section{{margin:1.5rem 0}}</style></head>
<body><h1>{html.escape(self.title)}</h1>{parts}</body></html>"""
        with atomic_write(path, "w") as f:
            f.write(page)
        return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)
