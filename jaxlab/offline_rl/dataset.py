"""One on-disk format for every offline-RL dataset: per-task trajectory shards in the jaxlab cache.

A dataset is a list of task shards. Each shard is one cache artefact
(`jaxlab.core.cache`), so it is written atomically, every file carries a sha256
in its manifest, and a collector that is killed keeps the shards it finished:
running it again skips them. A shard contains `E` episodes of one task padded to
a common length `T`:

| array           | shape           | dtype   | meaning                                            |
|-----------------|-----------------|---------|----------------------------------------------------|
| observations    | [E, T, obs_dim] | float32 | s_t                                                |
| actions         | [E, T, act_dim] | float32 | a_t, as sent to the environment (after noise)      |
| rewards         | [E, T]          | float32 | r_t                                                |
| terminals       | [E, T]          | bool    | true at the step that ended the episode by failure |
| timeouts        | [E, T]          | bool    | true at the last step of an episode cut by time    |
| returns_to_go   | [E, T]          | float32 | sum of r_t' for t' >= t within the episode         |
| successes       | [E, T]          | bool    | the task's success flag at step t (False if none)  |
| lengths         | [E]             | int32   | valid steps of each episode; the rest is padding   |
| goal            | [goal_dim]      | float32 | the task parameter (target position, velocity...)  |

Padding steps (t >= lengths[e]) are zero and False. The manifest's metadata
records the environment, task index, split, collector, noise level, seed and
episode count; `load_shard` checks them against the request.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jaxlab.core import cache

FORMAT_VERSION = 1
SPLITS = ("train", "test")

# dtype and rank of each array; the leading axes [E] or [E, T] are checked
# against each other in `validate_shard`.
ARRAY_LAYOUT: dict[str, tuple[np.dtype, int]] = {
    "observations": (np.dtype(np.float32), 3),
    "actions": (np.dtype(np.float32), 3),
    "rewards": (np.dtype(np.float32), 2),
    "terminals": (np.dtype(np.bool_), 2),
    "timeouts": (np.dtype(np.bool_), 2),
    "returns_to_go": (np.dtype(np.float32), 2),
    "successes": (np.dtype(np.bool_), 2),
    "lengths": (np.dtype(np.int32), 1),
    "goal": (np.dtype(np.float32), 1),
}


class DatasetError(ValueError):
    """A shard whose arrays or metadata do not follow the dataset format."""


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    """The identity of one task's shard.

    Attributes:
        env: environment family and task, e.g. "metaworld/reach-v3" or "brax/cheetah_vel".
        task_index: the task's index within the environment's task list.
        split: "train" or "test".
        collector: what produced the actions, e.g. "scripted" or "ppo_expert".
        noise: the collector's noise level name, e.g. "expert", "medium", "random".
        episodes: number of episodes in the shard.
        seed: the collection seed.
        params: further collector parameters that change the data (noise scale,
            episode length, expert checkpoint digest...).
    """

    env: str
    task_index: int
    split: str
    collector: str
    noise: str
    episodes: int
    seed: int
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.split not in SPLITS:
            raise DatasetError(f"split={self.split!r} is not one of {SPLITS}.")
        if isinstance(self.task_index, bool) or not isinstance(self.task_index, int) or self.task_index < 0:
            raise DatasetError(f"task_index={self.task_index!r} must be an int >= 0.")
        if isinstance(self.episodes, bool) or not isinstance(self.episodes, int) or self.episodes < 1:
            raise DatasetError(f"episodes={self.episodes!r} must be an int >= 1.")

    def metadata(self) -> dict[str, Any]:
        return {"env": self.env, "task_index": self.task_index, "split": self.split,
                "collector": self.collector, "noise": self.noise, "episodes": self.episodes,
                "seed": self.seed, "params": dict(self.params)}

    def artifact(self) -> cache.ArtifactSpec:
        return cache.ArtifactSpec(
            name=f"offline_rl/{self.env}/{self.noise}/task{self.task_index:03d}",
            version=FORMAT_VERSION,
            params={key: value for key, value in self.metadata().items() if key != "seed"},
            seed=self.seed)


def returns_to_go(rewards: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Undiscounted returns-to-go of padded episodes [E, T]; zero on padding steps."""
    rewards = np.asarray(rewards, np.float64)
    valid = np.arange(rewards.shape[1])[None, :] < np.asarray(lengths)[:, None]
    masked = np.where(valid, rewards, 0.0)
    return np.flip(np.cumsum(np.flip(masked, axis=1), axis=1), axis=1).astype(np.float32)


