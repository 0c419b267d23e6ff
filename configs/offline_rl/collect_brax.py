"""PPO-expert datasets of the brax task families Cheetah-vel and Ant-dir for offline meta-RL.

Run:
  python -m launch.main --config=configs/offline_rl/collect_brax.py:quick --workdir=runs/brax_quick
  python -m launch.main --config=configs/offline_rl/collect_brax.py:cpu_cheetah_vel \
      --workdir=runs/offline_rl_collect_brax_cheetah_vel
  python -m launch.main --config=configs/offline_rl/collect_brax.py:cpu_ant_dir --workdir=runs/brax_ant_dir
  python -m launch.main --config=configs/offline_rl/collect_brax.py:default_cheetah_vel --workdir=runs/brax_cv

The expert and the shards go to the jaxlab cache ($JAXLAB_DATA, default ~/.cache/jaxlab, or `data_root`),
and a rerun loads the expert and skips the shards that are there.

- `quick` trains for 4 PPO iterations and collects 2 episodes of 2 tasks per noise level. This smoke
  test took under 7 minutes, mostly compilation, on 2 busy CPU cores.
- `cpu_cheetah_vel` caps expert training at 42 minutes and `cpu_ant_dir` at 55 minutes of 2 CPU cores.
  Both then collect 20 episodes per task and noise level. The measured `cpu_cheetah_vel` run took 46
  minutes in all and reached a mean-action return of -42.8 on the train tasks and -26.3 on the test tasks.
- The `default_*` variants train paper-sized experts (50M and 100M environment steps, 2,048
  environments) on an accelerator and collect 100 episodes per task and noise level.

Measured returns and times are in docs/offline_rl_brax.md.
"""

import ml_collections

from jaxlab.offline_rl import ppo_expert

VARIANTS = ("", "quick", "cpu_cheetah_vel", "cpu_ant_dir", "default_cheetah_vel", "default_ant_dir")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} of configs/offline_rl/collect_brax.py; "
                         f"expected one of {VARIANTS}")
    task = "ant_dir" if variant.endswith("ant_dir") else "cheetah_vel"
    expert_variant = {"quick": "quick", "cpu_cheetah_vel": "cpu", "cpu_ant_dir": "cpu"}.get(variant, "default")

    config = ml_collections.ConfigDict()
    config.experiment = "offline_rl_collect_brax"
    config.seed = 0  # Seeds the resets and the action noise of the collected and evaluation episodes.
    config.task = task  # "cheetah_vel" (40 target velocities) or "ant_dir" (50 directions).
    # The PPO expert; the fields and their meaning are in jaxlab.offline_rl.ppo_expert.expert_config.
    config.expert = ppo_expert.expert_config(task, expert_variant)
    # Keys of ppo_expert.NOISE_LEVELS: Gaussian action noise of std 0.1 ("expert"), 0.5 ("medium") or 1.0
    # ("noisy") on the expert's mean action, clipped to [-1, 1].
    config.noise_levels = ("expert", "medium")
    config.episodes = 100  # Episodes of 200 steps per task and noise level (one shard each).
    config.tasks = ()  # Task indices to collect; () collects every task of the family.
    config.data_root = ""  # Cache root for the expert and the shards; "" uses $JAXLAB_DATA.

    if variant.startswith("cpu"):
        config.episodes = 20
    elif variant == "quick":
        config.noise_levels = ("expert", "noisy")
        config.episodes = 2
        config.tasks = (0, 2)  # One train task and one test task.
    return config
