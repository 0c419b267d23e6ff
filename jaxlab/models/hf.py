"""Hugging Face checkpoints: parameter naming, import and export.

Naming. A jaxlab parameter path mirrors the Hugging Face (PyTorch) parameter
name split on dots, with two rules:

* a list index joins the preceding name with "_": `encoder.layers.0` becomes
  `["encoder"]["layers_0"]` (CLIP) and `encoder.layer.0` becomes
  `["encoder"]["layer_0"]` (BERT);
* a module's `weight` takes Flax's name for it: `scale` for LayerNorm,
  `embedding` for embeddings and `kernel` for linear and convolution layers.
  `bias` and free parameters such as `class_embedding` keep their names.

So `vision_model.encoder.layers.0.mlp.fc1.weight` is
`params["vision_model"]["encoder"]["layers_0"]["mlp"]["fc1"]["kernel"]`.
Tensors change layout on the way. Linear weights are [out, in] in PyTorch and
[in, out] in Flax. Convolution weights are [out, in, height, width] in
PyTorch and [height, width, in, out] in Flax.

Files. A checkpoint is a directory with `config.json` and `model.safetensors`
(or shards listed in `model.safetensors.index.json`), as written by
transformers' `save_pretrained`. Supported `model_type`s: `clip_vision_model`
(CLIPVisionModel, CLIPVisionModelWithProjection), `clip` (the vision tower
and visual projection of a full CLIPModel; the text tower is skipped),
`bert` (BertModel, or the `bert.` part of a task model such as
BertForMaskedLM) and `opt` (OPTForCausalLM or OPTModel). OPTModel's
`decoder.` names gain the `model.` prefix. OPT's LM head is tied to
`embed_tokens`, so `lm_head.weight` may be absent and must equal the
embedding when present.
Nothing is downloaded: `load_clip_vision` reads a local
directory or the local Hugging Face cache.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxlab.models import bert, clip, opt

ModelConfig = Union[clip.CLIPVisionConfig, bert.BertConfig, opt.OPTConfig]
PathLike = Union[str, os.PathLike]

# Module names whose `weight` is a LayerNorm scale or an embedding table.
LAYER_NORM_NAMES = frozenset({"layer_norm1", "layer_norm2", "pre_layrnorm", "post_layernorm",
                              "LayerNorm", "self_attn_layer_norm", "final_layer_norm"})
EMBEDDING_NAMES = frozenset({"position_embedding", "position_embeddings", "word_embeddings",
                             "token_type_embeddings", "embed_tokens", "embed_positions"})
# Name of OPT's LM head, tied to the token embedding and so not a jaxlab parameter.
OPT_LM_HEAD = "lm_head.weight"
OPT_EMBED_TOKENS = "model.decoder.embed_tokens.weight"
# Buffers that transformers saved in older checkpoints; they are not parameters.
IGNORED_BUFFER = re.compile(r"(^|\.)position_ids$")
# Expected tower configs of the CLIP checkpoints used by model-merging papers, by hub id.
CLIP_PRESETS: dict[str, clip.CLIPVisionConfig] = {
    "openai/clip-vit-base-patch32": clip.VIT_B_32,
    "openai/clip-vit-base-patch16": clip.VIT_B_16,
    "openai/clip-vit-large-patch14": clip.VIT_L_14,
}


class CheckpointError(ValueError):
    """A checkpoint that does not match the requested model: wrong files, config or tensors."""


def hf_name_to_path(name: str) -> tuple[str, ...]:
    """Map a Hugging Face parameter name to its jaxlab parameter path."""
    parts: list[str] = []
    for part in name.split("."):
        if part.isdigit() and parts:
            parts[-1] = f"{parts[-1]}_{part}"
        else:
            parts.append(part)
    if parts[-1] == "weight":
        owner = parts[-2] if len(parts) > 1 else ""
        if owner in LAYER_NORM_NAMES:
            parts[-1] = "scale"
        elif owner in EMBEDDING_NAMES:
            parts[-1] = "embedding"
        else:
            parts[-1] = "kernel"
    return tuple(parts)


def path_to_hf_name(path: tuple[str, ...]) -> str:
    """Map a jaxlab parameter path to its Hugging Face parameter name."""
    parts = [re.sub(r"_(\d+)$", r".\1", part) for part in path[:-1]]
    leaf = path[-1]
    parts.append("weight" if leaf in ("kernel", "scale", "embedding") else leaf)
    return ".".join(parts)


def to_flax_layout(path: tuple[str, ...], tensor: np.ndarray) -> np.ndarray:
    """Convert a PyTorch tensor to the layout of the Flax parameter at `path`."""
    if path[-1] == "kernel" and tensor.ndim == 2:
        return tensor.T
    if path[-1] == "kernel" and tensor.ndim == 4:
        return tensor.transpose(2, 3, 1, 0)
    return tensor


def to_torch_layout(path: tuple[str, ...], array: np.ndarray) -> np.ndarray:
    """Convert a Flax parameter at `path` to PyTorch's layout; inverse of `to_flax_layout`."""
    if path[-1] == "kernel" and array.ndim == 2:
        return array.T
    if path[-1] == "kernel" and array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    return array


