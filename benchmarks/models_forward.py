"""Compile and forward time of a jitted CLIP vision tower on random weights and images.

    python benchmarks/models_forward.py [--model=vit_b_32] [--batch_size=8] [--runs=10] [--torch]

Random weights cost the same as pretrained ones, so nothing is downloaded.
With --torch it also times transformers' PyTorch CLIPVisionModelWithProjection
of the same size (eager, torch.no_grad) on the same machine.
Prints a markdown record (command, date, machine, numbers) for docs/models.md.
"""

import datetime
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from jaxlab.core.machine import describe_machine
from jaxlab.models import clip

CONFIGS = {"vit_b_32": clip.VIT_B_32, "vit_b_16": clip.VIT_B_16, "vit_l_14": clip.VIT_L_14}

_MODEL = flags.DEFINE_enum("model", "vit_b_32", sorted(CONFIGS), "CLIP vision tower to time.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per forward pass.")
_RUNS = flags.DEFINE_integer("runs", 10, "Timed forward passes after the compiling one.")
_TORCH = flags.DEFINE_bool("torch", False, "Also time transformers' PyTorch model (needs torch).")


def time_runs(forward, runs):
    """Return the wall-clock seconds of `runs` calls of `forward`, after one untimed call."""
    forward()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        forward()
        times.append(time.perf_counter() - start)
    return times


def time_torch(config, batch_size, runs):
    """Time transformers' CLIPVisionModelWithProjection with random weights."""
    import torch
    import transformers

    hf_config = transformers.CLIPVisionConfig(
        image_size=config.image_size, patch_size=config.patch_size,
        hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        projection_dim=config.projection_dim)
    model = transformers.CLIPVisionModelWithProjection(hf_config).eval()
    pixels = torch.randn(batch_size, config.num_channels, config.image_size, config.image_size)
    with torch.no_grad():
        return time_runs(lambda: model(pixel_values=pixels).image_embeds, runs)


def row(label, batch_size, compile_seconds, times):
    median = statistics.median(times)
    return (f"| {label} | {batch_size} | {compile_seconds} | {median * 1e3:.0f} | "
            f"{min(times) * 1e3:.0f} | {batch_size / median:.1f} |")


def main(argv):
    del argv
    config = CONFIGS[_MODEL.value]
    model = clip.CLIPVisionModel(config)
    key_params, key_images = jax.random.split(jax.random.key(0))
    params = model.init_params(key_params)
    images = jax.random.normal(key_images, (_BATCH_SIZE.value, config.image_size, config.image_size,
                                            config.num_channels), jnp.float32)

    @jax.jit
    def embed(params, images):
        return model.apply({"params": params}, images).image_embeds

    start = time.perf_counter()
    compiled = embed.lower(params, images).compile()
    compile_seconds = time.perf_counter() - start

    times = time_runs(lambda: jax.block_until_ready(compiled(params, images)), _RUNS.value)
    rows = [row(f"jaxlab {_MODEL.value}, jit", _BATCH_SIZE.value, f"{compile_seconds:.1f}", times)]
    if _TORCH.value:
        torch_times = time_torch(config, _BATCH_SIZE.value, _RUNS.value)
        rows.append(row(f"transformers {_MODEL.value}, eager", _BATCH_SIZE.value, "-", torch_times))

    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"Command: `python {' '.join(sys.argv)}`  ")
    print(f"Date: {date}  ")
    machine = describe_machine()
    if _TORCH.value:
        import torch
        import transformers
        machine += f", torch {torch.__version__}, transformers {transformers.__version__}"
    print(f"Machine: {machine}\n")
    print("| model | batch | compile (s) | forward median (ms) | forward min (ms) | images/s |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    app.run(main)
