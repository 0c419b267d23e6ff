"""Tests of the artefact cache: round trip, manifest checks, corruption and atomic builds."""

import json
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

from jaxlab.core import cache


def _spec(**params):
    return cache.ArtifactSpec(name="tests/toy", version=1, params={"size": 4, **params}, seed=0)


def _generate():
    arrays = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "y": np.array([1, 2, 3], np.int32)}
    return arrays, {"class_names": ["a", "b"]}


def test_round_trip_and_manifest(tmp_path):
    spec = _spec()
    arrays, metadata = cache.load_or_build_arrays(spec, _generate, root=tmp_path)

    np.testing.assert_array_equal(arrays["x"], _generate()[0]["x"])
    assert arrays["y"].dtype == np.int32
    assert metadata == {"class_names": ["a", "b"]}
    manifest = cache.read_manifest(cache.artifact_dir(spec, tmp_path))
    assert manifest["params"] == {"size": 4}
    assert manifest["seed"] == 0
    assert manifest["arrays"]["x"] == {"file": "x.npy", "shape": [3, 4], "dtype": "<f4"}
    assert set(manifest["files"]) == {"x.npy", "y.npy"}
    assert len(manifest["files"]["x.npy"]["sha256"]) == 64


def test_second_load_does_not_regenerate(tmp_path):
    calls = []

    def generate():
        calls.append(1)
        return _generate()

    cache.load_or_build_arrays(_spec(), generate, root=tmp_path)
    cache.load_or_build_arrays(_spec(), generate, root=tmp_path)
    assert len(calls) == 1


def test_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "elsewhere"))
    assert cache.cache_root() == tmp_path / "elsewhere"
    assert cache.artifact_dir(_spec()).is_relative_to(tmp_path / "elsewhere" / "tests" / "toy")


def test_other_params_get_other_directory(tmp_path):
    assert cache.artifact_dir(_spec(), tmp_path) != cache.artifact_dir(_spec(size=5), tmp_path)
    seeded = cache.ArtifactSpec(name="tests/toy", version=1, params={"size": 4}, seed=1)
    assert cache.artifact_dir(_spec(), tmp_path) != cache.artifact_dir(seeded, tmp_path)


def test_corrupted_file_is_rejected(tmp_path):
    spec = _spec()
    cache.load_or_build_arrays(spec, _generate, root=tmp_path)
    path = cache.artifact_dir(spec, tmp_path) / "x.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # Same size, one flipped byte.
    path.write_bytes(bytes(data))

    with pytest.raises(cache.CacheError, match="x.npy has sha256") as error:
        cache.load_arrays(spec, root=tmp_path)
    assert "rm -r" in str(error.value)
    # A later build must not silently paper over the corruption either.
    with pytest.raises(cache.CacheError, match="corrupt"):
        cache.load_or_build_arrays(spec, _generate, root=tmp_path)


def test_truncated_missing_and_extra_files_are_rejected(tmp_path):
    spec = _spec()
    cache.load_or_build_arrays(spec, _generate, root=tmp_path)
    directory = cache.artifact_dir(spec, tmp_path)

    (directory / "extra.txt").write_text("stray")
    with pytest.raises(cache.CacheError, match="extra.txt is not listed"):
        cache.open_artifact(spec, tmp_path)
    (directory / "extra.txt").unlink()

    with open(directory / "y.npy", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(cache.CacheError, match="y.npy has .* bytes"):
        cache.open_artifact(spec, tmp_path)

    (directory / "y.npy").unlink()
    with pytest.raises(cache.CacheError, match="y.npy listed in manifest.json is missing"):
        cache.open_artifact(spec, tmp_path)


def test_mismatched_manifest_is_rejected(tmp_path):
    spec = _spec()
    cache.load_or_build_arrays(spec, _generate, root=tmp_path)
    path = cache.artifact_dir(spec, tmp_path) / cache.MANIFEST

    manifest = json.loads(path.read_text())
    manifest["params"]["size"] = 5
    path.write_text(json.dumps(manifest))
    with pytest.raises(cache.CacheError, match="params"):
        cache.open_artifact(spec, tmp_path)

    manifest["params"]["size"] = 4
    manifest["arrays"]["x"]["shape"] = [4, 3]
    path.write_text(json.dumps(manifest))
    with pytest.raises(cache.CacheError, match="x.npy holds an array of shape"):
        cache.load_arrays(spec, tmp_path)

    path.write_text("{not json")
    with pytest.raises(cache.CacheError, match="unreadable"):
        cache.open_artifact(spec, tmp_path)


def test_failed_build_leaves_nothing(tmp_path):
    def write(directory):
        (directory / "part.bin").write_bytes(b"half")
        raise RuntimeError("generator failed")

    with pytest.raises(RuntimeError, match="generator failed"):
        cache.build_artifact(_spec(), write, root=tmp_path)
    assert not cache.artifact_dir(_spec(), tmp_path).exists()
    assert list((tmp_path / "tests" / "toy").iterdir()) == []


def _build_slowly(root, started):
    def write(directory):
        (directory / "part.bin").write_bytes(b"half")
        started.set()
        time.sleep(60)

    cache.build_artifact(_spec(), write, root=root)


def test_killed_build_looks_incomplete_and_is_cleaned(tmp_path):
    # "spawn" because forking a process that has started JAX's threads is unsafe.
    context = multiprocessing.get_context("spawn")
    started = context.Event()
    process = context.Process(target=_build_slowly, args=(tmp_path, started))
    process.start()
    assert started.wait(30)
    os.kill(process.pid, signal.SIGKILL)
    process.join()

    final = cache.artifact_dir(_spec(), tmp_path)
    assert not final.exists()
    leftovers = list(final.parent.glob(".tmp-*"))
    assert len(leftovers) == 1
    with pytest.raises(cache.CacheError, match="does not exist"):
        cache.open_artifact(_spec(), tmp_path)

    cache.load_or_build_arrays(_spec(), _generate, root=tmp_path)
    assert not leftovers[0].exists()
    assert cache.load_arrays(_spec(), tmp_path)["y"].tolist() == [1, 2, 3]


def test_directory_without_manifest_is_rejected(tmp_path):
    final = cache.artifact_dir(_spec(), tmp_path)
    final.mkdir(parents=True)
    (final / "x.npy").write_bytes(b"")
    with pytest.raises(cache.CacheError, match="no manifest.json, so it is incomplete"):
        cache.load_or_build_arrays(_spec(), _generate, root=tmp_path)


def test_concurrent_build_keeps_first_copy(tmp_path):
    spec = _spec()

    def write(directory):
        # Another builder finishes the same artefact while this one writes.
        cache.load_or_build_arrays(spec, _generate, root=tmp_path)
        np.save(directory / "x.npy", np.zeros(1), allow_pickle=False)
        return {}

    directory = cache.build_artifact(spec, write, root=tmp_path)
    assert cache.load_arrays(spec, tmp_path)["x"].shape == (3, 4)
    assert directory == cache.artifact_dir(spec, tmp_path)


def test_invalid_specs_and_arrays_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="Invalid artefact name"):
        cache.ArtifactSpec(name="../escape", version=1, params={})
    with pytest.raises(ValueError, match="JSON-serialisable"):
        cache.ArtifactSpec(name="ok", version=1, params={"x": object()})
    with pytest.raises(ValueError, match="dtype object"):
        cache.save_arrays(tmp_path, {"texts": np.array(["a", None], dtype=object)})
