"""Items and groups: the WordNet 3.0 parser, JSONL/CSV readers and the group split.

In: WordNet's ``data.{noun,verb,adj,adv}`` files, or a user's JSONL/CSV file with a
text column and a group column. Out: a list of ``Item`` (text, group, kind) and a
``Split`` that assigns whole groups to train, validation or test, so no text of a
test group is seen in training.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import DataConfig

WORDNET_FILES = {"noun": "data.noun", "verb": "data.verb", "adj": "data.adj", "adv": "data.adv"}

# WordNet 3.0 lexicographer file names, indexed by the two-digit ``lex_filenum`` field
# (from WordNet's lexnames(5WN) manual page).
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)

# Adjective lemmas may carry a syntactic marker such as "(a)", "(p)" or "(ip)".
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")
_QUOTED = re.compile(r'"([^"]+)"')

SPLITS = ("train", "validation", "test")


class DataError(ValueError):
    """Missing or malformed input data."""


@dataclass(frozen=True)
class Item:
    """One text and the group it belongs to."""

    key: str
    text: str
    group: str
    kind: str


@dataclass(frozen=True)
class Synset:
    """One parsed WordNet synset."""

    offset: str
    pos: str
    lexname: str
    lemmas: tuple[str, ...]
    definition: str
    examples: tuple[str, ...]

    @property
    def group(self) -> str:
        return f"{self.pos}.{self.offset}"

    def items(self) -> list[Item]:
        """Return the synset's texts: its definition, its lemma list and each example."""
        texts = [("definition", self.definition), ("lemmas", ", ".join(self.lemmas))]
        texts += [("example", example) for example in self.examples]
        return [
            Item(key=f"{self.group}.{kind}.{index}", text=text, group=self.group, kind=kind)
            for index, (kind, text) in enumerate(texts)
            if text
        ]


def parse_synset_line(line: str) -> Synset:
    """Parse one line of a WordNet ``data.*`` file (format in wndb(5WN)).

    Fields: ``offset lex_filenum ss_type w_cnt (word lex_id)... p_cnt (pointer)... [frames] | gloss``.
    ``w_cnt`` and ``lex_id`` are hexadecimal, ``p_cnt`` is decimal.
    """
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    offset, lex_filenum, ss_type, word_count = fields[0], fields[1], fields[2], int(fields[3], 16)

    lemmas = []
    for index in range(word_count):
        word = fields[4 + 2 * index]
        word = _ADJ_MARKER.sub("", word)
        lemmas.append(word.replace("_", " "))

    definition, examples = _split_gloss(gloss.strip())
    pos = "a" if ss_type == "s" else ss_type  # satellite adjectives live in data.adj
    return Synset(
        offset=offset,
        pos=pos,
        lexname=LEXNAMES[int(lex_filenum)],
        lemmas=tuple(lemmas),
        definition=definition,
        examples=tuple(examples),
    )


def _split_gloss(gloss: str) -> tuple[str, list[str]]:
    """Split a gloss into its definition and its quoted example sentences."""
    quote = gloss.find('"')
    if quote == -1:
        return gloss.strip(" ;"), []
    definition = gloss[:quote].strip(" ;")
    examples = [example.strip() for example in _QUOTED.findall(gloss[quote:]) if example.strip()]
    return definition, examples


def read_wordnet(wordnet_dir: str | Path, parts_of_speech=("noun", "verb", "adj", "adv")) -> list[Synset]:
    """Read every synset of the given parts of speech from a WordNet 3.0 directory.

    Raises:
        DataError: a ``data.*`` file is missing. The message explains how to install it.
    """
    wordnet_dir = Path(wordnet_dir)
    synsets = []
    for pos in parts_of_speech:
        path = wordnet_dir / WORDNET_FILES[pos]
        if not path.is_file():
            raise DataError(
                f"WordNet file not found: {path}. Install WordNet 3.0 with "
                "'sudo apt-get install wordnet-base' (Debian/Ubuntu), or set data.wordnet_dir "
                "to a directory that contains data.noun, data.verb, data.adj and data.adv."
            )
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if line.startswith("  "):  # license header
                    continue
                synsets.append(parse_synset_line(line.rstrip("\n")))
    return synsets