def build_module(config: ModelConfig) -> nn.Module:
    """Build the standard jaxlab module for `config`."""
    if isinstance(config, clip.CLIPVisionConfig):
        return clip.CLIPVisionModel(config)
    if isinstance(config, bert.BertConfig):
        return bert.BertModel(config)
    if isinstance(config, opt.OPTConfig):
        return opt.OPTForCausalLM(config)
    raise TypeError(f"unsupported config type {type(config).__name__}; expected "
                    "CLIPVisionConfig, BertConfig or OPTConfig")


def parameter_shapes(config: ModelConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Return {path: shape} of every parameter of the standard module for `config`."""
    module = build_module(config)
    shapes = jax.eval_shape(module.init_params, jax.random.key(0))
    flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
    return {tuple(key.key for key in path): tuple(leaf.shape) for path, leaf in flat}


def _fields(config_class) -> set[str]:
    return {field.name for field in dataclasses.fields(config_class)}


def config_from_hf(hf_config: Mapping[str, Any], tensor_names: set[str],
                   source: str) -> ModelConfig:
    """Build a jaxlab config from a config.json dict and the checkpoint's tensor names."""
    model_type = hf_config.get("model_type")
    architectures = hf_config.get("architectures") or []
    if model_type in ("clip_vision_model", "clip"):
        if model_type == "clip":
            # Older configs can carry `vision_config_dict` (a CLIPConfig argument in
            # transformers 4.17), whose values override `vision_config` in transformers.
            fields = {**(hf_config.get("vision_config") or {}),
                      **(hf_config.get("vision_config_dict") or {})}
            fields["projection_dim"] = hf_config.get("projection_dim", 512)
        elif "visual_projection.weight" in tensor_names:
            fields = {"projection_dim": 512, **hf_config}
        else:
            fields = {**hf_config, "projection_dim": None}
        if fields.get("attention_dropout", 0.0) != 0.0:
            raise CheckpointError(f"{source}: attention_dropout={fields['attention_dropout']} is not "
                                  "supported; jaxlab's CLIP runs without dropout")
        kwargs = {name: fields[name] for name in _fields(clip.CLIPVisionConfig) if name in fields}
        return clip.CLIPVisionConfig(**kwargs)
    if model_type == "bert":
        if hf_config.get("position_embedding_type", "absolute") != "absolute":
            raise CheckpointError(f"{source}: position_embedding_type="
                                  f"{hf_config['position_embedding_type']!r} is not supported; "
                                  "expected 'absolute'")
        if hf_config.get("is_decoder") or hf_config.get("add_cross_attention"):
            raise CheckpointError(f"{source}: decoder BERT (is_decoder/add_cross_attention) is not "
                                  "supported; expected an encoder")
        kwargs = {name: hf_config[name] for name in _fields(bert.BertConfig)
                  if name in hf_config and name != "add_pooling_layer"}
        kwargs["add_pooling_layer"] = "pooler.dense.weight" in tensor_names
        return bert.BertConfig(**kwargs)
    if model_type == "opt":
        return _opt_config_from_hf(hf_config, source)
    raise CheckpointError(
        f"{source}: unsupported model_type {model_type!r} (architectures {architectures}); "
        "expected 'clip_vision_model', 'clip', 'bert' or 'opt'")


def _opt_config_from_hf(hf_config: Mapping[str, Any], source: str) -> opt.OPTConfig:
    """Build an OPTConfig, rejecting the config.json options that jaxlab's OPT does not implement."""
    unsupported = {
        "tie_word_embeddings": (True, "an untied lm_head"),
        "_remove_final_layer_norm": (False, "a decoder without its final LayerNorm"),
        "layerdrop": (0.0, "LayerDrop"),
    }
    for name, (supported, meaning) in unsupported.items():
        if name in hf_config and hf_config[name] != supported:
            raise CheckpointError(f"{source}: {name}={hf_config[name]!r} ({meaning}) is not "
                                  f"supported; jaxlab's OPT needs {name}={supported!r}")
    if isinstance(hf_config.get("eos_token_id"), list):
        raise CheckpointError(f"{source}: eos_token_id={hf_config['eos_token_id']!r} is a list; "
                              "jaxlab's OPTConfig expects one id")
    kwargs = {name: hf_config[name] for name in _fields(opt.OPTConfig)
              if hf_config.get(name) is not None}
    try:
        return opt.OPTConfig(**kwargs)
    except ValueError as error:
        raise CheckpointError(f"{source}: {error}") from None


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    """Build the config.json dict that transformers reads for `config`."""
    fields = dataclasses.asdict(config)
    if isinstance(config, clip.CLIPVisionConfig):
        with_projection = config.projection_dim is not None
        # transformers always stores a projection width, unused without projection.
        fields["projection_dim"] = config.projection_dim if with_projection else 512
        architecture = "CLIPVisionModelWithProjection" if with_projection else "CLIPVisionModel"
        return {"architectures": [architecture], "model_type": "clip_vision_model",
                "attention_dropout": 0.0, "initializer_factor": 1.0, "initializer_range": 0.02,
                "dtype": "float32", **fields}
    if isinstance(config, bert.BertConfig):
        # transformers' BertModel has no config flag for the pooler: it always
        # builds one, with fresh random weights when the checkpoint lacks them.
        del fields["add_pooling_layer"]
        return {"architectures": ["BertModel"], "model_type": "bert",
                "position_embedding_type": "absolute", "initializer_range": 0.02,
                "dtype": "float32", **fields}
    if isinstance(config, opt.OPTConfig):
        return {"architectures": ["OPTForCausalLM"], "model_type": "opt",
                "tie_word_embeddings": True, "_remove_final_layer_norm": False, "layerdrop": 0.0,
                "init_std": 0.02, "dtype": "float32", **fields}
    raise TypeError(f"unsupported config type {type(config).__name__}")


def _check_config(expected: ModelConfig, found: ModelConfig, source: str) -> None:
    if type(expected) is not type(found):
        raise CheckpointError(f"{source}: expected a {type(expected).__name__} checkpoint, found a "
                              f"{type(found).__name__} one: {found}")
    differences = [f"{field.name}: expected {getattr(expected, field.name)!r}, found "
                   f"{getattr(found, field.name)!r}"
                   for field in dataclasses.fields(expected)
                   if getattr(expected, field.name) != getattr(found, field.name)
                   and field.name != "add_pooling_layer"]
    if differences:
        raise CheckpointError(f"{source}: config does not match the expected {expected}; "
                              + "; ".join(differences))


def _read_json(path: Path) -> dict:
    try:
        with open(path) as file:
            return json.load(file)
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found; a Hugging Face checkpoint directory needs "
                              "config.json") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from None


