"""Prompt-DT (offline meta-RL): train on the training tasks, roll out on held-out tasks given an expert prompt.

Run:
  python -m launch.main --config=configs/offline_rl/prompt_dt.py:quick --workdir=runs/prompt_dt_quick
  python -m launch.main --config=configs/offline_rl/prompt_dt.py:metaworld_reach_cpu --workdir=runs/pdt_reach
  python -m launch.main --config=configs/offline_rl/prompt_dt.py:cheetah_vel_cpu --workdir=runs/pdt_cheetah
  python -m launch.main --config=configs/offline_rl/prompt_dt.py:default_metaworld_reach --workdir=runs/pdt_reach_full
  python -m launch.main --config=configs/offline_rl/prompt_dt.py:default_cheetah_vel --workdir=runs/pdt_cheetah_full
Add --config.model.use_prompt=False for the multi-task Decision Transformer without prompt (the baseline).

Variants:
  quick                    Meta-World reach-v3 with 4 training and 2 held-out tasks and 300 steps. Collection,
                           training and evaluation take 3 to 6 minutes on 2 shared CPU cores, and 35 s
                           with cached shards on an idle machine.
  metaworld_reach_cpu      reach-v3 with 20 training tasks and all 5 held-out ones. It trains 1500 steps of 4
                           tasks x 16 segments and rolls out for 150 steps. A run takes 10 to 15 minutes on
                           2 shared CPU cores.
  cheetah_vel_cpu          brax cheetah_vel, all 35 training and 5 held-out velocities, otherwise sized like
                           metaworld_reach_cpu (200-step rollouts); about 15 minutes on 2 shared CPU cores
                           once the data are cached. With an empty cache it first trains the brax PPO expert
                           (capped at 42 minutes) and collects the shards.
  default_metaworld_reach  paper-sized: all 45 training tasks, 5000 x 10 steps, batch 16 per task.
  default_cheetah_vel      paper-sized cheetah_vel: 5000 x 10 steps, batch 16 per task.
The model is Prompt-DT's (3 layers, width 128, 1 head, K = 20, prompt of 5 steps, dropout 0.1) in every
variant except `quick`, `metaworld_reach_cpu` and `cheetah_vel_cpu`, which keep the layout but use 2 layers
of width 64 so that three seeds of both methods fit in an hour on 2 CPU cores.

Returns-to-go are divided by `data.return_scale`. Meta-World reach uses 1000, because rewards lie in
[0, 10] per step and the scripted expert's 500-step return is about 4,840. Cheetah-vel uses Prompt-DT's
500. Its reward is about minus the velocity error, and the PPO expert's 200-step returns on the held-out
velocities range from -26 to -63.
"""

import ml_collections