def read_user_file(path: str | Path, source: str, text_column: str, group_column: str,
                   kind_column: str | None = None) -> list[Item]:
    """Read items from a JSONL or CSV file with a text column and a group column.

    The item key is derived from the group and the text, so reordering the file keeps
    each item's key, and an exact duplicate row is kept once.

    Raises:
        DataError: the file is missing or empty, or a row lacks the text or group column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Data file not found: {path}. Set data.path to an existing {source.upper()} file.")
    rows = _read_jsonl(path) if source == "jsonl" else _read_csv(path)

    items: dict[str, Item] = {}
    for line_number, row in rows:
        text = _required_value(row, text_column, path, line_number, "data.text_column")
        group = _required_value(row, group_column, path, line_number, "data.group_column")
        kind = str(row.get(kind_column) or "text") if kind_column else "text"
        key = hashlib.blake2b(f"{group}\x1f{text}".encode(), digest_size=8).hexdigest()
        items.setdefault(key, Item(key=key, text=text, group=group, kind=kind))

    if not items:
        raise DataError(f"Data file {path} has no rows. Add rows with '{text_column}' and '{group_column}' values.")
    return list(items.values())


def _read_jsonl(path: Path):
    with path.open(encoding="utf-8-sig") as lines:  # utf-8-sig drops a byte order mark
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{line_number}: invalid JSON ({error.msg}). Each line must be one JSON object.") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{line_number}: expected a JSON object, got {type(row).__name__}.")
            yield line_number, row


def _read_csv(path: Path):
    with path.open(encoding="utf-8-sig", newline="") as handle:  # utf-8-sig drops a byte order mark
        reader = csv.DictReader(handle)
        for line_number, row in enumerate(reader, start=2):
            yield line_number, row


def _required_value(row: dict, column: str, path: Path, line_number: int, setting: str) -> str:
    if column not in row:
        available = ", ".join(sorted(map(str, row))) or "none"
        raise DataError(
            f"{path}:{line_number}: column '{column}' is missing (columns: {available}). "
            f"Add it, or set {setting} to the column that holds it."
        )
    value = row[column]
    if value is None or not str(value).strip():
        raise DataError(f"{path}:{line_number}: column '{column}' is empty. Every row needs a value there.")
    return str(value).strip()


def load_items(config: DataConfig) -> list[Item]:
    """Load all items named by the data config (before slicing and splitting)."""
    if config.source == "wordnet":
        synsets = read_wordnet(config.wordnet_dir, config.parts_of_speech)
        return [item for synset in synsets for item in synset.items()]
    return read_user_file(config.path, config.source, config.text_column, config.group_column, config.kind_column)


def _unit_hash(seed: int, salt: str, group: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{salt}:{group}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass
class Split:
    """Items by split; groups never cross splits."""

    train: list[Item]
    validation: list[Item]
    test: list[Item]

    def by_name(self, name: str) -> list[Item]:
        return getattr(self, name)

    def all_items(self) -> list[Item]:
        return self.train + self.validation + self.test

    def split_of(self) -> dict[str, str]:
        """Map each item key to its split name."""
        return {item.key: name for name in SPLITS for item in self.by_name(name)}

    def summary(self) -> dict[str, dict[str, int]]:
        return {
            name: {"groups": len({item.group for item in self.by_name(name)}), "items": len(self.by_name(name))}
            for name in SPLITS
        }


def split_items(items: list[Item], config: DataConfig, seed: int) -> Split:
    """Slice and split items by group, seeded and class-disjoint.

    Each group's place is a hash of the seed and the group name, so it does not
    depend on the other groups: when a dataset grows, existing groups keep their
    split. ``max_groups`` keeps the groups with the lowest slice hash.
    """
    groups = sorted({item.group for item in items})
    if config.max_groups is not None and config.max_groups < len(groups):
        groups = sorted(groups, key=lambda group: _unit_hash(seed, "slice", group))[: config.max_groups]
    selected = set(groups)

    test_share = config.split.test
    validation_share = config.split.validation
    assignment = {}
    for group in groups:
        value = _unit_hash(seed, "split", group)
        if value < test_share:
            assignment[group] = "test"
        elif value < test_share + validation_share:
            assignment[group] = "validation"
        else:
            assignment[group] = "train"

    by_split = defaultdict(list)
    for item in items:
        if item.group in selected:
            by_split[assignment[item.group]].append(item)
    split = Split(train=by_split["train"], validation=by_split["validation"], test=by_split["test"])
    fixes = {"train": "lower data.split.test or data.split.validation", "test": "raise data.split.test"}
    for name, fix in fixes.items():
        if not split.by_name(name):
            raise DataError(
                f"The {name} split is empty ({len(groups)} groups in all, test share {test_share}, validation "
                f"share {validation_share}). Add groups (or raise data.max_groups if it is set), or {fix}."
            )
    return split
