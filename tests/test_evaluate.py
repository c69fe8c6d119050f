"""Retrieval metrics on a hand-computed case, and the end-to-end main job on a WordNet slice."""

import json
import math

import pytest

from pipeline.data import Item
from pipeline.evaluate import METRIC_DEFINITIONS, EvaluationError, ann_recall, build_query_set, retrieval_metrics
from pipeline.report import metric_order


def test_metrics_hand_computed():
    # Query 1: relevant {a, b}, ranking a x b -> hits at ranks 1 and 3.
    # Query 2: relevant {c},    ranking y z c -> hit at rank 3.
    rankings = [["a", "x", "b"], ["y", "z", "c"]]
    relevant = [{"a", "b"}, {"c"}]
    metrics = retrieval_metrics(rankings, relevant, [1, 2, 3])
    assert metrics["recall@1"] == pytest.approx((0.5 + 0.0) / 2)
    assert metrics["recall@2"] == pytest.approx((0.5 + 0.0) / 2)
    assert metrics["recall@3"] == pytest.approx((1.0 + 1.0) / 2)
    assert metrics["hit_rate@1"] == pytest.approx(0.5)
    assert metrics["hit_rate@3"] == pytest.approx(1.0)
    assert metrics["mrr@10"] == pytest.approx((1.0 + 1.0 / 3) / 2)
    # MAP@R: query 1 has R = 2 and one hit in the top 2, at rank 1 -> (1/1) / 2 = 0.5;
    # query 2 has R = 1 and no hit at rank 1 -> 0.
    assert metrics["map@r"] == pytest.approx(0.25)


def test_map_at_r_perfect_and_late():
    perfect = retrieval_metrics([["a", "b", "x"]], [{"a", "b"}], [1])
    assert perfect["map@r"] == pytest.approx(1.0)
    late = retrieval_metrics([["x", "a", "b"]], [{"a", "b"}], [1])
    assert late["map@r"] == pytest.approx((1 / 2) / 2)


def test_ann_recall_overlap():
    assert ann_recall([["a", "b"], ["c", "d"]], [["a", "b"], ["c", "e"]], 2) == pytest.approx(0.75)


def test_query_set_excludes_query_from_relevant():
    items = [Item("1", "def one", "g1", "definition"), Item("2", "lemma one", "g1", "lemmas"),
             Item("3", "def two", "g2", "definition")]
    query_set = build_query_set(items, items, "definition")
    assert [item.key for item in query_set.queries] == ["1"]
    assert query_set.relevant == [{"2"}]


def test_no_queries_names_kinds():
    items = [Item("1", "text", "g1", "text"), Item("2", "other", "g1", "text")]
    with pytest.raises(EvaluationError, match="kinds present: text"):
        build_query_set(items, items, "definition")
    assert len(build_query_set(items, items, None).queries) == 2


def test_main_job_writes_every_metric(main_job):
    config, run_dir, _ = main_job
    document = json.loads((run_dir / "metrics.json").read_text())
    expected = metric_order(config.evaluation.k)
    for model in ("baseline", "fine_tuned"):
        values = document["models"][model]
        for name in expected:
            assert name in values, f"{model} lacks {name}"
            assert 0.0 <= values[name] <= 1.0, f"{model} {name} = {values[name]}"
    for row in document["metrics"]:
        assert row["definition"] in METRIC_DEFINITIONS
        assert not math.isnan(row["delta"])


def test_main_job_report_files(main_job):
    _, run_dir, document = main_job
    report = (run_dir / "report.md").read_text()
    assert "| recall@10 |" in report
    assert (run_dir / "recall_at_k.png").stat().st_size > 1000
    assert (run_dir / "training_curves.png").stat().st_size > 1000
    assert document["setting"]["index_scope"] == "test"
    assert document["setting"]["queries"] > 0


def test_main_job_no_collapse_alarm(main_job):
    _, _, document = main_job
    assert document["training"]["collapse_alarms"] == []
    assert document["training"]["monitor_history"], "the monitor recorded nothing"


def test_evaluate_again_gives_same_numbers(main_job):
    from pipeline.run import evaluate_run

    config, run_dir, document = main_job
    again = evaluate_run(config, run_dir)
    for model in ("baseline", "fine_tuned"):
        for name in ("recall@10", "map@r", "mrr@10"):
            assert again["models"][model][name] == pytest.approx(document["models"][model][name])


def test_harder_setting_with_distractors(main_job, tmp_path):
    from pipeline.config import merge, parse_config
    from pipeline.run import evaluate_run

    config, run_dir, document = main_job
    harder = parse_config(merge(config.model_dump(mode="json"), {"evaluation": {"index_scope": "all"}}))
    result = evaluate_run(harder, run_dir)
    assert result["setting"]["corpus_items"] > document["setting"]["corpus_items"]
    assert result["setting"]["queries"] == document["setting"]["queries"]
    assert result["models"]["baseline"]["recall@10"] <= document["models"]["baseline"]["recall@10"] + 1e-9


def test_main_job_on_user_jsonl(tmp_path, wordnet_dir):
    from pipeline.config import parse_config
    from pipeline.data import read_wordnet
    from pipeline.run import run_main_job

    synsets = read_wordnet(wordnet_dir, ["verb"])[:300]
    path = tmp_path / "phrases.jsonl"
    with path.open("w") as handle:
        for synset in synsets:
            for item in synset.items():
                handle.write(json.dumps({"phrase": item.text, "sense": synset.group}) + "\n")

    config = parse_config({
        "name": "user", "output_dir": str(tmp_path / "runs"),
        "data": {"source": "jsonl", "name": "phrases", "path": str(path), "text_column": "phrase",
                 "group_column": "sense", "split": {"validation": 0.2, "test": 0.2}},
        "model": {"head": "linear"},
        "training": {"epochs": 1, "groups_per_batch": 8, "monitor": {"sample_size": 32}},
        "evaluation": {"query_kind": None},
    })
    document = run_main_job(config)
    for model in ("baseline", "fine_tuned"):
        assert 0.0 <= document["models"][model]["recall@10"] <= 1.0
    assert document["setting"]["dataset"] == "phrases"
    assert document["setting"]["queries"] == document["setting"]["corpus_items"]
