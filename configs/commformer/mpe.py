"""CommFormer on MPE simple_spread (3 agents cover 3 landmarks, 25-step episodes), discrete or continuous.

Run:
  python -m launch.main --config=configs/commformer/mpe.py --workdir=runs/commformer_mpe
  python -m launch.main --config=configs/commformer/mpe.py:cpu --workdir=runs/commformer_mpe_cpu
  python -m launch.main --config=configs/commformer/mpe.py:quick --workdir=runs/commformer_mpe_quick
  python -m launch.main --config=configs/commformer/mpe.py:continuous --workdir=runs/commformer_mpe_cont

The '', 'cpu' and 'quick' variants start from those of configs/commformer/smax.py, with the environment
replaced. The '', 'cpu' and 'continuous' variants then roll out two whole 25-step episodes per environment
and update, and the default trains on 1M env steps. 'cpu' trains on 409,600 env steps with no time limit
(smax.py's 'cpu' stops after 60 minutes; the CPU-sized SMAX tables also lift that limit). 'continuous' is
the default variant with a Normal action head. MPE has no win condition, so `test_win_rate` is 0 and
`test_episode_return` (agent-mean return per episode) is the score. The default variant (32 environments,
1M steps) takes roughly an hour on 2 CPU cores (an estimate); quick takes a minute.
"""

import os

from jaxlab.core.config import load_config_file


def get_config(variant: str = ""):
    if variant not in ("", "cpu", "quick", "continuous"):
        raise ValueError(f"unknown variant {variant!r} of configs/commformer/mpe.py; expected '', 'cpu', 'quick' "
                         "or 'continuous'")
    config = load_config_file(os.path.join(os.path.dirname(__file__), "smax.py"),
                              variant if variant in ("cpu", "quick") else "")
    config.env.name = "MPE_simple_spread_v3"
    config.env.continuous_actions = variant == "continuous"
    if variant != "quick":
        config.ppo.rollout_length = 50  # Two 25-step episodes per environment and update.
        config.train.total_env_steps = 1_000_000
    if variant == "cpu":
        config.train.total_env_steps = 409_600  # 408,000 after rounding down to whole 8,000-step chunks.
        config.train.time_limit_minutes = 0.0
    return config
