"""Other names mined from the first sentence of encyclopedia articles ('Britain' for the UK)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kg import load_kg
from kg.errors import KGFormatError
from kg.link.aliases import AliasTable
from kg.link.leads import load_names, mine, names_in_lead, qids_by_title, read_articles, save_names

UK = (
    "The United Kingdom of Great Britain and Northern Ireland, commonly known as the United Kingdom "
    "(UK) or Britain, is a country in northwestern Europe. Its capital is London."
)


def test_names_before_the_verb_are_found_and_later_ones_are_not() -> None:
    assert names_in_lead(UK, "United Kingdom") == ["UK", "Britain"]
    assert names_in_lead("The World Trade Organization (WTO) is an intergovernmental organization.") == [
        "WTO"
    ]
    # a birth date in parentheses and names after the verb are no other names
    assert names_in_lead("Ada Lovelace (10 December 1815 – 27 November 1852) was a mathematician.") == []
    assert names_in_lead("Paris is the capital of France, also known as the French Republic.") == []
    assert names_in_lead("no verb here at all") == []


def test_mined_names_become_aliases_of_the_titled_entity(kg_dir: Path, tmp_path: Path) -> None:
    kg = load_kg(kg_dir / "fb15k-237")
    e = 0
    articles = [{"title": kg.labels[e], "text": f"{kg.labels[e]}, also known as Zorblandia, is a place."}]
    names = mine(articles, qids_by_title(kg))
    assert names == {kg.qids[e]: ["Zorblandia"]}
    save_names(names, tmp_path / "names.parquet")
    assert load_names(tmp_path / "names.parquet") == names
    assert not AliasTable.from_kg(kg).lookup("Zorblandia")
    found = AliasTable.from_kg(kg, other_names=names).lookup("zorblandia")
    assert [c.entity for c in found] == [e]


def test_bad_article_file_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "a.jsonl"
    bad.write_text('{"title": "A", "text": "A is B."}\n{"text": "no title"}\n')
    with pytest.raises(KGFormatError, match=r"a\.jsonl:2.*title"):
        read_articles(bad)


def test_cli_writes_names_for_a_kg(kg_dir: Path, tmp_path: Path) -> None:
    kg = load_kg(kg_dir / "fb15k-237")
    corpus = tmp_path / "leads.jsonl"
    corpus.write_text(
        json.dumps({"title": kg.labels[1], "text": f"{kg.labels[1]} (QQX) is a thing."}) + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "names.parquet"
    kgpipe = Path(sys.executable).parent / "kgpipe"
    done = subprocess.run(
        [str(kgpipe), "kg", "names", str(corpus), "--kg", str(kg_dir / "fb15k-237"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert load_names(out) == {kg.qids[1]: ["QQX"]}