def read_safetensors(directory: Path) -> dict[str, np.ndarray]:
    """Read every tensor of a checkpoint directory (single file or index of shards)."""
    from safetensors.numpy import load_file  # Optional dependency: pip install safetensors

    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.exists():
        files = [single]
    elif index.exists():
        shard_names = sorted(set(_read_json(index).get("weight_map", {}).values()))
        files = [directory / name for name in shard_names]
    else:
        found = sorted(path.name for path in directory.iterdir()) if directory.is_dir() else []
        hint = (" It holds only PyTorch pickles; convert them once with transformers "
                "(from_pretrained, then save_pretrained(dir, safe_serialization=True)).") \
            if any(name.endswith(".bin") for name in found) else ""
        raise CheckpointError(f"no model.safetensors or model.safetensors.index.json in {directory} "
                              f"(found {found}).{hint}")

    tensors: dict[str, np.ndarray] = {}
    for file in files:
        try:
            tensors.update(load_file(file))
        except TypeError as error:
            # NOTE: numpy has no bfloat16, so safetensors' numpy API cannot read it.
            raise CheckpointError(f"cannot read {file} with safetensors' numpy API ({error}); "
                                  "save the checkpoint in float32 or float16") from None
        except Exception as error:  # safetensors raises its own SafetensorError for damaged files.
            if type(error).__name__ != "SafetensorError":
                raise
            raise CheckpointError(f"{file} is not a readable safetensors file ({error}); it may be truncated "
                                  "or damaged, so write or copy it again") from None
    return tensors


