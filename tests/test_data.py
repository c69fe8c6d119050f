"""WordNet parser on the real files, user JSONL/CSV files, and the group split."""

import json
from collections import Counter

import pytest

from pipeline.config import DataConfig
from pipeline.data import DataError, parse_synset_line, read_user_file, read_wordnet, split_items

# WordNet 3.0 synset counts per data file (adjectives include satellites), and the
# texts this parser derives: one definition, one lemma list and each example.
EXPECTED_SYNSETS = {"n": 82115, "v": 13767, "a": 18156, "r": 3621}
EXPECTED_TEXTS = {"n": 175719, "v": 40062, "a": 56494, "r": 11382}


@pytest.fixture(scope="module")
def synsets(wordnet_dir):
    return read_wordnet(wordnet_dir)


def test_synset_counts_by_part_of_speech(synsets):
    assert Counter(synset.pos for synset in synsets) == EXPECTED_SYNSETS


def test_text_counts_by_part_of_speech(synsets):
    counts = Counter()
    for synset in synsets:
        counts[synset.pos] += len(synset.items())
    assert counts == EXPECTED_TEXTS
    assert sum(counts.values()) == 283657


def test_parse_verb_line_with_examples(synsets):
    breathe = next(s for s in synsets if s.pos == "v" and s.offset == "00001740")
    assert breathe.lexname == "verb.body"
    assert breathe.lemmas == ("breathe", "take a breath", "respire", "suspire")
    assert breathe.definition == "draw air into, and expel out of, the lungs"
    assert breathe.examples == ("I can breathe better when the air is clean", "The patient is respiring")
    kinds = [item.kind for item in breathe.items()]
    assert kinds == ["definition", "lemmas", "example", "example"]


def test_parse_adjective_marker_removed():
    line = ("01118476 00 s 01 tall(a) 0 001 & 01117862 a 0000 | great in vertical dimension; "
            '"tall people"; "a tall building"  ')
    synset = parse_synset_line(line)
    assert synset.pos == "a"
    assert synset.lemmas == ("tall",)
    assert synset.definition == "great in vertical dimension"
    assert synset.examples == ("tall people", "a tall building")


def test_missing_wordnet_says_how_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install wordnet-base"):
        read_wordnet(tmp_path)


def test_split_is_class_disjoint(synsets):
    items = [item for synset in synsets[:5000] for item in synset.items()]
    split = split_items(items, DataConfig(split={"validation": 0.1, "test": 0.2}), seed=3)
    groups = {name: {item.group for item in split.by_name(name)} for name in ("train", "validation", "test")}
    assert not groups["train"] & groups["test"]
    assert not groups["train"] & groups["validation"]
    assert not groups["validation"] & groups["test"]
    assert len(split.all_items()) == len(items)
    assert 0.15 < len(groups["test"]) / 5000 < 0.25


def test_split_is_seeded_and_stable(synsets):
    items = [item for synset in synsets[:3000] for item in synset.items()]
    config = DataConfig(max_groups=1000)
    first = split_items(items, config, seed=1)
    again = split_items(items, config, seed=1)
    other = split_items(items, config, seed=2)
    assert [item.key for item in first.test] == [item.key for item in again.test]
    assert {item.group for item in first.test} != {item.group for item in other.test}
    assert len({item.group for item in first.all_items()}) == 1000


def test_group_keeps_split_when_data_grows(synsets):
    items = [item for synset in synsets[:4000] for item in synset.items()]
    small = split_items(items[: len(items) // 2], DataConfig(), seed=5).split_of()
    large = split_items(items, DataConfig(), seed=5).split_of()
    assert all(large[key] == name for key, name in small.items())


def test_jsonl_reader(tmp_path):
    path = tmp_path / "items.jsonl"
    rows = [{"body": "a red apple", "label": "fruit"}, {"body": "a green pear", "label": "fruit"},
            {"body": "a red apple", "label": "fruit"}, {"body": "a fast car", "label": "vehicle"}]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    items = read_user_file(path, "jsonl", "body", "label")
    assert len(items) == 3
    assert {item.group for item in items} == {"fruit", "vehicle"}
    assert items[0].kind == "text"


def test_csv_reader_missing_column_names_it(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("text,category\nhello,greeting\n")
    with pytest.raises(DataError) as error:
        read_user_file(path, "csv", "text", "group")
    message = str(error.value)
    assert "'group' is missing" in message
    assert "category" in message
    assert "data.group_column" in message


def test_jsonl_invalid_line_names_line(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"text": "ok", "group": "g"}\n{not json}\n')
    with pytest.raises(DataError, match=r"items.jsonl:2: invalid JSON"):
        read_user_file(path, "jsonl", "text", "group")


def test_empty_text_is_rejected(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("text,group\n ,g\n")
    with pytest.raises(DataError, match="'text' is empty"):
        read_user_file(path, "csv", "text", "group")


def test_csv_with_byte_order_mark(tmp_path):
    path = tmp_path / "items.csv"
    path.write_bytes("\ufefftitle,sku\nred apple,1\n".encode("utf-8"))
    items = read_user_file(path, "csv", "title", "sku")
    assert [item.text for item in items] == ["red apple"]


def test_empty_test_split_says_what_to_change(synsets):
    items = [item for synset in synsets[:3] for item in synset.items()]
    with pytest.raises(DataError, match="raise data.split.test"):
        split_items(items, DataConfig(split={"validation": 0.0, "test": 0.01}), seed=0)
