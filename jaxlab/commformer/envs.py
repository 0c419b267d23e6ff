"""JaxMARL environments (SMAX with the heuristic enemy, MPE simple_spread) behind one array interface.

Every environment here takes and returns stacked arrays instead of per-agent dicts, resets itself when an
episode ends, and reports whether the finished episode was won, so the trainer never touches agent names.
"""

from __future__ import annotations

import dataclasses
import io
import sys
from typing import Any, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp

SMAX_MAPS = ("3m", "2s3z", "8m", "5m_vs_6m", "3s5z", "10m_vs_11m")
MPE_SCENARIOS = ("MPE_simple_spread_v3",)


class EnvState(NamedTuple):
    """The state of one environment instance, with the arrays the policy reads.

    Fields:
      obs: float32 [N, obs_dim], each agent's observation of the current step.
      avail: float32 [N, num_actions], 1 for available actions (all ones for MPE and continuous actions).
      inner: the JaxMARL state pytree.
    """

    obs: jax.Array
    avail: jax.Array
    inner: Any


class StepOutput(NamedTuple):
    """The outputs of one environment step besides the next state.

    Fields:
      reward: float32 [N], each agent's reward for the step.
      done: bool [], the episode ended at this step (the returned state already belongs to a new episode).
      won: bool [], the episode ended with a win (SMAX: all enemies dead and an ally alive; MPE: never).
    """

    reward: jax.Array
    done: jax.Array
    won: jax.Array


@dataclasses.dataclass(frozen=True)
class MultiAgentEnv:
    """A JaxMARL environment with stacked arrays; `reset` and `step` are pure and can be vmapped.

    Attributes:
      name: the SMAX map or the MPE scenario id.
      num_agents: N, the number of learning agents.
      obs_dim: the length of one agent's observation.
      num_actions: discrete actions per agent, or the action dimension for continuous actions.
      discrete: whether actions are integers in [0, num_actions).
      episode_length: the maximum steps per episode.
      action_low, action_high: bounds that continuous actions are clipped to.
      env: the wrapped JaxMARL environment.
    """

    name: str
    num_agents: int
    obs_dim: int
    num_actions: int
    discrete: bool
    episode_length: int
    action_low: float
    action_high: float
    env: Any

    def _stack(self, values: dict) -> jax.Array:
        return jnp.stack([values[agent] for agent in self.env.agents])

    def _avail(self, inner: Any) -> jax.Array:
        if self.name in SMAX_MAPS:
            return self._stack(self.env.get_avail_actions(inner)).astype(jnp.float32)
        return jnp.ones((self.num_agents, self.num_actions), jnp.float32)

    def reset(self, key: jax.Array) -> EnvState:
        obs, inner = self.env.reset(key)
        # Some JaxMARL reset values are weakly typed; strong types keep a jitted chunk's input and output
        # types equal, so calling it again does not recompile.
        inner = jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), inner)
        return EnvState(self._stack(obs).astype(jnp.float32), self._avail(inner), inner)

    def step(self, key: jax.Array, state: EnvState, actions: jax.Array) -> tuple[EnvState, StepOutput]:
        """Apply `actions` (int32 [N] or float32 [N, num_actions]) and reset when the episode ends."""
        key_step, key_reset = jax.random.split(key)
        if not self.discrete:
            actions = jnp.clip(actions, self.action_low, self.action_high)
        action_dict = {agent: actions[i] for i, agent in enumerate(self.env.agents)}
        obs, inner, reward, dones, _ = self.env.step_env(key_step, state.inner, action_dict)
        done = dones["__all__"]
        won = done & self._won(inner)

        # Auto-reset here rather than in JaxMARL's `step`, so that the terminal state is still visible above.
        reset_state = self.reset(key_reset)
        next_state = EnvState(self._stack(obs).astype(jnp.float32), self._avail(inner), inner)
        next_state = jax.tree.map(lambda new, old: jnp.where(done, new, old), reset_state, next_state)
        return next_state, StepOutput(self._stack(reward).astype(jnp.float32), done, won)

    def active(self, state: EnvState) -> jax.Array:
        """Return float32 [N]: 1 for the agents that are alive in `state` (all ones for MPE).

        Dead SMAX agents observe zeros and can only take the no-op action. MAPPO's active masks leave
        their samples out of the losses.
        """
        if self.name in SMAX_MAPS:
            return state.inner.state.unit_alive[:self.num_agents].astype(jnp.float32)
        return jnp.ones((self.num_agents,), jnp.float32)

    def _won(self, inner: Any) -> jax.Array:
        if self.name not in SMAX_MAPS:
            return jnp.asarray(False)
        alive = inner.state.unit_alive
        return jnp.all(~alive[self.num_agents:]) & jnp.any(alive[:self.num_agents])


def import_jaxmarl() -> Any:
    """Import jaxmarl and return it, leaving `sys.stdout` and `sys.stderr` unchanged.

    JaxMARL 0.2.0's MABrax module silences brax's import by swapping the streams and then sets them to
    `sys.__stdout__` and `sys.__stderr__`. In Jupyter and Colab those are the kernel process's own streams,
    so every later print would leave the notebook. During the import `sys.__stdout__` points at a buffer,
    which also catches jaxmarl's messages about its optional submodules. They go to the debug log, so they
    no longer land above a benchmark's table.

    NOTE: only the first import of jaxmarl swaps the streams. In a notebook, call this (or `make_env`)
    before any plain `import jaxmarl`, or later prints leave the notebook.
    """
    saved = (sys.stdout, sys.stderr, sys.__stdout__)
    printed = io.StringIO()
    sys.stdout = sys.__stdout__ = printed
    try:
        import jaxmarl
    finally:
        sys.stdout, sys.stderr, sys.__stdout__ = saved
    if printed.getvalue().strip():
        logging.debug("jaxmarl import printed: %s", printed.getvalue().strip())
    return jaxmarl


def make_env(name: str, continuous_actions: bool = False) -> MultiAgentEnv:
    """Build a SMAX map (heuristic enemy) or an MPE scenario by name.

    Raises:
      ValueError: for an unknown name, or continuous actions on SMAX (JaxMARL 0.2.0's continuous SMAX
        action decoding is not used here).
    """
    jaxmarl = import_jaxmarl()

    if name in SMAX_MAPS:
        if continuous_actions:
            raise ValueError(f"continuous actions are supported on MPE only, not on the SMAX map {name!r}.")
        from jaxmarl.environments.smax import HeuristicEnemySMAX, map_name_to_scenario

        env = HeuristicEnemySMAX(scenario=map_name_to_scenario(name))
        agent = env.agents[0]
        return MultiAgentEnv(name, env.num_agents, int(env.observation_space(agent).shape[0]),
                             int(env.action_space(agent).n), True, int(env.max_steps), 0.0, 0.0, env)
    if name in MPE_SCENARIOS:
        env = jaxmarl.make(name, action_type="Continuous" if continuous_actions else "Discrete")
        agent = env.agents[0]
        space = env.action_space(agent)
        if continuous_actions:
            return MultiAgentEnv(name, env.num_agents, int(env.observation_space(agent).shape[0]),
                                 int(space.shape[0]), False, int(env.max_steps), float(space.low),
                                 float(space.high), env)
        return MultiAgentEnv(name, env.num_agents, int(env.observation_space(agent).shape[0]), int(space.n),
                             True, int(env.max_steps), 0.0, 0.0, env)
    raise ValueError(f"unknown environment {name!r}; expected one of {SMAX_MAPS + MPE_SCENARIOS}.")
