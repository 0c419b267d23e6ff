"""Training steps per second of jaxlab's Prompt-DT against the official PyTorch Prompt-DT, side by side on one CPU.

The peer is `PromptDecisionTransformer` on `trajectory_gpt2.GPT2Model` from github.com/mxu34/prompt-dt,
imported from a checkout given by --peer_path (never copied into jaxlab). Both models have Prompt-DT's
size (3 layers, width 128, 1 head, 4x GELU MLP, K = 20, prompt of 5 steps, dropout 0.1) and train on the
same batch of random Meta-World-shaped segments (39-D states, 4-D actions): action MSE on valid steps,
AdamW (lr 1e-4, weight decay 1e-4) with warmup, gradient-norm clip 0.25, as the peer's
`PromptSequenceTrainer.train_step_mix` does. Each repetition times `--steps` steps of each implementation,
alternating which goes first; compilation and warm-up are excluded and the median is reported. A third
row times jaxlab's real training loop, which also draws the batch inside jit and scans 10 steps per call.

The peer's GPT-2 file targets transformers 4.5 (its requirements.txt). With transformers 5.x it fails at
import (`ImportError: cannot import name 'Conv1D' from 'transformers.modeling_utils'`), so run this script
with transformers 4.33.3 in a separate venv that reuses jaxlab's packages. transformers 4.33.3 needs two
accommodations, neither of which touches the computation: `n_ctx` is passed to `GPT2Config` (it no longer
defines it), and the docstring decorator `add_code_sample_docstrings` gets the removed keyword
`tokenizer_class` renamed to `processor_class`.

Setup and run:
  git clone https://github.com/mxu34/prompt-dt /tmp/prompt-dt
  python3.11 -m venv /tmp/pdtvenv
  .venv/bin/python -c "import site; print(site.getsitepackages()[0])" \
      > $(/tmp/pdtvenv/bin/python -c "import site; print(site.getsitepackages()[0])")/jaxlab_venv.pth
  /tmp/pdtvenv/bin/pip install transformers==4.33.3
  PYTHONPATH=. nice -n 10 /tmp/pdtvenv/bin/python benchmarks/offline_rl_dt_speed.py --peer_path=/tmp/prompt-dt \
      [--output=docs/offline_rl.md]
"""

from __future__ import annotations

import datetime
import os
import shlex
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app
from absl import flags

from jaxlab.core import machine
from jaxlab.core import metrics as metrics_lib
from jaxlab.offline_rl import decision_transformer as dt
from jaxlab.offline_rl import prompt_dt

SECTION = "prompt_dt_speed"
OBS_DIM, ACT_DIM, MAX_TIMESTEP = 39, 4, 1000

_PEER_PATH = flags.DEFINE_string("peer_path", None, "Checkout of github.com/mxu34/prompt-dt (holds prompt_dt/).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Segments per step (Prompt-DT: 16 per task x tasks).")
_STEPS = flags.DEFINE_integer("steps", 20, "Training steps per timed repetition; a multiple of 10.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repetitions per implementation.")
_THREADS = flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads; 0 keeps torch's default.")
_OUTPUT = flags.DEFINE_string("output", None, "Markdown file whose prompt_dt_speed section is replaced; print "
                              "only if unset.")


