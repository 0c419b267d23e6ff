"""A cache of generated data sets and trained models under `$JAXLAB_DATA` (default `~/.cache/jaxlab`).

Each artefact is one directory, `<root>/<name>/v<version>-<key>`, where `key`
is a digest of the generator parameters and the seed, so artefacts built with
different parameters sit side by side. The directory holds the artefact's
files and a `manifest.json` that records:

- `name`, `version`, `params` (the generator parameters, JSON), `seed`;
- `created` (UTC, ISO 8601) and `format` (the manifest layout version);
- `files`: the sha256 digest and size in bytes of every file;
- `arrays`: file, shape and dtype of every array saved with `save_arrays`;
- `metadata`: free JSON such as class names.

Writes are atomic. A builder writes into a hidden temporary directory next to
the final one and renames it into place after every file and the manifest are
written and synced. A process killed during a build therefore leaves only a
`.tmp-*` directory, which readers ignore and the next build on that host
removes. When two processes build the same artefact at once, the first rename
wins and the other process reads the winner's copy.

Every read checks the manifest against the request (name, version, parameters,
seed) and every file against its recorded size and sha256, and array reads
also check shapes and dtypes. Any mismatch raises `CacheError`, which names
the file and says to delete the artefact directory so that it is regenerated.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from absl import logging

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
ENV_VAR = "JAXLAB_DATA"

_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)*")
_ARRAY_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_TMP_PREFIX = ".tmp-"
_HASH_CHUNK_BYTES = 1 << 20


class CacheError(Exception):
    """A cached artefact that is missing, incomplete, corrupt or built with other parameters."""


@dataclasses.dataclass(frozen=True)
class ArtifactSpec:
    """The identity of one artefact.

    Attributes:
        name: slash-separated name such as "image_suite/digits"; each part uses
            letters, digits, "_", "." and "-".
        version: the generator version. Bump it whenever the generator's output
            for the same parameters and seed changes, so stale copies are not read.
        params: the generator parameters, a JSON-serialisable mapping.
        seed: the generator seed, or None for deterministic artefacts without one.
    """

    name: str
    version: int
    params: Mapping[str, Any]
    seed: int | None = None

    def __post_init__(self):
        if not _NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"Invalid artefact name {self.name!r}: use slash-separated parts of letters, "
                             "digits, '_', '.' and '-'.")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 0:
            raise ValueError(f"Artefact version must be an int >= 0, got {self.version!r}.")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"Artefact seed must be an int or None, got {self.seed!r}.")
        # Round-trip through JSON so that the recorded parameters compare equal
        # to the requested ones (tuples become lists, keys become strings).
        try:
            canonical = json.loads(_canonical_json(dict(self.params)))
        except (TypeError, ValueError) as error:
            raise ValueError(f"Artefact params of {self.name!r} must be JSON-serialisable: {error}") from None
        object.__setattr__(self, "params", canonical)

    @property
    def key(self) -> str:
        """A 16-hex-digit digest of the parameters and seed."""
        payload = _canonical_json({"params": self.params, "seed": self.seed})
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cache_root() -> Path:
    """Return the cache root: `$JAXLAB_DATA` if set, otherwise `~/.cache/jaxlab`."""
    root = os.environ.get(ENV_VAR)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "jaxlab"


def artifact_dir(spec: ArtifactSpec, root: str | os.PathLike[str] | None = None) -> Path:
    """Return the directory where `spec`'s artefact lives (whether or not it exists)."""
    base = Path(root) if root is not None else cache_root()
    return base / spec.name / f"v{spec.version}-{spec.key}"


