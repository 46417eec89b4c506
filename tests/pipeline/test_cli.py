"""The `kgpipe` command as users run it: a real subprocess of the installed console script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from kg.io import data_root

KGPIPE = str(Path(sys.executable).parent / "kgpipe")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KGPIPE, *args], capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "120"}
    )


def test_help_teaches_the_subcommands() -> None:
    p = run("--help")
    assert p.returncode == 0
    for word in ("demo", "kg", "bundled FB15k-237"):
        assert word in p.stdout


def test_kg_info_json_on_bundled_kg() -> None:
    from kg import bundled_kg_path

    p = run("kg", "info", str(bundled_kg_path()), "--json")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert (info["entities"], info["relations"], info["with_qid"]) == (14541, 237, 14515)
    assert info["triples"] == {"train": 272115, "valid": 17535, "test": 20466}


def test_kg_info_table_and_format_flag(kg_dir: Path) -> None:
    p = run("kg", "info", str(kg_dir / "wd50k"), "--format", "wd50k")
    assert p.returncode == 0, p.stderr
    assert "entities" in p.stdout and "wd50k" in p.stdout


def test_malformed_line_is_one_line_on_stderr_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("a\tr\tb\nb\tr\tc\nc\tr\n")
    p = run("kg", "info", str(tmp_path), "--json")
    assert p.returncode == 2
    assert "train.txt:3" in p.stderr
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert p.stdout == ""


def test_convert_writes_kgpipe_layout_that_info_reads(kg_dir: Path, tmp_path: Path) -> None:
    p = run("kg", "convert", str(kg_dir / "wn18rr"), str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr
    info = json.loads(run("kg", "info", str(tmp_path / "out"), "--json").stdout)
    assert info["source"].startswith("wn18rr:")
    assert info["triples"]["train"] == 300


def test_demo_runs_every_part_and_leaves_a_report_and_a_servable_bundle(tmp_path: Path) -> None:
    p = run("demo", "--out", str(tmp_path / "demo"))
    assert p.returncode == 0, p.stderr
    assert "fb15k-237" in p.stdout
    assert "272,115" in p.stdout
    assert "United States of America" in p.stdout
    assert "bundle checkpoint" in p.stdout
    assert "Nearest entities in TransE space" in p.stdout
    assert "batch extraction" in p.stdout and "6 documents" in p.stdout and "dask workers" in p.stdout
    assert "classifier 'topic'" in p.stdout and "Albert Einstein" in p.stdout
    assert "searches" in p.stdout and "entities nearest Paris" in p.stdout
    report = (tmp_path / "demo" / "report.html").read_text()
    for section in (
        "TransE training curve",
        "classifier scores",
        "example searches",
        "linking confidence and throughput",
    ):
        assert f"<h2>{section}</h2>" in report
    assert "data:image/png;base64," in report and "http" not in report.split("<body>")[1].replace(
        "http://127.0.0.1", ""
    )
    from kg.manifest import read_manifest

    _, parts = read_manifest(tmp_path / "demo" / "bundle", verify=True)
    assert {"kg", "transe", "linker", "store", "classifiers/topic"} <= set(parts)


def test_demo_on_another_kg_trains_transe_itself(kg_dir: Path, tmp_path: Path) -> None:
    p = run("demo", "--kg", str(kg_dir / "fb15k-237"), "--out", str(tmp_path / "demo"))
    assert p.returncode == 0, p.stderr
    assert "training on fb15k-237" in p.stdout
    assert "Nearest entities in TransE space" in p.stdout


ENCODER_FIXTURES = Path(__file__).parents[1] / "fixtures" / "encoders"


def finetune(train: Path, knowledge: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`kgpipe encoder finetune relation` on `train`, with the fixture dev set."""
    dev = str(ENCODER_FIXTURES / "relation_dev.jsonl")
    args = ("--train", str(train), "--dev", dev, "--knowledge", knowledge, "--out", str(out))
    return run("encoder", "finetune", "relation", *args, *extra)


def test_encoder_finetune_then_eval_json(tmp_path: Path) -> None:
    fix = ENCODER_FIXTURES
    out = tmp_path / "enc"
    done = finetune(fix / "relation_train.jsonl", "ernie", out, "--seed", "1", "--epochs", "2")
    assert done.returncode == 0, done.stderr
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
    assert json.loads((out / "config.json").read_text())["knowledge"] == "ernie"
    scored = run("encoder", "eval", str(out), "--data", str(fix / "relation_dev.jsonl"), "--json")
    assert scored.returncode == 0, scored.stderr
    result = json.loads(scored.stdout)
    assert 0.0 <= result["macro_f1"] <= 1.0 and 0.0 <= result["micro_f1"] <= 1.0
    assert result["examples"] == 12


