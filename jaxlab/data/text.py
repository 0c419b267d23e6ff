"""Offline text classification tasks from WordNet glosses, and a loader for SST-2-style TSV files.

The WordNet suite labels each synset's gloss (its definition and usage
examples) with the synset's lexicographer file, such as `noun.animal` or
`verb.motion`, or with its part of speech. The lexicographer file number is the
second field of every line of WordNet's `data.noun`, `data.verb`, `data.adj`
and `data.adv` (format described in WordNet's wndb(5WN) manual page).

Each task is balanced, with `train_per_class` and `test_per_class` glosses per
class drawn without replacement by a seeded permutation, and cached under
`$JAXLAB_DATA/text_suite/<task>/` by `jaxlab.core.cache`. The cache key
includes the sha256 of the WordNet files, so another WordNet release builds a
separate artefact. Texts are stored as UTF-8 bytes plus offsets, because the
cache stores plain arrays without pickle.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import os
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxlab.core import cache

GENERATOR_VERSION = 1  # Bump whenever the selection or text of examples changes.
WORDNET_ENV_VAR = "WNSEARCHDIR"  # WordNet's own variable for the directory of its database files.
DEFAULT_WORDNET_DIR = "/usr/share/wordnet"
POS_FILES = {"noun": "data.noun", "verb": "data.verb", "adjective": "data.adj", "adverb": "data.adv"}
# The synset types each file may contain: "s" is an adjective satellite.
_SYNSET_TYPES = {"noun": {"n"}, "verb": {"v"}, "adjective": {"a", "s"}, "adverb": {"r"}}

# The 45 lexicographer files of WordNet 3.0, by number, as listed in its lexnames(5WN) manual page.
# Used when the WordNet directory has no `lexnames` file (Debian's wordnet-base ships none).
STANDARD_LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
    "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
    "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
    "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
    "verb.communication", "verb.competition", "verb.consumption", "verb.contact", "verb.creation",
    "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social", "verb.stative",
    "verb.weather", "adj.ppl",
)


@dataclasses.dataclass(frozen=True)
class TextTaskDef:
    """One task of the WordNet suite.

    Attributes:
        name: the task's name, used in cache paths and result tables.
        label_kind: "lexname" (classes are lexicographer files) or "pos"
            (classes are parts of speech, keys of `POS_FILES`).
        class_names: lexicographer file names or parts of speech, in label order.
        description: one sentence on what the label encodes.
    """

    name: str
    label_kind: str
    class_names: tuple[str, ...]
    description: str


# Every class below has at least 350 synsets in WordNet 3.0, which the default sizes need.
TEXT_TASKS = {
    task.name: task
    for task in (
        TextTaskDef("noun_concrete", "lexname",
                    ("noun.animal", "noun.artifact", "noun.body", "noun.food", "noun.object", "noun.person",
                     "noun.plant", "noun.substance"),
                    "lexicographer file of a concrete noun's gloss"),
        TextTaskDef("noun_abstract", "lexname",
                    ("noun.act", "noun.attribute", "noun.cognition", "noun.communication", "noun.feeling",
                     "noun.state", "noun.time", "noun.event"),
                    "lexicographer file of an abstract noun's gloss"),
        TextTaskDef("noun_world", "lexname",
                    ("noun.group", "noun.location", "noun.phenomenon", "noun.possession", "noun.process",
                     "noun.quantity", "noun.relation"),
                    "lexicographer file of a noun gloss about groups, places, amounts and relations"),
        TextTaskDef("verb_categories", "lexname",
                    ("verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
                     "verb.contact", "verb.creation", "verb.motion", "verb.perception", "verb.possession",
                     "verb.social", "verb.stative"),
                    "lexicographer file of a verb's gloss"),
        TextTaskDef("part_of_speech", "pos", ("noun", "verb", "adjective", "adverb"),
                    "part of speech of the word a gloss defines"),
        TextTaskDef("adjective_vs_adverb", "pos", ("adjective", "adverb"),
                    "whether a gloss defines an adjective or an adverb"),
        TextTaskDef("adjective_kind", "lexname", ("adj.all", "adj.pert"),
                    "descriptive adjective or relational adjective (pertainym, e.g. 'of or relating to')"),
    )
}
DEFAULT_TEXT_TASKS = tuple(TEXT_TASKS)


def class_words(class_names: tuple[str, ...]) -> tuple[str, ...]:
    """Return a plain word for each class name: the part after the last dot, "_" read as a space.

    "noun.animal" -> "animal", "adjective" -> "adjective". Some are poor words ("pert" for adj.pert).
    """
    return tuple(name.rsplit(".", 1)[-1].replace("_", " ") for name in class_names)


@dataclasses.dataclass(frozen=True)
class Synset:
    """One parsed line of a WordNet data file.

    Attributes:
        offset: the synset's byte offset in its data file, its id within that part of speech.
        pos: the part of speech, a key of `POS_FILES`.
        lexname: the lexicographer file name, e.g. "noun.animal".
        gloss: the definition and examples after the "|" separator, whitespace-normalised.
    """

    offset: int
    pos: str
    lexname: str
    gloss: str


@dataclasses.dataclass(frozen=True)
class TextTaskData:
    """One text task's splits.

    Attributes:
        name: the task name.
        class_names: one name per label, in label order.
        description: what the label encodes.
        train_texts, test_texts: the example strings.
        train_labels, test_labels: int32 (num_examples,) in [0, num_classes).
    """

    name: str
    class_names: tuple[str, ...]
    description: str
    train_texts: list[str]
    train_labels: np.ndarray
    test_texts: list[str]
    test_labels: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ---------------------------------------------------------------- WordNet parsing


def wordnet_dir() -> Path:
    """Return the WordNet database directory: `$WNSEARCHDIR` if set, otherwise /usr/share/wordnet."""
    return Path(os.environ.get(WORDNET_ENV_VAR) or DEFAULT_WORDNET_DIR)


def _require_wordnet_files(directory: Path) -> dict[str, Path]:
    paths = {pos: directory / file_name for pos, file_name in POS_FILES.items()}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"WordNet data files not found: {', '.join(missing)}. Install them with "
            f"`apt-get install wordnet-base`, or set {WORDNET_ENV_VAR} to a directory that contains "
            f"{', '.join(POS_FILES.values())}.")
    return paths


def read_lexnames(directory: Path) -> tuple[str, ...]:
    """Read `directory/lexnames` ("NN name syntactic_category" lines) or return `STANDARD_LEXNAMES`."""
    path = directory / "lexnames"
    if not path.is_file():
        return STANDARD_LEXNAMES
    names = {}
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or not fields[0].isdigit():
            raise ValueError(f"{path}:{line_number}: expected 'number name category', got {line!r}.")
        names[int(fields[0])] = fields[1]
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{path}: lexicographer file numbers are not 0..{len(names) - 1}.")
    return tuple(names[number] for number in range(len(names)))


def parse_data_file(path: Path, pos: str, lexnames: Sequence[str]) -> list[Synset]:
    """Parse one WordNet data file into synsets, skipping the licence header.

    Raises:
        ValueError: naming the file and line for a line that is not a synset
            record, has an unknown lexicographer file number or a synset type
            that does not belong in this file.
    """
    synsets = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.startswith("  "):  # Licence header lines start with two spaces.
                continue
            record, separator, gloss = line.partition(" | ")
            fields = record.split()
            if not separator or len(fields) < 4 or not fields[0].isdigit() or not fields[1].isdigit():
                raise ValueError(f"{path}:{line_number}: not a WordNet synset line "
                                 "('offset lex_filenum ss_type w_cnt ... | gloss').")
            lex_number, synset_type = int(fields[1]), fields[2]
            if lex_number >= len(lexnames):
                raise ValueError(f"{path}:{line_number}: lexicographer file number {lex_number} is not "
                                 f"below the {len(lexnames)} known lexicographer files.")
            if synset_type not in _SYNSET_TYPES[pos]:
                raise ValueError(f"{path}:{line_number}: synset type {synset_type!r} does not belong in a "
                                 f"{pos} file.")
            synsets.append(Synset(offset=int(fields[0]), pos=pos, lexname=lexnames[lex_number],
                                  gloss=" ".join(gloss.split())))
    return synsets


def load_wordnet(directory: str | Path | None = None) -> list[Synset]:
    """Parse every synset of the four WordNet data files, in file order."""
    directory = Path(directory) if directory is not None else wordnet_dir()
    paths = _require_wordnet_files(directory)
    lexnames = read_lexnames(directory)
    synsets = []
    for pos, path in paths.items():
        synsets.extend(parse_data_file(path, pos, lexnames))
    return synsets


@functools.lru_cache(maxsize=2)
def _load_wordnet_once(directory: str, fingerprint: tuple) -> tuple[Synset, ...]:
    """Parse WordNet once per (directory, file digests) when a suite builds several tasks."""
    del fingerprint  # Only part of the cache key, so that edited files are parsed again.
    return tuple(load_wordnet(directory))


def wordnet_fingerprint(directory: Path) -> dict[str, str]:
    """Return the sha256 of each WordNet data file, which identifies the WordNet release."""
    paths = _require_wordnet_files(directory)
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in paths.values()}


# ---------------------------------------------------------------- task construction


def build_text_task(
    task: TextTaskDef,
    synsets: Sequence[Synset],
    train_per_class: int,
    test_per_class: int,
    seed: int,
) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """Draw a balanced train and test split for one task from parsed synsets.

    A gloss that occurs under two classes is dropped and one that occurs twice
    under one class is kept once, so no text sits in both splits or under two
    labels.

    Returns:
        train texts, train labels int32, test texts, test labels int32, each
        split shuffled.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}.")
    texts_by_class: dict[str, set[str]] = {name: set() for name in task.class_names}
    for synset in synsets:
        label_name = synset.lexname if task.label_kind == "lexname" else synset.pos
        if label_name in texts_by_class:
            texts_by_class[label_name].add(synset.gloss)
    seen_under: dict[str, int] = {}
    for texts in texts_by_class.values():
        for text in texts:
            seen_under[text] = seen_under.get(text, 0) + 1

    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(task.name.encode()),)))
    needed = train_per_class + test_per_class
    train, test = [], []
    for label, name in enumerate(task.class_names):
        candidates = sorted(text for text in texts_by_class[name] if seen_under[text] == 1)
        if len(candidates) < needed:
            raise ValueError(
                f"Class {name!r} of text task {task.name!r} has {len(candidates)} distinct glosses, fewer than "
                f"train_per_class + test_per_class = {needed}; lower the per-class sizes.")
        chosen = rng.permutation(len(candidates))[:needed]
        test.extend((candidates[index], label) for index in chosen[:test_per_class])
        train.extend((candidates[index], label) for index in chosen[test_per_class:])

    def shuffled(examples):
        order = rng.permutation(len(examples))
        texts = [examples[index][0] for index in order]
        labels = np.array([examples[index][1] for index in order], np.int32)
        return texts, labels

    train_texts, train_labels = shuffled(train)
    test_texts, test_labels = shuffled(test)
    return train_texts, train_labels, test_texts, test_labels