def build_artifact(
    spec: ArtifactSpec,
    write: Callable[[Path], Mapping[str, Any] | None],
    root: str | os.PathLike[str] | None = None,
) -> Path:
    """Build an artefact atomically unless a complete copy exists, and return its directory.

    Args:
        spec: the artefact's identity.
        write: called with an empty temporary directory; writes the artefact's
            files there (subdirectories allowed) and returns extra manifest
            entries (`metadata`, `arrays`) or None. It must not write `manifest.json`.
        root: the cache root; `cache_root()` when None.

    Returns:
        The final directory, already checked with `open_artifact`.
    """
    final = artifact_dir(spec, root)
    if final.exists():
        return open_artifact(spec, root)

    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(final)
    temporary = final.parent / f"{_TMP_PREFIX}{final.name}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    temporary.mkdir()
    try:
        extra = dict(write(temporary) or {})
        unknown = set(extra) - {"metadata", "arrays"}
        if unknown:
            raise ValueError(f"write() may return only 'metadata' and 'arrays' entries, got {sorted(unknown)}.")
        if (temporary / MANIFEST).exists():
            raise ValueError(f"write() must not create {MANIFEST}; build_artifact writes it.")
        _write_manifest(temporary, spec, extra)
        _fsync_tree(temporary)
        try:
            os.rename(temporary, final)
        except OSError as error:
            # Another process renamed its copy into place first: keep that one.
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            logging.info("Artefact %s was built concurrently by another process; using that copy.", final)
        else:
            _fsync_directory(final.parent)
            logging.info("Built cache artefact %s.", final)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return open_artifact(spec, root)


def open_artifact(spec: ArtifactSpec, root: str | os.PathLike[str] | None = None) -> Path:
    """Check a cached artefact's manifest and every file's size and sha256, and return its directory.

    Raises:
        CacheError: if the artefact is absent, has no readable manifest, was
            built for another name, version, parameters or seed, or has a
            missing, extra, resized or altered file.
    """
    directory = artifact_dir(spec, root)
    if not directory.is_dir():
        raise CacheError(f"Cache artefact {directory} does not exist; build it first.")
    manifest = read_manifest(directory)

    requested = {"name": spec.name, "version": spec.version, "params": spec.params, "seed": spec.seed}
    for field, value in requested.items():
        if manifest.get(field) != value:
            raise CacheError(
                f"{directory / MANIFEST} records {field}={manifest.get(field)!r} but {value!r} was requested. "
                f"{_fix(directory)}")

    recorded = manifest["files"]
    present = {path.relative_to(directory).as_posix() for path in directory.rglob("*") if path.is_file()}
    present.discard(MANIFEST)
    for relative in sorted(set(recorded) - present):
        raise CacheError(f"File {directory / relative} listed in {MANIFEST} is missing. {_fix(directory)}")
    for relative in sorted(present - set(recorded)):
        raise CacheError(f"File {directory / relative} is not listed in {MANIFEST}. {_fix(directory)}")
    for relative, entry in sorted(recorded.items()):
        path = directory / relative
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise CacheError(f"File {path} has {size} bytes but {MANIFEST} records {entry['bytes']}. "
                             f"{_fix(directory)}")
        digest = _sha256(path)
        if digest != entry["sha256"]:
            raise CacheError(f"File {path} has sha256 {digest} but {MANIFEST} records {entry['sha256']}; "
                             f"the file is corrupt. {_fix(directory)}")
    return directory


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and structurally check `directory/manifest.json` (without checking file contents)."""
    directory = Path(directory)
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise CacheError(f"Cache artefact {directory} has no {MANIFEST}, so it is incomplete. "
                         f"{_fix(directory)}") from None
    except (OSError, ValueError) as error:
        raise CacheError(f"{path} is unreadable ({error}). {_fix(directory)}") from None
    required = ("format", "name", "version", "params", "seed", "created", "files", "arrays", "metadata")
    if not isinstance(manifest, dict) or any(field not in manifest for field in required):
        raise CacheError(f"{path} lacks some of the fields {list(required)}. {_fix(directory)}")
    if manifest["format"] != MANIFEST_FORMAT:
        raise CacheError(f"{path} has format {manifest['format']!r}, but this jaxlab reads format "
                         f"{MANIFEST_FORMAT}. {_fix(directory)}")
    return manifest


def save_arrays(directory: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Write each array to `directory/<name>.npy` (no pickling) and return the manifest's `arrays` entry.

    Call it inside `build_artifact`'s `write` and return its result as
    `{"arrays": ...}` so that `load_arrays` can check shapes and dtypes.
    Object arrays are rejected because `.npy` would need pickle to store them.
    """
    directory = Path(directory)
    entries = {}
    for name, array in arrays.items():
        if not _ARRAY_NAME_PATTERN.fullmatch(name):
            raise ValueError(f"Invalid array name {name!r}: use letters, digits, '_', '.' and '-'.")
        array = np.asarray(array)
        if array.dtype.hasobject:
            raise ValueError(f"Array {name!r} has dtype object, which cannot be saved without pickle; "
                             "encode strings as UTF-8 bytes and offsets instead.")
        file_name = f"{name}.npy"
        np.save(directory / file_name, array, allow_pickle=False)
        entries[name] = {"file": file_name, "shape": list(array.shape), "dtype": array.dtype.str}
    return entries


