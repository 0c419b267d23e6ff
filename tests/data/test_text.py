"""Tests of the WordNet text suite and the SST-2 TSV loader."""

from pathlib import Path

import numpy as np
import pytest

from jaxlab.data import text

WORDNET = Path(text.DEFAULT_WORDNET_DIR)
needs_wordnet = pytest.mark.skipif(not (WORDNET / "data.noun").is_file(),
                                   reason="WordNet is not installed (apt-get install wordnet-base)")


@pytest.fixture(scope="module")
def synsets():
    return text.load_wordnet(WORDNET)


@needs_wordnet
def test_parses_known_entries(synsets):
    by_key = {(synset.pos, synset.offset): synset for synset in synsets}
    entity = by_key[("noun", 1740)]
    assert entity.lexname == "noun.Tops"
    assert entity.gloss == ("that which is perceived or known or inferred to have its own distinct existence "
                            "(living or nonliving)")
    breathe = by_key[("verb", 1740)]
    assert breathe.lexname == "verb.body"
    assert breathe.gloss.startswith("draw air into, and expel out of, the lungs;")
    assert by_key[("adjective", 1740)].lexname == "adj.all"


@needs_wordnet
def test_synset_counts_match_wordnet_3_0(synsets):
    with open(WORDNET / "data.noun") as handle:
        header = handle.read(3000)
    if "WordNet 3.0" not in header:
        pytest.skip("installed WordNet is not release 3.0")
    counts = {pos: sum(synset.pos == pos for synset in synsets) for pos in text.POS_FILES}
    # Synset counts that WordNet 3.0 publishes in its wnstats(7WN) page.
    assert counts == {"noun": 82115, "verb": 13767, "adjective": 18156, "adverb": 3621}


@needs_wordnet
def test_tasks_balanced_disjoint_and_deterministic(synsets):
    for task in text.TEXT_TASKS.values():
        train_x, train_y, test_x, test_y = text.build_text_task(task, synsets, 30, 10, seed=0)
        assert np.bincount(train_y).tolist() == [30] * len(task.class_names), task.name
        assert np.bincount(test_y).tolist() == [10] * len(task.class_names), task.name
        assert not set(train_x) & set(test_x), task.name
        assert len(set(train_x)) == len(train_x), task.name

        again = text.build_text_task(task, synsets, 30, 10, seed=0)
        assert again[0] == train_x, task.name
        assert again[2] == test_x, task.name
        other = text.build_text_task(task, synsets, 30, 10, seed=1)
        assert other[0] != train_x, task.name


@needs_wordnet
def test_labels_match_wordnet(synsets):
    task = text.TEXT_TASKS["verb_categories"]
    lexnames_by_gloss = {}
    for synset in synsets:
        lexnames_by_gloss.setdefault(synset.gloss, set()).add(synset.lexname)
    train_x, train_y, _, _ = text.build_text_task(task, synsets, 20, 5, seed=0)
    for gloss, label in zip(train_x, train_y):
        assert lexnames_by_gloss[gloss] == {task.class_names[label]}


@needs_wordnet
def test_default_sizes_fit_every_task(synsets):
    for task in text.TEXT_TASKS.values():
        text.build_text_task(task, synsets, 250, 100, seed=0)


@needs_wordnet
def test_cached_task_round_trip(tmp_path, synsets):
    loaded = text.load_text_task("adjective_vs_adverb", train_per_class=15, test_per_class=5, seed=2,
                                 root=tmp_path)
    direct = text.build_text_task(text.TEXT_TASKS["adjective_vs_adverb"], synsets, 15, 5, seed=2)
    assert loaded.train_texts == direct[0]
    np.testing.assert_array_equal(loaded.test_labels, direct[3])
    assert loaded.class_names == ("adjective", "adverb")
    again = text.load_text_task("adjective_vs_adverb", train_per_class=15, test_per_class=5, seed=2,
                                root=tmp_path)
    assert again.test_texts == loaded.test_texts


def test_too_few_examples_rejected():
    synsets = [text.Synset(offset=i, pos="adverb", lexname="adv.all", gloss=f"gloss {i}") for i in range(5)]
    synsets += [text.Synset(offset=i, pos="adjective", lexname="adj.all", gloss=f"adj {i}") for i in range(50)]
    with pytest.raises(ValueError, match="Class 'adverb' .* has 5 distinct glosses"):
        text.build_text_task(text.TEXT_TASKS["adjective_vs_adverb"], synsets, 4, 2, seed=0)


def test_gloss_under_two_labels_dropped():
    shared = "shared gloss"
    synsets = [text.Synset(0, "adverb", "adv.all", shared), text.Synset(0, "adjective", "adj.all", shared)]
    synsets += [text.Synset(i, "adverb", "adv.all", f"adverb {i}") for i in range(1, 4)]
    synsets += [text.Synset(i, "adjective", "adj.all", f"adjective {i}") for i in range(1, 4)]
    train_x, _, test_x, _ = text.build_text_task(text.TEXT_TASKS["adjective_vs_adverb"], synsets, 2, 1, seed=0)
    assert shared not in train_x + test_x


