"""The command line as a user runs it: real processes, real model, real embedded Qdrant."""

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _pipeline(*args, cwd=REPO_ROOT):
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_help_lists_commands():
    completed = _pipeline("--help")
    assert completed.returncode == 0
    for command in ("train", "index", "evaluate", "run", "search", "collapse-experiment"):
        assert command in completed.stdout


def test_bad_config_key_exits_2_with_message(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("qdrant:\n  colection: x\n")
    completed = _pipeline("train", "--config", config)
    assert completed.returncode == 2
    assert "qdrant.colection" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_missing_servable_exits_2(tmp_path):
    completed = _pipeline("evaluate", "--model", tmp_path, "--config", REPO_ROOT / "configs" / "smoke.yaml")
    assert completed.returncode == 2
    assert "is not a run directory" in completed.stderr


def test_search_json_on_main_job(main_job):
    config, run_dir, _ = main_job
    completed = _pipeline("search", "a piece of furniture you sit on", "--k", 3, "--json",
                          "--config", run_dir / "config.yaml", "--model", run_dir)
    assert completed.returncode == 0, completed.stderr
    hits = json.loads(completed.stdout)
    assert len(hits) == 3
    for hit in hits:
        assert set(hit["payload"]) >= {"text", "group", "kind", "split", "model_version"}
    assert hits[0]["score"] >= hits[-1]["score"]


def test_search_missing_collection_exits_2(main_job):
    _, run_dir, _ = main_job
    completed = _pipeline("search", "anything", "--config", run_dir / "config.yaml", "--model", run_dir,
                          "--collection", "absent")
    assert completed.returncode == 2
    assert "Collection 'absent' not found" in completed.stderr


def test_search_rejects_k_below_one(main_job):
    _, run_dir, _ = main_job
    completed = _pipeline("search", "anything", "--k", 0, "--config", run_dir / "config.yaml")
    assert completed.returncode == 2
    assert "must be at least 1" in completed.stderr


def test_evaluate_on_non_run_directory(tmp_path):
    completed = _pipeline("evaluate", "--model", tmp_path)
    assert completed.returncode == 2
    assert "is not a run directory" in completed.stderr