def validate_shard(arrays: Mapping[str, np.ndarray], where: str = "shard") -> None:
    """Raise `DatasetError` unless `arrays` follows the format in this module's docstring."""
    missing = sorted(set(ARRAY_LAYOUT) - set(arrays))
    extra = sorted(set(arrays) - set(ARRAY_LAYOUT))
    if missing or extra:
        raise DatasetError(f"{where}: missing arrays {missing}, unexpected arrays {extra}; "
                           f"a shard contains exactly {sorted(ARRAY_LAYOUT)}.")
    for name, (dtype, rank) in ARRAY_LAYOUT.items():
        array = arrays[name]
        if array.dtype != dtype or array.ndim != rank:
            raise DatasetError(f"{where}: {name} has dtype {array.dtype} and rank {array.ndim}; "
                               f"expected dtype {dtype} and rank {rank}.")
    episodes, horizon = arrays["rewards"].shape
    for name in ARRAY_LAYOUT:
        if name == "goal":
            continue
        expected = (episodes,) if name == "lengths" else (episodes, horizon)
        if arrays[name].shape[:len(expected)] != expected:
            raise DatasetError(f"{where}: {name} has shape {arrays[name].shape}, but rewards has shape "
                               f"{(episodes, horizon)}; every array starts with [episodes, steps].")

    lengths = arrays["lengths"]
    if episodes == 0 or np.any(lengths < 1) or np.any(lengths > horizon):
        raise DatasetError(f"{where}: lengths must lie in [1, {horizon}] for each of >= 1 episodes, "
                           f"got {lengths.tolist()[:8]}.")
    for name in ("observations", "actions", "rewards", "returns_to_go", "goal"):
        if not np.all(np.isfinite(arrays[name])):
            raise DatasetError(f"{where}: {name} contains NaN or inf because the collector or the "
                               "environment diverged. Regenerate the shard.")
    expected_rtg = returns_to_go(arrays["rewards"], lengths)
    if not np.allclose(arrays["returns_to_go"], expected_rtg, rtol=1e-4, atol=1e-3):
        raise DatasetError(f"{where}: returns_to_go is not the reward sum-to-end of each episode.")


def save_shard(spec: ShardSpec, generate: Callable[[], Mapping[str, np.ndarray]],
               root: str | None = None) -> dict[str, np.ndarray]:
    """Return the shard for `spec`, calling `generate()` and caching its output only if it is absent.

    The generated arrays are validated before anything is written, so a bad
    collector never leaves a shard in the cache.
    """
    spec_artifact = spec.artifact()
    name = f"shard {spec_artifact.name}"

    def generate_checked():
        arrays = {key: np.asarray(value) for key, value in generate().items()}
        validate_shard(arrays, name)
        if arrays["rewards"].shape[0] != spec.episodes:
            raise DatasetError(f"{name}: the collector produced {arrays['rewards'].shape[0]} episodes, "
                               f"but the spec asks for {spec.episodes}.")
        return arrays, spec.metadata()

    arrays, _ = cache.load_or_build_arrays(spec_artifact, generate_checked, root)
    return arrays


def shard_exists(spec: ShardSpec, root: str | None = None) -> bool:
    """True when a complete copy of the shard is in the cache (its files are checked on load)."""
    return cache.artifact_dir(spec.artifact(), root).exists()


def load_shard(spec: ShardSpec, root: str | None = None) -> dict[str, np.ndarray]:
    """Load one shard, checking checksums, shapes, dtypes and the recorded metadata.

    Raises:
        cache.CacheError: the shard is missing, corrupt or was built with other parameters.
        DatasetError: the arrays do not follow the format.
    """
    artifact = spec.artifact()
    arrays = cache.load_arrays(artifact, root)
    metadata = cache.read_manifest(cache.artifact_dir(artifact, root))["metadata"]
    if metadata != cache.ArtifactSpec(artifact.name, 0, spec.metadata()).params:
        raise DatasetError(f"shard {artifact.name}: its manifest records {metadata}, but {spec.metadata()} "
                           f"was requested. Delete {cache.artifact_dir(artifact, root)} to regenerate it.")
    validate_shard(arrays, f"shard {artifact.name}")
    return arrays


def load_dataset(specs: Sequence[ShardSpec], root: str | None = None) -> list[dict[str, np.ndarray]]:
    """Load several shards; all must share observation and action sizes."""
    shards = [load_shard(spec, root) for spec in specs]
    if shards:
        obs_dim = shards[0]["observations"].shape[-1]
        act_dim = shards[0]["actions"].shape[-1]
        for spec, shard in zip(specs, shards):
            if shard["observations"].shape[-1] != obs_dim or shard["actions"].shape[-1] != act_dim:
                raise DatasetError(
                    f"shard {spec.artifact().name} has observation size {shard['observations'].shape[-1]} "
                    f"and action size {shard['actions'].shape[-1]}, but the first shard has {obs_dim} and "
                    f"{act_dim}; a dataset mixes tasks of one environment only.")
    return shards


def shard_statistics(arrays: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean and standard deviation of the episode return, and the success rate (success at any step)."""
    valid = np.arange(arrays["rewards"].shape[1])[None, :] < arrays["lengths"][:, None]
    episode_returns = np.where(valid, arrays["rewards"], 0.0).sum(axis=1)
    success = np.any(arrays["successes"] & valid, axis=1)
    return {"episodes": int(len(episode_returns)), "return_mean": float(episode_returns.mean()),
            "return_std": float(episode_returns.std()), "success_rate": float(success.mean())}