def test_encoder_rejects_unknown_knowledge_and_bad_files(tmp_path: Path) -> None:
    done = finetune(ENCODER_FIXTURES / "relation_train.jsonl", "graph", tmp_path / "x")
    assert done.returncode == 2 and "--knowledge must be one of none, ernie, kbert" in done.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "Paris", "label": "x", "head": {"span": [0, 5]}}\n')
    done = finetune(bad, "none", tmp_path / "x")
    assert done.returncode == 2 and "bad.jsonl:1" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()
    bad_options = (
        ("--epochs", "0", "0"),
        ("--batch-size", "-1", "-1"),
        ("--lr", "0", "0.0"),
        ("--max-length", "0", "0"),
    )
    for option, value, shown in bad_options:
        done = finetune(ENCODER_FIXTURES / "relation_train.jsonl", "none", tmp_path / "x", option, value)
        assert done.returncode == 2 and f"{option} must be positive, not {shown}" in done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "x").exists()


def test_encoder_device_is_checked_before_anything_runs(tmp_path: Path) -> None:
    done = finetune(ENCODER_FIXTURES / "relation_train.jsonl", "none", tmp_path / "x", "--device", "gpu")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "device 'gpu' is not one of auto, cpu, cuda or cuda:N" in done.stderr
    assert not (tmp_path / "x").exists()
    if not torch.cuda.is_available():  # on a GPU machine `--device cuda` is right, and tested elsewhere
        done = finetune(ENCODER_FIXTURES / "relation_train.jsonl", "none", tmp_path / "x", "--device", "cuda")
        assert done.returncode == 2 and "torch sees no CUDA device: use --device cpu" in done.stderr


def test_encoder_descriptions_only_widen_ernie(tmp_path: Path) -> None:
    done = finetune(ENCODER_FIXTURES / "relation_train.jsonl", "kbert", tmp_path / "m", "--descriptions")
    assert done.returncode != 0 and "--descriptions widens ERNIE" in done.stderr
    assert not (tmp_path / "m").exists()


def test_encoder_pretrain_then_finetune_from_it(tmp_path: Path) -> None:
    """dEA on texts (two given with entities, one linked by the CLI), then fine-tuning starts from it."""
    texts = tmp_path / "texts.jsonl"
    lines = [json.loads(x) for x in (ENCODER_FIXTURES / "relation_train.jsonl").read_text().splitlines()[:12]]
    rows = [{"text": x["text"], "entities": [x["head"], x["tail"]]} for x in lines]
    rows.append({"text": "Barack Obama was born in Honolulu, Hawaii."})
    texts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dea = tmp_path / "dea"
    done = run(
        "encoder", "pretrain", "--data", str(texts), "--out", str(dea), "--epochs", "2", "--batch-size", "4"
    )
    assert done.returncode == 0, done.stderr
    assert "linked" in done.stderr and "entity accuracy" in done.stderr  # the summary goes to stderr
    meta = json.loads((dea / "pretrain.json").read_text())
    assert meta["result"]["texts"] == 13 and len(meta["result"]["loss"]) == 2
    assert (dea / "fusion.safetensors").exists()
    out = tmp_path / "enc"
    done = finetune(
        ENCODER_FIXTURES / "relation_train.jsonl", "ernie", out, "--epochs", "1", "--pretrained", str(dea)
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "config.json").read_text())["pretrained"] == str(dea)
    done = finetune(
        ENCODER_FIXTURES / "relation_train.jsonl", "kbert", tmp_path / "k", "--pretrained", str(dea)
    )
    assert done.returncode == 2 and "--pretrained starts ERNIE's fusion" in done.stderr
    args = ("--pretrained", str(dea), "--descriptions")
    done = finetune(ENCODER_FIXTURES / "relation_train.jsonl", "ernie", tmp_path / "k", *args)
    assert done.returncode == 2 and "leave out --descriptions" in done.stderr


def test_encoder_pretrain_refuses_bad_options_and_unlinked_texts(tmp_path: Path) -> None:
    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"text": "nothing to link here"}\n')
    done = run("encoder", "pretrain", "--data", str(texts), "--out", str(tmp_path / "d"), "--epochs", "0")
    assert done.returncode == 2 and "--epochs must be positive, not 0" in done.stderr
    done = run("encoder", "pretrain", "--data", str(texts), "--out", str(tmp_path / "d"), "--no-link")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "none of the 1 texts names an entity" in done.stderr and "texts.jsonl" in done.stderr
    assert not (tmp_path / "d").exists()