def _select_tensors(hf_config: Mapping[str, Any], tensors: dict[str, np.ndarray],
                    config: ModelConfig) -> dict[str, np.ndarray]:
    """Keep the tensors of the jaxlab model, named as in `path_to_hf_name`."""
    model_type = hf_config.get("model_type")
    selected = {name: value for name, value in tensors.items() if not IGNORED_BUFFER.search(name)}
    if model_type == "clip":
        # Full CLIPModel: skip the text tower, text projection and logit scale.
        selected = {name: value for name, value in selected.items()
                    if name.startswith("vision_model.") or name == "visual_projection.weight"}
    elif model_type == "clip_vision_model":
        # transformers >= 5 saves CLIPVisionModel without the vision_model. prefix.
        selected = {(name if name.startswith(("vision_model.", "visual_projection.")) else
                     f"vision_model.{name}"): value for name, value in selected.items()}
    elif model_type == "bert":
        if any(name.startswith("bert.") for name in selected):
            # A task model (BertForMaskedLM, ...): keep its encoder, drop its heads.
            selected = {name[len("bert."):]: value for name, value in selected.items()
                        if name.startswith("bert.")}
        if isinstance(config, bert.BertConfig) and not config.add_pooling_layer:
            selected = {name: value for name, value in selected.items()
                        if not name.startswith("pooler.")}
    elif model_type == "opt":
        selected = _select_opt_tensors(selected)
    return selected


