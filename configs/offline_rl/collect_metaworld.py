"""Scripted-expert Meta-World ML1 datasets (reach-v3, pick-place-v3) for offline meta-RL.

Run:
  python -m launch.main --config=configs/offline_rl/collect_metaworld.py:quick --workdir=runs/mw_quick
  python -m launch.main --config=configs/offline_rl/collect_metaworld.py:cpu --workdir=runs/mw_cpu
  python -m launch.main --config=configs/offline_rl/collect_metaworld.py --workdir=runs/mw_default

Shards go to the jaxlab cache ($JAXLAB_DATA, default ~/.cache/jaxlab) and a rerun skips the shards that
are there. `quick` collects 2 episodes of 2 goal tasks per task name and noise level (24 episodes).
`cpu` collects 4 episodes of all 50 goal tasks per task name and noise level (1,200 episodes, 600,000
steps), sized for Prompt-DT training on 2 CPU cores. The default variant collects 100 episodes per goal
task and noise level (30,000 episodes, 15 million steps).

Measured on 2 CPU cores shared with other jobs, `quick` took 35 s at a load average of 7. `cpu` took 22
minutes at a load average of 9 to 13, with reach-v3 at about 900 and pick-place-v3 at about 300
environment steps per second. On an idle core the environments step about three times faster, so
`cpu` should take about 8 minutes and the default about 3 hours (estimates). Statistics are in docs/offline_rl_data.md.
"""

import ml_collections

VARIANTS = ("", "cpu", "quick")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.experiment = "offline_rl_collect_metaworld"
    config.seed = 0  # Seeds the action noise of every episode. The 50 goals of each task name do not depend on it.

    # Meta-World v3 task names that have a scripted policy in metaworld.policies.ENV_POLICY_MAP.
    config.task_names = ("reach-v3", "pick-place-v3")
    # Keys of metaworld_data.NOISE_LEVELS: Gaussian action noise of std 0.1 ("expert"), 0.5 ("medium"),
    # 1.0 ("noisy") on the clipped scripted action, or uniform random actions ("random").
    config.noise_levels = ("expert", "medium", "random")
    config.episodes = 100  # Episodes per goal task and noise level (one shard each).
    config.tasks = "all"  # Goal tasks to collect: "train" (45), "test" (the 5 held out) or "all" (50).
    config.max_tasks = 0  # Collect only the first max_tasks goal tasks of the selection, or all of them when 0.
    config.episode_steps = 500  # Meta-World's horizon. Shorter episodes are for tests only.
    # Processes that collect goal tasks in parallel; 1 collects in the launcher's process. Each worker needs
    # a free core, so keep 1 on a shared 2-core machine.
    config.num_workers = 1

    if variant == "cpu":
        config.episodes = 4
    elif variant == "quick":
        config.episodes = 2
        config.max_tasks = 2
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/offline_rl/collect_metaworld.py; "
                         f"expected one of {VARIANTS}")
    return config