def test_force_writes_into_a_users_folder_and_keeps_every_other_file(kg_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    p = run("kg", "convert", str(kg_dir / "wn18rr"), str(out))
    assert p.returncode == 2 and "--force" in p.stderr and (out / "keep.txt").read_text() == "mine"
    p = run("kg", "convert", str(kg_dir / "wn18rr"), str(out), "--force")
    assert p.returncode == 0, p.stderr
    assert (out / "keep.txt").read_text() == "mine"
    assert json.loads(run("kg", "info", str(out), "--json").stdout)["triples"]["train"] == 300
    # a kgpipe KG folder of the same kind is rewritten without --force, the user's file still kept
    p = run("kg", "convert", str(kg_dir / "codex-s"), str(out))
    assert p.returncode == 0, p.stderr
    assert (out / "keep.txt").read_text() == "mine"
    assert json.loads(run("kg", "info", str(out), "--json").stdout)["source"].startswith("codex:")


def test_link_replaces_a_lone_surrogate_and_links_the_rest(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"text": "a \\ud800 b Paris"}\n')
    p = run("link", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl"))
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr and "Loading weights" not in p.stderr
    (line,) = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(m["span"], m["id"]) for m in line["entity_mentions"]] == [([6, 11], "Q90")]


def test_link_answers_an_empty_input_without_loading_models(tmp_path: Path) -> None:
    import time

    (tmp_path / "empty.jsonl").write_text("\n")
    start = time.perf_counter()
    p = run("link", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "out.jsonl"))
    assert p.returncode == 0, p.stderr
    assert time.perf_counter() - start < 2.0
    assert (tmp_path / "out.jsonl").read_text() == ""


def test_help_shows_defaults_and_plain_flags_and_errors_are_one_line() -> None:
    p = run("kg", "train", "--help")
    assert p.returncode == 0
    assert "[default: 200]" in p.stdout and "[default: 256]" in p.stdout
    assert "<bool>" not in p.stdout and "--force" in p.stdout
    p = run("kg", "train", "x", "--out", "y", "--epochs", "many")
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("kgpipe: error: ") and "--epochs" in p.stderr


def test_every_subcommand_help_shows_an_example() -> None:
    from typer.main import get_command

    from pipeline.cli import app

    def leaves(group: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
        commands = getattr(group, "commands", None)
        if not commands:
            return [(path, group)]
        return [leaf for name, sub in commands.items() for leaf in leaves(sub, (*path, name))]

    missing = [
        " ".join(p) for p, cmd in leaves(get_command(app)) if "Example: kgpipe" not in (cmd.help or "")
    ]  # type: ignore[attr-defined]
    assert not missing, missing


def test_summaries_and_tables_are_printed_whole_in_a_log(tmp_path: Path) -> None:
    """Off a terminal (a log file, CI) nothing wraps at rich's default 80 columns."""
    deep = tmp_path / ("a-folder-with-a-rather-long-name-" * 3) / "linked-output.jsonl"
    deep.parent.mkdir()
    (tmp_path / "empty.jsonl").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    p = subprocess.run(
        [KGPIPE, "link", str(tmp_path / "empty.jsonl"), "--out", str(deep)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    (summary,) = [line for line in p.stderr.splitlines() if "wrote an empty" in line]
    assert str(deep) in summary  # the whole path on the summary's one line
    p = subprocess.run([KGPIPE, "bundle", "info", str(data_root())], capture_output=True, text=True, env=env)
    assert p.returncode == 0 and max(map(len, p.stdout.splitlines())) > 80, p.stdout[-500:]


def test_a_documents_types_are_the_kg_type_of_its_subject() -> None:
    from pipeline import load
    from pipeline.search import _SubjectTypes

    subject = _SubjectTypes(load(eager=False).kg)
    assert subject("Paris", None) == ["LOC"]  # its title names a KG entity
    assert subject("Albert Einstein", "Q90") == ["PER"]  # the title wins over the opening mention
    assert subject("Lord Kelvin", "Q76") == ["PER"]  # not in the KG: the entity its text opens with
    assert subject("Lord Kelvin", None) == []  # a subject the KG does not hold has no type
    assert subject(None, None) == [] and subject(7, None) == []