def load_arrays(spec: ArtifactSpec, root: str | os.PathLike[str] | None = None) -> dict[str, np.ndarray]:
    """Check an artefact (see `open_artifact`) and return its arrays, each checked against the manifest."""
    directory = open_artifact(spec, root)
    manifest = read_manifest(directory)
    arrays = {}
    for name, entry in manifest["arrays"].items():
        path = directory / entry["file"]
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise CacheError(f"File {path} is not a readable .npy array ({error}). {_fix(directory)}") from None
        if list(array.shape) != entry["shape"] or array.dtype.str != entry["dtype"]:
            raise CacheError(
                f"File {path} holds an array of shape {list(array.shape)} and dtype {array.dtype.str}, "
                f"but {MANIFEST} records shape {entry['shape']} and dtype {entry['dtype']}. {_fix(directory)}")
        arrays[name] = array
    return arrays


def load_or_build_arrays(
    spec: ArtifactSpec,
    generate: Callable[[], tuple[Mapping[str, np.ndarray], Mapping[str, Any]]],
    root: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Return an artefact's arrays and metadata, generating and caching them first if absent.

    Args:
        spec: the artefact's identity.
        generate: returns `(arrays, metadata)`, called only when the artefact is not cached.
        root: the cache root; `cache_root()` when None.
    """

    def write(directory: Path) -> dict[str, Any]:
        arrays, metadata = generate()
        return {"arrays": save_arrays(directory, arrays), "metadata": dict(metadata)}

    directory = build_artifact(spec, write, root)
    return load_arrays(spec, root), read_manifest(directory)["metadata"]


def _write_manifest(directory: Path, spec: ArtifactSpec, extra: Mapping[str, Any]) -> None:
    files = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            files[path.relative_to(directory).as_posix()] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": spec.name,
        "version": spec.version,
        "params": spec.params,
        "seed": spec.seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "files": files,
        "arrays": dict(extra.get("arrays", {})),
        "metadata": dict(extra.get("metadata", {})),
    }
    for name, entry in manifest["arrays"].items():
        if entry["file"] not in files:
            raise ValueError(f"Array {name!r} names file {entry['file']!r}, which write() did not create.")
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _remove_stale_temporaries(final: Path) -> None:
    """Delete temporary directories that dead processes on this host left for `final`."""
    host = socket.gethostname()
    for candidate in final.parent.glob(f"{_TMP_PREFIX}{final.name}-{host}-*"):
        pid_text = candidate.name[len(f"{_TMP_PREFIX}{final.name}-{host}-"):].split("-")[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            logging.info("Removing %s, an unfinished build by a process that no longer runs.", candidate)
            shutil.rmtree(candidate, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # The process exists but belongs to another user.
    return True


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _fix(directory: Path) -> str:
    return f"Delete the directory to regenerate it: rm -r {directory}"