def test_missing_wordnet_names_install(tmp_path, monkeypatch):
    monkeypatch.setenv(text.WORDNET_ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base") as error:
        text.load_wordnet()
    assert text.WORDNET_ENV_VAR in str(error.value)
    assert str(tmp_path / "data.noun") in str(error.value)


def _fake_wordnet(directory, noun_line):
    header = "  1 This software and database is being provided\n"
    (directory / "data.noun").write_text(header + noun_line)
    (directory / "data.verb").write_text(header + "00001740 29 v 01 breathe 0 000 | draw air\n")
    (directory / "data.adj").write_text(header + "00001740 00 a 01 able 0 000 | having means\n")
    (directory / "data.adv").write_text(header + "00001740 02 r 01 barely 0 000 | only just\n")


def test_malformed_data_line_names_file_and_line(tmp_path):
    _fake_wordnet(tmp_path, "00001740 05 n 01 dog 0 000 | a canine\nthis line is broken\n")
    with pytest.raises(ValueError, match=r"data.noun:3: not a WordNet synset line"):
        text.load_wordnet(tmp_path)

    _fake_wordnet(tmp_path, "00001740 05 v 01 dog 0 000 | a canine\n")
    with pytest.raises(ValueError, match=r"data.noun:2: synset type 'v' does not belong"):
        text.load_wordnet(tmp_path)


def test_lexnames_file_overrides_standard_list(tmp_path):
    _fake_wordnet(tmp_path, "00001740 01 n 01 dog 0 000 | a canine\n")
    (tmp_path / "lexnames").write_text("".join(f"{number:02d}\tcustom.{number}\t1\n" for number in range(45)))
    synsets = text.load_wordnet(tmp_path)
    assert synsets[0].lexname == "custom.1"
    assert synsets[0].gloss == "a canine"


def test_encode_decode_texts():
    texts = ["naïve café", "", "tab\tinside", "日本語"]
    data, offsets = text.encode_texts(texts)
    assert data.dtype == np.uint8
    assert offsets.dtype == np.int64
    assert text.decode_texts(data, offsets) == texts


def _write(tmp_path, content, name="train.tsv"):
    path = tmp_path / name
    path.write_text(content)
    return path


def test_sst2_loader_reads_glue_layout(tmp_path):
    path = _write(tmp_path, "sentence\tlabel\nhide new secretions \t0\na gorgeous film\t1\n\n")
    sentences, labels = text.load_sst2_tsv(path)
    assert sentences == ["hide new secretions", "a gorgeous film"]
    assert labels.tolist() == [0, 1]
    assert labels.dtype == np.int32

    indexed = _write(tmp_path, "index\tlabel\tsentence\n0\t1\tgood\n", name="indexed.tsv")
    assert text.load_sst2_tsv(indexed)[0] == ["good"]


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("index\tsentence\n0\tgood\n", r":1: header .* lacks the column\(s\) \['label'\].*test.tsv has no labels"),
    ("sentence\tlabel\ngood\t1\nbad\t0\textra\n", r":3: expected 2 tab-separated fields, got 3"),
    ("sentence\tlabel\ngood\t1\n \t0\n", r":3: empty sentence"),
    ("sentence\tlabel\ngood\tpositive\n", r":2: label 'positive' is not an integer in \[0, 2\)"),
    ("sentence\tlabel\ngood\t2\n", r":2: label '2' is not an integer"),
    ("sentence\tlabel\n", "has a header but no examples"),
])
def test_sst2_loader_rejects_malformed(tmp_path, content, message):
    path = _write(tmp_path, content)
    with pytest.raises(ValueError, match=message) as error:
        text.load_sst2_tsv(path)
    assert str(path) in str(error.value)


def test_sst2_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        text.load_sst2_tsv(tmp_path / "absent.tsv")


def _small_wordnet(directory, adverb_gloss):
    header = "  1 This software and database is being provided\n"
    (directory / "data.noun").write_text(header + "00001740 05 n 01 dog 0 000 | a canine\n")
    (directory / "data.verb").write_text(header + "00001740 29 v 01 breathe 0 000 | draw air\n")
    adjectives = "".join(f"0000{i}000 00 s 01 adj{i} 0 000 | adjective gloss {i}\n" for i in range(3))
    adverbs = "".join(f"0000{i}000 02 r 01 adv{i} 0 000 | {adverb_gloss} {i}\n" for i in range(3))
    (directory / "data.adj").write_text(header + adjectives)
    (directory / "data.adv").write_text(header + adverbs)


def test_new_wordnet_release_is_not_read_from_stale_cache(tmp_path):
    wordnet = tmp_path / "wordnet"
    wordnet.mkdir()
    kwargs = dict(train_per_class=2, test_per_class=1, wordnet_directory=wordnet, root=tmp_path / "cache")
    _small_wordnet(wordnet, "old gloss")
    old = text.load_text_task("adjective_vs_adverb", **kwargs)
    _small_wordnet(wordnet, "new gloss")
    new = text.load_text_task("adjective_vs_adverb", **kwargs)
    assert any(gloss.startswith("old gloss") for gloss in old.train_texts + old.test_texts)
    assert any(gloss.startswith("new gloss") for gloss in new.train_texts + new.test_texts)
    assert not any(gloss.startswith("old gloss") for gloss in new.train_texts + new.test_texts)