def _select_opt_tensors(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Name OPTModel tensors as OPTForCausalLM does and drop the tied lm_head."""
    selected = {(f"model.{name}" if name.startswith("decoder.") else name): value
                for name, value in tensors.items()}
    head = selected.pop(OPT_LM_HEAD, None)
    embedding = selected.get(OPT_EMBED_TOKENS)
    if head is not None and embedding is not None and not np.array_equal(head, embedding):
        raise CheckpointError(f"{OPT_LM_HEAD} differs from {OPT_EMBED_TOKENS}; jaxlab's OPT ties "
                              "the LM head to the token embedding, so it cannot load an untied head")
    return selected


def tensors_to_params(tensors: Mapping[str, np.ndarray], config: ModelConfig,
                      source: str = "checkpoint") -> dict:
    """Convert {HF name: PyTorch-layout tensor} to the jaxlab params of `config`.

    Raises CheckpointError naming the first missing, unexpected or misshaped
    tensor, or the first one with NaN or infinite values.
    """
    expected = {path_to_hf_name(path): (path, shape)
                for path, shape in parameter_shapes(config).items()}
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise CheckpointError(f"{source}: missing parameter {missing[0]} "
                              f"({len(missing)} missing in all) for {config}")
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise CheckpointError(f"{source}: unexpected parameter {unexpected[0]} "
                              f"({len(unexpected)} unexpected in all) for {config}")

    params: dict = {}
    for name in sorted(expected):
        path, shape = expected[name]
        tensor = np.asarray(tensors[name])
        if not np.issubdtype(tensor.dtype, np.floating):
            raise CheckpointError(f"{source}: parameter {name} has dtype {tensor.dtype}; "
                                  "expected floating point")
        array = to_flax_layout(path, tensor)
        if tuple(array.shape) != shape:
            raise CheckpointError(
                f"{source}: parameter {name} has shape {tuple(tensor.shape)} (PyTorch layout); "
                f"expected {tuple(to_torch_layout(path, np.empty(shape)).shape)} for {config}")
        if not np.all(np.isfinite(array)):
            raise CheckpointError(f"{source}: parameter {name} contains NaN or infinite values")
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = jnp.asarray(array, jnp.float32)
    return params


def params_to_tensors(params: Mapping, config: ModelConfig) -> dict[str, np.ndarray]:
    """Convert jaxlab params to {HF name: float32 PyTorch-layout tensor}, checking every leaf."""
    shapes = parameter_shapes(config)
    flat = {tuple(key.key for key in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    for path in sorted(shapes):
        if path not in flat:
            raise CheckpointError(f"params lack {'/'.join(path)} ({path_to_hf_name(path)}) "
                                  f"for {config}")
    for path in sorted(flat):
        if path not in shapes:
            raise CheckpointError(f"params have unexpected entry {'/'.join(path)}, which the "
                                  f"standard model for {config} lacks; Hugging Face cannot load it")

    tensors = {}
    for path in sorted(shapes):
        array = np.asarray(flat[path], dtype=np.float32)
        name = path_to_hf_name(path)
        if tuple(array.shape) != shapes[path]:
            raise CheckpointError(f"params entry {'/'.join(path)} ({name}) has shape "
                                  f"{tuple(array.shape)}; expected {shapes[path]}")
        if not np.all(np.isfinite(array)):
            raise CheckpointError(f"params entry {'/'.join(path)} ({name}) contains NaN or "
                                  "infinite values")
        tensors[name] = np.ascontiguousarray(to_torch_layout(path, array))
    return tensors


def load_hf(path: PathLike, config: Optional[ModelConfig] = None) -> tuple[nn.Module, dict]:
    """Load a Hugging Face checkpoint directory into a jaxlab module and its params.

    Args:
      path: directory with config.json and model.safetensors.
      config: the expected configuration; a checkpoint of another model type
        or with other field values raises CheckpointError listing each
        expected and found value. None accepts any supported checkpoint.

    Returns:
      (module, params): an unbound `CLIPVisionModel`, `BertModel` or
      `OPTForCausalLM` and its float32 parameters, for `module.apply({"params": params}, ...)`.
    """
    directory = Path(path)
    if directory.is_file():
        raise CheckpointError(f"{directory} is a file; pass the checkpoint directory that contains config.json "
                              "and model.safetensors")
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} not found")
    hf_config = _read_json(directory / "config.json")
    tensors = read_safetensors(directory)
    source = str(directory)

    found = config_from_hf(hf_config, set(tensors) | {name.removeprefix("bert.") for name in tensors},
                           source)
    if config is not None:
        _check_config(config, found, source)
        found = config
    params = tensors_to_params(_select_tensors(hf_config, tensors, found), found, source)
    logging.info("Loaded %s from %s", found, directory)
    return build_module(found), params


def save_hf(path: PathLike, config: ModelConfig, params: Mapping) -> Path:
    """Write `params` as a Hugging Face checkpoint (config.json + model.safetensors).

    transformers loads the result with `CLIPVisionModel`,
    `CLIPVisionModelWithProjection`, `BertModel` or
    `OPTForCausalLM.from_pretrained(path)`; OPT's tied `lm_head.weight` is
    not written, as transformers' `save_pretrained` also omits it.
    Both files are written under temporary names and then renamed, so an
    interrupted save leaves no half-written checkpoint file.
    """
    from safetensors.numpy import save_file  # Optional dependency: pip install safetensors

    tensors = params_to_tensors(params, config)
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"save_hf writes a checkpoint directory, but {directory} is an existing file; "
                         "pass a directory path (it is created if absent).")
    directory.mkdir(parents=True, exist_ok=True)

    with tempfile.NamedTemporaryFile(dir=directory, suffix=".tmp", delete=False) as file:
        temporary_weights = Path(file.name)
    save_file(tensors, str(temporary_weights), metadata={"format": "pt"})
    with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False) as file:
        json.dump(config_to_hf(config), file, indent=2)
        temporary_config = Path(file.name)
    os.replace(temporary_weights, directory / "model.safetensors")
    os.replace(temporary_config, directory / "config.json")
    logging.info("Saved %s to %s", config, directory)
    return directory


def hf_cache_dir() -> Path:
    """Return the Hugging Face hub cache: $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def resolve_cached_snapshot(repo_id: str, cache_dir: Optional[PathLike] = None,
                            revision: str = "main") -> Path:
    """Find the snapshot directory of `repo_id` in a local hub cache, without any download.

    The hub cache stores `models--<org>--<name>/snapshots/<commit>/` and maps
    branch names to commits in `refs/<branch>`. `revision` is a branch name
    or a commit hash; when `refs/main` is absent and the cache contains exactly
    one snapshot, that snapshot is used.
    """
    cache = Path(cache_dir) if cache_dir is not None else hf_cache_dir()
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    fetch_hint = (f"download it where a network is available (huggingface-cli download {repo_id}) "
                  "and copy the cache, or pass a local checkpoint directory")
    if not (repo_dir / "snapshots").is_dir():
        raise CheckpointError(f"{repo_id} is not in the Hugging Face cache: {repo_dir}/snapshots "
                              f"not found; {fetch_hint}")
    snapshots = sorted(path.name for path in (repo_dir / "snapshots").iterdir() if path.is_dir())

    ref = repo_dir / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
    elif revision in snapshots:
        commit = revision
    elif revision == "main" and len(snapshots) == 1:
        commit = snapshots[0]
    else:
        raise CheckpointError(f"revision {revision!r} of {repo_id} not found in {repo_dir} "
                              f"(snapshots: {snapshots}); pass one of them as revision")
    snapshot = repo_dir / "snapshots" / commit
    if not snapshot.is_dir():
        raise CheckpointError(f"{ref} points to commit {commit}, but {snapshot} is missing; "
                              f"{fetch_hint}")
    return snapshot


def load_clip_vision(name_or_path: PathLike, cache_dir: Optional[PathLike] = None,
                     revision: str = "main", config: Optional[clip.CLIPVisionConfig] = None,
                     ) -> tuple[clip.CLIPVisionModel, dict]:
    """Load a CLIP vision tower (with projection) from a local directory or the hub cache.

    Args:
      name_or_path: a checkpoint directory, or a hub id such as
        "openai/clip-vit-base-patch32" looked up in the local cache.
      cache_dir: hub cache to search; defaults to `hf_cache_dir()`.
      revision: branch or commit of the cached repository.
      config: expected tower; defaults to the preset of a known hub id
        (`CLIP_PRESETS`), so a checkpoint of another size raises
        CheckpointError naming both configurations.
    """
    path = Path(name_or_path)
    if path.is_dir():
        directory = path
    else:
        directory = resolve_cached_snapshot(str(name_or_path), cache_dir, revision)
    expected = config if config is not None else CLIP_PRESETS.get(str(name_or_path))
    if expected is not None and not isinstance(expected, clip.CLIPVisionConfig):
        raise TypeError(f"config must be a CLIPVisionConfig, got {type(expected).__name__}")

    hf_config = _read_json(directory / "config.json")
    if hf_config.get("model_type") not in ("clip", "clip_vision_model"):
        raise CheckpointError(
            f"{directory}: expected a CLIP checkpoint (model_type 'clip' or 'clip_vision_model'), "
            f"found model_type {hf_config.get('model_type')!r} "
            f"(architectures {hf_config.get('architectures')})")
    module, params = load_hf(directory, expected)
    return module, params