def random_batch(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Segments of K = 20 and prompts of 5 steps, with the first segments left-padded as in training."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 21, batch)
    lengths[batch // 2:] = 20  # Half the segments are full, as most are when episodes are long.
    mask = np.arange(20)[None, :] >= 20 - lengths[:, None]
    return {
        "states": rng.normal(size=(batch, 20, OBS_DIM)).astype(np.float32),
        "actions": np.tanh(rng.normal(size=(batch, 20, ACT_DIM))).astype(np.float32),
        "rtg": rng.normal(size=(batch, 20)).astype(np.float32),
        "timesteps": rng.integers(0, 500, (batch, 20)).astype(np.int64),
        "mask": mask,
        "prompt_states": rng.normal(size=(batch, 5, OBS_DIM)).astype(np.float32),
        "prompt_actions": np.tanh(rng.normal(size=(batch, 5, ACT_DIM))).astype(np.float32),
        "prompt_rtg": rng.normal(size=(batch, 5)).astype(np.float32),
        "prompt_timesteps": rng.integers(0, 500, (batch, 5)).astype(np.int64),
        "prompt_mask": np.ones((batch, 5), bool),
    }


def jaxlab_step(batch: dict[str, np.ndarray]):
    """Return (run n steps on the fixed batch, parameter count) for jaxlab's Prompt-DT."""
    model = dt.DecisionTransformer(dt.DTConfig(obs_dim=OBS_DIM, act_dim=ACT_DIM, max_timestep=MAX_TIMESTEP))
    optimizer = prompt_dt.make_optimizer(1e-4, 10000, 1e-4, 0.25)
    params = dt.init_params(model.config, jax.random.key(0))
    segment = dt.Segment(jnp.asarray(batch["states"]), jnp.asarray(batch["actions"]), jnp.asarray(batch["rtg"]),
                         jnp.asarray(batch["timesteps"], jnp.int32), jnp.asarray(batch["mask"]))
    prompt = dt.Segment(jnp.asarray(batch["prompt_states"]), jnp.asarray(batch["prompt_actions"]),
                        jnp.asarray(batch["prompt_rtg"]), jnp.asarray(batch["prompt_timesteps"], jnp.int32),
                        jnp.asarray(batch["prompt_mask"]))

    @jax.jit
    def update(state, key):
        def loss_fn(params):
            predicted = model.apply({"params": params}, segment, prompt, deterministic=False,
                                    rngs={"dropout": key})
            return dt.action_loss(predicted, segment.actions, segment.mask)
        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return prompt_dt.TrainState(optax.apply_updates(state.params, updates), opt_state), loss

    state = [prompt_dt.TrainState(params, optimizer.init(params))]
    counter = [0]

    def run(steps: int) -> None:
        loss = None
        for _ in range(steps):
            counter[0] += 1
            state[0], loss = update(state[0], jax.random.key(counter[0]))
        loss.block_until_ready()

    return run, sum(int(np.size(leaf)) for leaf in jax.tree.leaves(params))


def jaxlab_training_loop(batch_size: int, steps_per_call: int = 10):
    """Return a runner of jaxlab's training chunk, which also samples batches in jit, for 4 tasks of data."""
    model = dt.DecisionTransformer(dt.DTConfig(obs_dim=OBS_DIM, act_dim=ACT_DIM, max_timestep=MAX_TIMESTEP))
    optimizer = prompt_dt.make_optimizer(1e-4, 10000, 1e-4, 0.25)
    params = dt.init_params(model.config, jax.random.key(0))
    tasks = 4
    rng = np.random.default_rng(1)
    data = prompt_dt.TaskArrays(jnp.asarray(rng.normal(size=(tasks, 5, 500, OBS_DIM)), jnp.float32),
                                jnp.asarray(np.tanh(rng.normal(size=(tasks, 5, 500, ACT_DIM))), jnp.float32),
                                jnp.asarray(rng.normal(size=(tasks, 5, 500)), jnp.float32),
                                jnp.full((tasks, 5), 500, jnp.int32))
    chunk = prompt_dt.make_train_chunk(model, optimizer, steps_per_call, tasks, batch_size // tasks)
    state = [prompt_dt.TrainState(params, optimizer.init(params))]
    done = [0]

    def run(steps: int) -> None:
        losses = None
        for _ in range(steps // steps_per_call):
            state[0], losses = chunk(state[0], data, data, jax.random.key(0), jnp.int32(done[0]))
            done[0] += steps_per_call
        losses.block_until_ready()

    return run


def import_peer(peer_path: str):
    """Import the peer's PromptDecisionTransformer from `peer_path`, or exit naming what failed."""
    if not os.path.isfile(os.path.join(peer_path, "prompt_dt", "prompt_decision_transformer.py")):
        sys.exit(f"error: --peer_path={peer_path!r} has no prompt_dt/prompt_decision_transformer.py; pass a "
                 "checkout of github.com/mxu34/prompt-dt.")
    import transformers
    import transformers.file_utils

    decorator = transformers.file_utils.add_code_sample_docstrings

    def add_code_sample_docstrings(*args, tokenizer_class=None, **kwargs):
        # Docstring only: transformers >= 4.16 renamed the keyword that the peer passes.
        if tokenizer_class is not None:
            kwargs.setdefault("processor_class", tokenizer_class)
        return decorator(*args, **kwargs)

    transformers.file_utils.add_code_sample_docstrings = add_code_sample_docstrings
    sys.path.insert(0, peer_path)
    try:
        from prompt_dt.prompt_decision_transformer import PromptDecisionTransformer
    except ImportError as error:
        sys.exit(f"error: importing the peer failed with transformers {transformers.__version__} ({error}). "
                 "Run this script from a venv with transformers==4.33.3, as the module docstring shows.")
    return PromptDecisionTransformer, transformers.__version__


def peer_step(batch: dict[str, np.ndarray], peer_class):
    """Return (run n steps on the fixed batch, parameter count) for the PyTorch Prompt-DT."""
    import torch

    if _THREADS.value:
        torch.set_num_threads(_THREADS.value)
    torch.manual_seed(0)
    model = peer_class(state_dim=OBS_DIM, act_dim=ACT_DIM, hidden_size=128, max_length=20, max_ep_len=MAX_TIMESTEP,
                       action_tanh=True, n_layer=3, n_head=1, n_inner=4 * 128, activation_function="gelu_new",
                       n_positions=1024, n_ctx=1024, resid_pdrop=0.1, attn_pdrop=0.1)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda steps: min((steps + 1) / 10000, 1))
    states = torch.from_numpy(batch["states"])
    actions = torch.from_numpy(batch["actions"])
    rtg = torch.from_numpy(batch["rtg"])[..., None]
    timesteps = torch.from_numpy(batch["timesteps"])
    mask = torch.from_numpy(batch["mask"].astype(np.int64))
    count = len(states)
    prompt = (torch.from_numpy(batch["prompt_states"]), torch.from_numpy(batch["prompt_actions"]),
              torch.zeros(count, 5, 1), torch.zeros(count, 5, dtype=torch.long),
              torch.from_numpy(batch["prompt_rtg"])[..., None], torch.from_numpy(batch["prompt_timesteps"]),
              torch.from_numpy(batch["prompt_mask"].astype(np.int64)))

    def run(steps: int) -> None:
        for _ in range(steps):
            _, action_preds, _ = model(states, actions, None, rtg, timesteps, attention_mask=mask, prompt=prompt)
            valid = mask.reshape(-1) > 0
            loss = torch.mean((action_preds.reshape(-1, ACT_DIM)[valid] - actions.reshape(-1, ACT_DIM)[valid]) ** 2)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            optimizer.step()
            scheduler.step()

    return run, sum(p.numel() for p in model.parameters())


def main(argv: list[str]) -> None:
    del argv
    if not _PEER_PATH.value:
        sys.exit("error: --peer_path is required: a checkout of github.com/mxu34/prompt-dt.")
    if _STEPS.value < 10 or _STEPS.value % 10:
        sys.exit(f"error: --steps={_STEPS.value} is invalid; use a positive multiple of 10, the steps per call "
                 "of the training-loop row.")
    import torch

    peer_class, transformers_version = import_peer(_PEER_PATH.value)
    batch = random_batch(_BATCH.value)
    runners = {}
    runners["jaxlab (jit, fixed batch)"], jax_parameters = jaxlab_step(batch)
    runners["PyTorch Prompt-DT (eager, fixed batch)"], peer_parameters = peer_step(batch, peer_class)
    runners["jaxlab training loop (batch drawn in jit, 10 steps per call)"] = jaxlab_training_loop(_BATCH.value)
    for run in runners.values():  # Compile and warm up.
        run(10)

    rates = {name: [] for name in runners}
    names = list(runners)
    for repeat in range(_REPEATS.value):
        order = names if repeat % 2 == 0 else names[::-1]
        for name in order:
            started = time.perf_counter()
            runners[name](_STEPS.value)
            rates[name].append(_STEPS.value / (time.perf_counter() - started))

    peer_rate = statistics.median(rates["PyTorch Prompt-DT (eager, fixed batch)"])
    lines = ["| implementation | training steps/s (median) | vs PyTorch |", "| --- | --- | --- |"]
    for name in names:
        rate = statistics.median(rates[name])
        lines.append(f"| {name} | {rate:.2f} | {rate / peer_rate:.2f}x |")
    text = "\n".join(lines + [
        "",
        f"Batch of {_BATCH.value} segments (K = 20, prompt 5, 39-D states, 4-D actions), {_STEPS.value} steps x "
        f"{_REPEATS.value} repetitions per implementation, alternating order. Parameters: jaxlab {jax_parameters:,}, "
        f"PyTorch {peer_parameters:,} (the peer also builds the unused state and return heads and a 1-token "
        "word embedding).",
        f"Versions: jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"transformers {transformers_version}.",
        f"Command: `PYTHONPATH=. nice -n 10 python benchmarks/offline_rl_dt_speed.py {shlex.join(sys.argv[1:])}`",
        f"Machine: {machine.describe_machine()}, shared with other jobs.",
        f"Date: {datetime.date.today().isoformat()}.",
    ])
    print(text)
    if _OUTPUT.value:
        metrics_lib.replace_marked_section(_OUTPUT.value, SECTION, text)
        print(f"Wrote the {SECTION} section of {_OUTPUT.value}.")


if __name__ == "__main__":
    app.run(main)