def encode_texts(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Pack strings into UTF-8 bytes uint8 (total,) and offsets int64 (len + 1,)."""
    encoded = [text.encode("utf-8") for text in texts]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    offsets[1:] = np.cumsum([len(item) for item in encoded])
    return np.frombuffer(b"".join(encoded), np.uint8).copy(), offsets


def decode_texts(data: np.ndarray, offsets: np.ndarray) -> list[str]:
    """Invert `encode_texts`."""
    raw = data.tobytes()
    return [raw[start:stop].decode("utf-8") for start, stop in zip(offsets[:-1], offsets[1:])]


def load_text_task(
    name: str,
    *,
    train_per_class: int = 250,
    test_per_class: int = 100,
    seed: int = 0,
    wordnet_directory: str | Path | None = None,
    root: str | Path | None = None,
) -> TextTaskData:
    """Load one WordNet task from the cache, building and caching it first if absent.

    Args:
        name: a key of `TEXT_TASKS`.
        train_per_class, test_per_class: glosses per class in each split.
        seed: selection and order seed; the same seed gives the same examples.
        wordnet_directory: WordNet database directory; `wordnet_dir()` when None.
        root: cache root; `$JAXLAB_DATA` or `~/.cache/jaxlab` when None.
    """
    if name not in TEXT_TASKS:
        raise ValueError(f"Unknown text task {name!r}; expected one of {sorted(TEXT_TASKS)}.")
    for field, value in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{field} must be an int >= 1, got {value!r}.")
    task = TEXT_TASKS[name]
    directory = Path(wordnet_directory) if wordnet_directory is not None else wordnet_dir()
    params = {"train_per_class": train_per_class, "test_per_class": test_per_class,
              "label_kind": task.label_kind, "class_names": list(task.class_names),
              "wordnet_sha256": wordnet_fingerprint(directory)}
    spec = cache.ArtifactSpec(name=f"text_suite/{name}", version=GENERATOR_VERSION, params=params, seed=seed)

    def generate():
        synsets = _load_wordnet_once(str(directory.resolve()), tuple(sorted(params["wordnet_sha256"].items())))
        train_texts, train_labels, test_texts, test_labels = build_text_task(
            task, synsets, train_per_class, test_per_class, seed)
        train_bytes, train_offsets = encode_texts(train_texts)
        test_bytes, test_offsets = encode_texts(test_texts)
        arrays = {"train_text_bytes": train_bytes, "train_text_offsets": train_offsets,
                  "train_labels": train_labels, "test_text_bytes": test_bytes,
                  "test_text_offsets": test_offsets, "test_labels": test_labels}
        return arrays, {"class_names": list(task.class_names), "description": task.description}

    arrays, metadata = cache.load_or_build_arrays(spec, generate, root)
    return TextTaskData(
        name=name, class_names=tuple(metadata["class_names"]), description=metadata["description"],
        train_texts=decode_texts(arrays["train_text_bytes"], arrays["train_text_offsets"]),
        train_labels=arrays["train_labels"],
        test_texts=decode_texts(arrays["test_text_bytes"], arrays["test_text_offsets"]),
        test_labels=arrays["test_labels"])


def load_text_suite(tasks: Sequence[str] = DEFAULT_TEXT_TASKS, **kwargs) -> list[TextTaskData]:
    """Load several WordNet tasks; keyword arguments go to `load_text_task`."""
    return [load_text_task(name, **kwargs) for name in tasks]


# ---------------------------------------------------------------- SST-2-style TSV files


def load_sst2_tsv(path: str | Path, num_classes: int = 2) -> tuple[list[str], np.ndarray]:
    """Read a GLUE SST-2-style TSV file: a header naming `sentence` and `label` columns, then one example per line.

    Other columns (such as GLUE's `index`) are ignored. Fields are split on
    tabs only, without quoting, as GLUE writes them.

    Returns:
        sentences and int32 labels (num_examples,).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file and line number for a missing header
            column, a line with the wrong number of fields, an empty sentence
            or a label that is not an integer in [0, num_classes).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SST-2 file {path} not found.")
    sentences, labels = [], []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path} is empty; expected a header line 'sentence<TAB>label'.")
        missing = [column for column in ("sentence", "label") if column not in header]
        if missing:
            hint = " (GLUE's test.tsv has no labels; use train.tsv or dev.tsv)" if "label" in missing else ""
            raise ValueError(f"{path}:1: header {header!r} lacks the column(s) {missing}; expected "
                             f"'sentence<TAB>label'{hint}.")
        sentence_column, label_column = header.index("sentence"), header.index("label")
        for fields in reader:
            line_number = reader.line_num
            if not fields:
                continue  # A blank line, e.g. a trailing newline.
            if len(fields) != len(header):
                raise ValueError(f"{path}:{line_number}: expected {len(header)} tab-separated fields, got "
                                 f"{len(fields)}; a sentence may contain a tab.")
            sentence, label_text = fields[sentence_column].strip(), fields[label_column].strip()
            if not sentence:
                raise ValueError(f"{path}:{line_number}: empty sentence.")
            if not label_text.lstrip("-").isdigit() or not 0 <= int(label_text) < num_classes:
                raise ValueError(f"{path}:{line_number}: label {label_text!r} is not an integer in "
                                 f"[0, {num_classes}).")
            sentences.append(sentence)
            labels.append(int(label_text))
    if not sentences:
        raise ValueError(f"{path} has a header but no examples.")
    return sentences, np.array(labels, np.int32)