VARIANTS = ("quick", "metaworld_reach_cpu", "cheetah_vel_cpu", "default_metaworld_reach", "default_cheetah_vel")


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.experiment = "prompt_dt"
    config.seed = 0  # Draws the initial parameters, the batches, dropout and the evaluation prompts and resets.
    config.env = "metaworld/reach-v3"  # "<family>/<task>": "metaworld/<Meta-World task>" or "brax/cheetah_vel".

    config.data = ml_collections.ConfigDict()
    config.data.noise = "expert"  # Noise level of the training shards (a collector's NOISE_LEVELS key).
    config.data.episodes = 10  # Training episodes per task.
    config.data.seed = 0  # Collection seed of the training shards; shared by all training seeds.
    config.data.prompt_noise = "expert"  # Prompts come from expert episodes of the same task, as in Prompt-DT.
    config.data.prompt_episodes = 5  # Prompt episodes per task.
    config.data.prompt_seed = 1  # Collection seed of the prompt shards, so they differ from the training ones.
    config.data.num_train_tasks = 0  # The first n training tasks of the split; 0 uses all.
    config.data.num_test_tasks = 0  # The first n held-out tasks of the split; 0 uses all.
    config.data.return_scale = 1000.0  # Returns-to-go are divided by this; see the module docstring.
    # Zero the goal coordinates of goal-observable observations (Meta-World), so the prompt has to carry
    # the task. Must be False for brax, whose observations hold no goal.
    config.data.hide_goal = True
    config.data.root = ""  # Cache root of the shards; "" uses $JAXLAB_DATA (default ~/.cache/jaxlab).

    config.model = ml_collections.ConfigDict()
    config.model.hidden_size = 128
    config.model.num_layers = 3
    config.model.num_heads = 1
    config.model.context_length = 20  # K, steps of history.
    config.model.prompt_length = 5  # Steps of the trajectory prompt.
    config.model.max_timestep = 1000  # Rows of the timestep embeddings; >= the episode length.
    config.model.dropout = 0.1
    config.model.activation = "gelu"  # "gelu" (GPT-2) or "relu" (the Prompt-DT scripts' default).
    config.model.use_prompt = True  # False: the multi-task DT without prompt, the baseline.

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 3000
    config.train.batch_size_per_task = 16  # Prompt-DT's batch size per task.
    config.train.tasks_per_batch = 0  # Training tasks drawn per step (without replacement); 0 uses all.
    config.train.learning_rate = 1e-4
    config.train.warmup_steps = 1000  # Linear warmup; Prompt-DT uses 10000.
    config.train.weight_decay = 1e-4  # AdamW, on all parameters as in Prompt-DT.
    config.train.grad_clip = 0.25  # Global gradient-norm clip.
    config.train.steps_per_call = 50  # Steps scanned in one jitted call.
    config.train.checkpoint_every = 500  # A multiple of steps_per_call.
    config.train.log_every = 50

    config.eval = ml_collections.ConfigDict()
    config.eval.episodes = 10  # Rollouts per held-out task, each with its own prompt.
    config.eval.max_steps = 500  # Steps per rollout (Meta-World's episode length).
    # Initial return-to-go, unscaled: about the scripted expert's 500-step return on reach-v3 (4840).
    config.eval.target_return = 4800.0

    if variant == "quick":
        config.data.episodes = 4
        config.data.prompt_episodes = 2
        config.data.num_train_tasks = 4
        config.data.num_test_tasks = 2
        config.model.hidden_size = 64
        config.model.num_layers = 2
        config.train.num_steps = 300
        config.train.warmup_steps = 100
        config.train.learning_rate = 1e-3
        config.train.checkpoint_every = 150
        config.eval.episodes = 4
        config.eval.max_steps = 150
    elif variant == "metaworld_reach_cpu":
        _cpu_run(config)
        config.data.episodes = 5
        config.data.prompt_episodes = 2
        config.data.num_train_tasks = 20
        config.eval.max_steps = 150
    elif variant == "cheetah_vel_cpu":
        _cheetah_vel(config)
        # The 20 expert episodes per task that configs/offline_rl/collect_brax.py:cpu_cheetah_vel collects
        # also serve as prompts, which saves a second collection.
        config.data.episodes = 20
        config.data.prompt_episodes = 20
        config.data.prompt_seed = 0
        _cpu_run(config)
    elif variant == "default_metaworld_reach":
        _paper_run(config)
    elif variant == "default_cheetah_vel":
        _cheetah_vel(config)
        _paper_run(config)
    else:
        raise ValueError(f"unknown variant {variant!r} of configs/offline_rl/prompt_dt.py; expected one of "
                         f"{', '.join(VARIANTS)}")
    return config


def _cheetah_vel(config: ml_collections.ConfigDict) -> None:
    config.env = "brax/cheetah_vel"
    config.data.hide_goal = False  # The brax observation contains no target velocity.
    config.data.return_scale = 500.0
    config.eval.max_steps = 200
    config.eval.target_return = 0.0  # Prompt-DT's target for cheetah_vel (rewards are negative).


def _cpu_run(config: ml_collections.ConfigDict) -> None:
    """Set the training size that fits three seeds of both methods in an hour on 2 CPU cores."""
    config.model.hidden_size = 64
    config.model.num_layers = 2
    config.train.tasks_per_batch = 4
    config.train.num_steps = 1500
    config.train.learning_rate = 5e-4
    config.train.warmup_steps = 100
    config.eval.episodes = 5


def _paper_run(config: ml_collections.ConfigDict) -> None:
    """Set Prompt-DT's training length: 5000 iterations of 10 steps, 10000 warmup steps."""
    config.train.num_steps = 50000
    config.train.warmup_steps = 10000
    config.train.checkpoint_every = 5000
    config.eval.episodes = 50
