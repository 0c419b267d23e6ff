"""Denoising diffusion over arrays of any shape: schedules, training losses and samplers.

Everything here is a pure function of arrays, a `NoiseSchedule` pytree and a denoiser apply
function, so it runs under `jax.jit` and `jax.vmap`. Samplers are `lax.scan` loops over a
timestep array whose length is fixed by the schedule and the DDIM stride.

Conventions:
  * Timesteps are integers t in {0, ..., T-1}. Index t is step t+1 of Ho et al. (2020), so
    `alpha_bars[t]` is the fraction of signal variance left after t+1 noising steps. Decision
    Diffuser and Diffuser index the same way.
  * Data `x` has shape [batch, ...]; `t` has shape [batch] (int32); the condition, when given,
    has shape [batch, ...].
  * A denoiser is called as `apply_fn(params, x_t, t, condition)` by the samplers and as
    `train_apply_fn(params, x_t, t, condition, key)` by `diffusion_loss`, where `key` feeds
    stochastic layers such as dropout. For a flax module:

        train_apply_fn = lambda p, x, t, c, k: model.apply(p, x, t, c, train=True, rngs={"dropout": k})
        apply_fn = lambda p, x, t, c: model.apply(p, x, t, c)

  * The network predicts either the noise ("epsilon", Ho et al. 2020) or the clean sample
    ("x0"). Both samplers accept either.

Classifier-free guidance (Ho & Salimans 2022): `diffusion_loss` replaces each example's
condition by a null condition with probability `condition_drop_prob`, and the samplers combine
the conditional and unconditional outputs as out_u + w (out_c - out_u). The null condition is
zeros by default, a fixed array, or a function of the parameters (a learned null condition
stored in the params pytree).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

PyTree = Any
ApplyFn = Callable[[PyTree, jax.Array, jax.Array, jax.Array | None], jax.Array]
TrainApplyFn = Callable[[PyTree, jax.Array, jax.Array, jax.Array | None, jax.Array], jax.Array]
InpaintFn = Callable[[jax.Array], jax.Array]
NullCondition = jax.Array | np.ndarray | float | Callable[[PyTree], jax.Array] | None

PREDICTIONS = ("epsilon", "x0")
DDIM_SPACINGS = ("leading", "trailing")


# ----------------------------------------------------------------------------------------------
# Noise schedules
# ----------------------------------------------------------------------------------------------


@struct.dataclass
class NoiseSchedule:
    """Per-timestep constants of a DDPM forward process, each a float32 array of shape [T].

    Attributes:
        betas: beta_t, the variance added at step t.
        alphas: 1 - beta_t.
        alpha_bars: prod_{s <= t} alpha_s, so x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.
        alpha_bars_prev: alpha_bar_{t-1}, with 1 at t = 0.
        sqrt_alpha_bars: sqrt(alpha_bar_t).
        sqrt_one_minus_alpha_bars: sqrt(1 - alpha_bar_t).
        posterior_variance: variance of q(x_{t-1} | x_t, x_0),
            beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t); zero at t = 0.
        posterior_mean_coef_x0: coefficient of x_0 in the mean of q(x_{t-1} | x_t, x_0).
        posterior_mean_coef_xt: coefficient of x_t in that mean.
    """

    betas: jax.Array
    alphas: jax.Array
    alpha_bars: jax.Array
    alpha_bars_prev: jax.Array
    sqrt_alpha_bars: jax.Array
    sqrt_one_minus_alpha_bars: jax.Array
    posterior_variance: jax.Array
    posterior_mean_coef_x0: jax.Array
    posterior_mean_coef_xt: jax.Array

    @property
    def num_steps(self) -> int:
        """The number of diffusion steps T (static under jit, since it is a shape)."""
        return self.betas.shape[0]


def _check_num_steps(num_steps: Any) -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r} is invalid; expected an int >= 1")
    return int(num_steps)


def schedule_from_betas(betas: Sequence[float] | np.ndarray) -> NoiseSchedule:
    """Build a `NoiseSchedule` from betas, computing the derived constants in float64.

    Raises:
        ValueError: if `betas` is not a non-empty 1-D array of finite values in (0, 1).
    """
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.size == 0:
        raise ValueError(f"betas has shape {betas.shape}; expected a non-empty 1-D array [T]")
    bad = np.flatnonzero(~(np.isfinite(betas) & (betas > 0) & (betas < 1)))
    if bad.size:
        raise ValueError(
            f"betas[{bad[0]}]={float(betas[bad[0]])!r} is invalid; every beta must lie in the open "
            "interval (0, 1)")
    alphas = 1.0 - betas
    alpha_bars = np.cumprod(alphas)
    alpha_bars_prev = np.concatenate([[1.0], alpha_bars[:-1]])
    one_minus = 1.0 - alpha_bars
    constants = dict(
        betas=betas,
        alphas=alphas,
        alpha_bars=alpha_bars,
        alpha_bars_prev=alpha_bars_prev,
        sqrt_alpha_bars=np.sqrt(alpha_bars),
        sqrt_one_minus_alpha_bars=np.sqrt(one_minus),
        posterior_variance=betas * (1.0 - alpha_bars_prev) / one_minus,
        posterior_mean_coef_x0=betas * np.sqrt(alpha_bars_prev) / one_minus,
        posterior_mean_coef_xt=(1.0 - alpha_bars_prev) * np.sqrt(alphas) / one_minus,
    )
    return NoiseSchedule(**{name: jnp.asarray(value, jnp.float32) for name, value in constants.items()})


def linear_betas(num_steps: int, beta_start: float | None = None,
                 beta_end: float | None = None) -> np.ndarray:
    """Return betas spaced linearly from `beta_start` to `beta_end` (Ho et al. 2020).

    The defaults are Ho et al.'s 1e-4 and 0.02 for T = 1000, multiplied by 1000 / T as in
    Nichol & Dhariwal (2021), so that alpha_bar_{T-1} stays near zero for any T (about 4e-5).
    """
    num_steps = _check_num_steps(num_steps)
    scale = 1000.0 / num_steps
    beta_start = scale * 1e-4 if beta_start is None else float(beta_start)
    beta_end = scale * 0.02 if beta_end is None else float(beta_end)
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(
            f"beta_start={beta_start!r}, beta_end={beta_end!r} are invalid; expected "
            "0 < beta_start <= beta_end < 1 (for few steps, pass smaller values explicitly)")
    return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)


def cosine_alpha_bar(u: np.ndarray, s: float = 0.008) -> np.ndarray:
    """Return the cosine schedule's alpha_bar at fractions u = t / T in [0, 1] (Nichol & Dhariwal 2021).

    alpha_bar(u) = f(u) / f(0) with f(u) = cos((u + s) / (1 + s) * pi / 2)^2.
    """
    u = np.asarray(u, dtype=np.float64)

    def f(v):
        return np.cos((v + s) / (1.0 + s) * np.pi / 2.0) ** 2

    return f(u) / f(0.0)


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Return betas of the cosine schedule (Nichol & Dhariwal 2021).

    beta_t = min(1 - alpha_bar((t+1)/T) / alpha_bar(t/T), max_beta). The clip keeps the last
    steps, where alpha_bar reaches 0, from having beta = 1. Decision Diffuser uses s = 0.008 and
    max_beta = 0.999.
    """
    num_steps = _check_num_steps(num_steps)
    if not (math.isfinite(s) and s >= 0.0):
        raise ValueError(f"s={s!r} is invalid; expected a finite offset >= 0 (the paper uses 0.008)")
    if not 0.0 < max_beta < 1.0:
        raise ValueError(f"max_beta={max_beta!r} is invalid; expected a value in (0, 1)")
    alpha_bar = cosine_alpha_bar(np.arange(num_steps + 1) / num_steps, s)
    betas = 1.0 - alpha_bar[1:] / alpha_bar[:-1]
    return np.clip(betas, 0.0, max_beta)


SCHEDULES: dict[str, Callable[..., np.ndarray]] = {"linear": linear_betas, "cosine": cosine_betas}


def make_schedule(kind: str, num_steps: int, **kwargs: Any) -> NoiseSchedule:
    """Build the named schedule ("linear" or "cosine"); `kwargs` go to `linear_betas` or `cosine_betas`."""
    if kind not in SCHEDULES:
        raise ValueError(f"schedule kind={kind!r} is unknown; expected one of {sorted(SCHEDULES)}")
    return schedule_from_betas(SCHEDULES[kind](num_steps, **kwargs))


# ----------------------------------------------------------------------------------------------
# Forward process and conversions between predictions
# ----------------------------------------------------------------------------------------------


def _at(values: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
    """Gather values[t] and reshape [batch] to [batch, 1, ..., 1] so it broadcasts over x."""
    gathered = values[t]
    if gathered.ndim == 1:
        gathered = gathered.reshape(gathered.shape + (1,) * (ndim - 1))
    return gathered


def q_sample(schedule: NoiseSchedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """Draw x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) from the given noise."""
    return (_at(schedule.sqrt_alpha_bars, t, x0.ndim) * x0
            + _at(schedule.sqrt_one_minus_alpha_bars, t, x0.ndim) * noise)


def predict_x0_from_eps(schedule: NoiseSchedule, x_t: jax.Array, t: jax.Array,
                        eps: jax.Array) -> jax.Array:
    """Invert `q_sample` for x_0: (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
    return ((x_t - _at(schedule.sqrt_one_minus_alpha_bars, t, x_t.ndim) * eps)
            / _at(schedule.sqrt_alpha_bars, t, x_t.ndim))


def predict_eps_from_x0(schedule: NoiseSchedule, x_t: jax.Array, t: jax.Array,
                        x0: jax.Array) -> jax.Array:
    """Invert `q_sample` for the noise: (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)."""
    return ((x_t - _at(schedule.sqrt_alpha_bars, t, x_t.ndim) * x0)
            / _at(schedule.sqrt_one_minus_alpha_bars, t, x_t.ndim))


def q_posterior_mean(schedule: NoiseSchedule, x0: jax.Array, x_t: jax.Array,
                     t: jax.Array) -> jax.Array:
    """Return the mean of q(x_{t-1} | x_t, x_0) (Ho et al. 2020)."""
    return (_at(schedule.posterior_mean_coef_x0, t, x_t.ndim) * x0
            + _at(schedule.posterior_mean_coef_xt, t, x_t.ndim) * x_t)


def _check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction={prediction!r} is unknown; expected one of {PREDICTIONS}")


def eps_and_x0(schedule: NoiseSchedule, prediction: str, output: jax.Array, x_t: jax.Array,
               t: jax.Array, clip_x0: float | None = None) -> tuple[jax.Array, jax.Array]:
    """Convert a network output into (epsilon, x_0) estimates.

    With `clip_x0`, the x_0 estimate is clipped to [-clip_x0, clip_x0] (Decision Diffuser clips to
    [-1, 1] because its data are normalized to that range) and epsilon is recomputed from it, so
    the two estimates stay consistent with x_t.
    """
    _check_prediction(prediction)
    if prediction == "epsilon":
        eps = output
        x0 = predict_x0_from_eps(schedule, x_t, t, eps)
    else:
        x0 = output
        eps = predict_eps_from_x0(schedule, x_t, t, x0)
    if clip_x0 is not None:
        x0 = jnp.clip(x0, -clip_x0, clip_x0)
        eps = predict_eps_from_x0(schedule, x_t, t, x0)
    return eps, x0


# ----------------------------------------------------------------------------------------------
# Conditioning: null condition, condition dropout, guidance, inpainting
# ----------------------------------------------------------------------------------------------


def resolve_null_condition(null_condition: NullCondition, params: PyTree,
                           condition: jax.Array) -> jax.Array:
    """Return the null condition broadcast to `condition`'s shape [batch, ...].

    `null_condition` is None (zeros), an array that broadcasts to one example's condition
    shape, or a function of `params` that returns such an array (a learned null condition).
    """
    if null_condition is None:
        return jnp.zeros_like(condition)
    value = null_condition(params) if callable(null_condition) else null_condition
    value = jnp.asarray(value, dtype=condition.dtype)
    try:
        return jnp.broadcast_to(value, condition.shape)
    except ValueError:
        raise ValueError(
            f"null condition has shape {value.shape}, which does not broadcast to the condition's "
            f"shape {condition.shape}; pass one example's condition shape {condition.shape[1:]}"
        ) from None


def _check_drop_prob(drop_prob: float) -> None:
    if isinstance(drop_prob, numbers.Real) and not 0.0 <= drop_prob < 1.0:
        raise ValueError(
            f"condition_drop_prob={drop_prob!r} is invalid; expected a probability in [0, 1) "
            "(Decision Diffuser uses 0.25)")


def drop_condition(condition: jax.Array, key: jax.Array, drop_prob: float | jax.Array,
                   null_condition: jax.Array) -> jax.Array:
    """Replace each example's condition by `null_condition` with probability `drop_prob`.

    Args:
        condition: [batch, ...].
        key: PRNG key for the per-example Bernoulli draws.
        drop_prob: probability in [0, 1).
        null_condition: the replacement, already broadcast to `condition`'s shape.
    """
    _check_drop_prob(drop_prob)
    dropped = jax.random.bernoulli(key, drop_prob, (condition.shape[0],))
    dropped = dropped.reshape((-1,) + (1,) * (condition.ndim - 1))
    return jnp.where(dropped, null_condition, condition)


def guided_output(apply_fn: ApplyFn, params: PyTree, x_t: jax.Array, t: jax.Array,
                  condition: jax.Array | None, guidance_scale: float | jax.Array | None = None,
                  null_condition: NullCondition = None) -> jax.Array:
    """Call the denoiser, with classifier-free guidance when `guidance_scale` is set.

    Returns out_u + w (out_c - out_u), where out_c uses `condition` and out_u the null
    condition. w = 0 gives the unconditional output and w = 1 the conditional one. The two
    outputs come from one call on a doubled batch. Combining raw outputs is the same for
    epsilon and x0 prediction, because epsilon is an affine function of x0 at fixed x_t and t.
    Without a condition or a guidance scale, this is a plain call.
    """
    if condition is None or guidance_scale is None:
        return apply_fn(params, x_t, t, condition)
    null = resolve_null_condition(null_condition, params, condition)
    batch = x_t.shape[0]
    both = apply_fn(params, jnp.concatenate([x_t, x_t]), jnp.concatenate([t, t]),
                    jnp.concatenate([condition, null]))
    conditional, unconditional = both[:batch], both[batch:]
    return unconditional + guidance_scale * (conditional - unconditional)


def make_inpaint_fn(values: jax.Array, mask: jax.Array) -> InpaintFn:
    """Return x -> where(mask, values, x), which overwrites the known entries of x.

    Decision Diffuser conditions a plan on the current state by writing the clean state into
    x[:, 0, :] before every denoiser call and after every step. `values` and `mask` must
    broadcast to x's shape. For the loss, also give those entries zero weight.
    """
    mask = jnp.asarray(mask, dtype=bool)
    values = jnp.asarray(values)

    def inpaint(x: jax.Array) -> jax.Array:
        return jnp.where(mask, values.astype(x.dtype), x)

    return inpaint


# ----------------------------------------------------------------------------------------------
# Training loss
# ----------------------------------------------------------------------------------------------


def diffusion_loss(train_apply_fn: TrainApplyFn, params: PyTree, x0: jax.Array,
                   condition: jax.Array | None, key: jax.Array, *, schedule: NoiseSchedule,
                   prediction: str = "epsilon", condition_drop_prob: float = 0.0,
                   null_condition: NullCondition = None, weights: jax.Array | None = None,
                   inpaint: InpaintFn | None = None) -> jax.Array:
    """Return the denoising loss E_{t, eps} || target - net(x_t, t, c) ||^2 on one batch.

    t is uniform over {0, ..., T-1} and the target is the noise ("epsilon", Ho et al.'s L_simple)
    or x_0 ("x0").

    Args:
        train_apply_fn: `(params, x_t, t, condition, key) -> output` with x_t's shape.
        params: the denoiser's parameters (differentiate the loss with respect to these).
        x0: clean data [batch, ...].
        condition: [batch, ...] or None.
        key: PRNG key; split into the timestep, noise, condition-dropout and network keys.
        schedule: the noise schedule.
        prediction: "epsilon" or "x0".
        condition_drop_prob: probability of replacing an example's condition with the null
            condition, for classifier-free guidance.
        null_condition: see `resolve_null_condition`.
        weights: optional per-element weights or 0/1 mask that broadcast to x0's shape. The
            loss is then sum(w * err) / sum(w), the mean over weighted elements; all-zero
            weights give a loss of 0.
        inpaint: optional function applied to x_t before the network call (see
            `make_inpaint_fn`). Give the overwritten entries zero weight, since the network
            cannot recover the noise there.

    Returns:
        The scalar loss.
    """
    _check_prediction(prediction)
    _check_drop_prob(condition_drop_prob)
    t_key, noise_key, drop_key, apply_key = jax.random.split(key, 4)
    batch = x0.shape[0]
    t = jax.random.randint(t_key, (batch,), 0, schedule.num_steps)
    noise = jax.random.normal(noise_key, x0.shape, x0.dtype)
    x_t = q_sample(schedule, x0, t, noise)
    if inpaint is not None:
        x_t = inpaint(x_t)
    if condition is not None and not (isinstance(condition_drop_prob, numbers.Real)
                                      and condition_drop_prob == 0.0):
        null = resolve_null_condition(null_condition, params, condition)
        condition = drop_condition(condition, drop_key, condition_drop_prob, null)

    output = train_apply_fn(params, x_t, t, condition, apply_key)
    if output.shape != x0.shape:
        raise ValueError(f"the denoiser returned shape {output.shape}; expected x0's shape {x0.shape}")
    target = noise if prediction == "epsilon" else x0
    squared_error = jnp.square(output - target)
    if weights is None:
        return jnp.mean(squared_error)
    weights = jnp.broadcast_to(jnp.asarray(weights, squared_error.dtype), squared_error.shape)
    return jnp.sum(weights * squared_error) / jnp.maximum(jnp.sum(weights), 1e-12)


# ----------------------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------------------


def _initial_noise(key: jax.Array, shape: Sequence[int] | None, x_T: jax.Array | None,
                   scale: float = 1.0) -> jax.Array:
    if x_T is not None:
        if shape is not None and tuple(shape) != tuple(x_T.shape):
            raise ValueError(f"shape={tuple(shape)} disagrees with x_T.shape={x_T.shape}; pass one of them")
        return x_T
    if shape is None:
        raise ValueError("shape is None and x_T is None; pass the sample shape [batch, ...] or x_T")
    return scale * jax.random.normal(key, tuple(shape))


def ddpm_sample(apply_fn: ApplyFn, params: PyTree, key: jax.Array,
                shape: Sequence[int] | None = None, *, schedule: NoiseSchedule,
                condition: jax.Array | None = None, guidance_scale: float | jax.Array | None = None,
                null_condition: NullCondition = None, prediction: str = "epsilon",
                clip_x0: float | None = None, inpaint: InpaintFn | None = None,
                temperature: float = 1.0, x_T: jax.Array | None = None) -> jax.Array:
    """Draw samples with DDPM ancestral sampling over all T steps (Ho et al. 2020).

    Each step draws x_{t-1} ~ N(mu(x_t, x0_hat), beta_tilde_t I), where mu is the mean of
    q(x_{t-1} | x_t, x_0) at the network's x_0 estimate and beta_tilde_t the posterior variance,
    which is zero at t = 0.

    Args:
        apply_fn: `(params, x_t, t, condition) -> output`.
        key: PRNG key. The noise of step t is drawn from `fold_in(step_key, t)`, the same
            stream `ddim_sample` uses, so DDIM with eta = 1 and stride 1 reproduces this sampler.
        shape: the sample shape [batch, ...]; may be omitted when `x_T` is given.
        schedule: the noise schedule.
        condition, guidance_scale, null_condition: see `guided_output`.
        prediction: "epsilon" or "x0".
        clip_x0: optional bound on |x_0 estimate| (see `eps_and_x0`).
        inpaint: optional function that overwrites known entries, applied to x_T, before every
            network call and to the result.
        temperature: multiplies the initial and per-step noise. 1 samples the model; Decision
            Diffuser's sampler uses 0.5.
        x_T: optional initial noise; when given, `temperature` does not rescale it.

    Returns:
        The samples x_0, with the given shape.
    """
    _check_prediction(prediction)
    init_key, step_key = jax.random.split(key)
    x = _initial_noise(init_key, shape, x_T, temperature)
    batch = x.shape[0]
    keep = inpaint if inpaint is not None else (lambda value: value)
    x = keep(x)

    def step(x, t):
        t_batch = jnp.full((batch,), t, dtype=jnp.int32)
        output = guided_output(apply_fn, params, x, t_batch, condition, guidance_scale, null_condition)
        _, x0 = eps_and_x0(schedule, prediction, output, x, t_batch, clip_x0)
        mean = q_posterior_mean(schedule, x0, x, t_batch)
        noise = jax.random.normal(jax.random.fold_in(step_key, t), x.shape, x.dtype)
        x = mean + temperature * jnp.sqrt(schedule.posterior_variance[t]) * noise
        return keep(x), None

    timesteps = jnp.arange(schedule.num_steps - 1, -1, -1, dtype=jnp.int32)
    x, _ = jax.lax.scan(step, x, timesteps)
    return x


def ddim_timesteps(num_steps: int, stride: int, spacing: str = "leading") -> tuple[np.ndarray, np.ndarray]:
    """Return the DDIM timestep subsequence, descending, and each step's target timestep.

    "leading" visits range(0, T, stride) in reverse, so T = 200 and stride 20 give 180, 160,
    ..., 0, and the first step starts below the last noise level. "trailing" visits T-1,
    T-1-stride, ... down to a value >= 0 (199, 179, ..., 19), so the first step starts at the
    last noise level. The last target is -1, the clean sample (alpha_bar = 1).

    Returns:
        (timesteps, previous_timesteps), two int32 arrays of equal length.
    """
    num_steps = _check_num_steps(num_steps)
    if isinstance(stride, bool) or not isinstance(stride, numbers.Integral) or not 1 <= stride <= num_steps:
        raise ValueError(f"stride={stride!r} is invalid; expected an int in [1, num_steps={num_steps}]")
    if spacing == "leading":
        ascending = np.arange(0, num_steps, stride)
    elif spacing == "trailing":
        ascending = np.arange(num_steps - 1, -1, -stride)[::-1]
    else:
        raise ValueError(f"spacing={spacing!r} is unknown; expected one of {DDIM_SPACINGS}")
    previous = np.concatenate([[-1], ascending[:-1]])
    return ascending[::-1].astype(np.int32), previous[::-1].astype(np.int32)


def _alpha_bar_or_one(schedule: NoiseSchedule, t: jax.Array) -> jax.Array:
    """alpha_bar_t, with 1 for t = -1 (the clean sample)."""
    return jnp.where(t >= 0, schedule.alpha_bars[jnp.maximum(t, 0)], 1.0)


def ddim_sample(apply_fn: ApplyFn, params: PyTree, key: jax.Array,
                shape: Sequence[int] | None = None, *, schedule: NoiseSchedule, stride: int = 1,
                eta: float | jax.Array = 0.0, spacing: str = "leading",
                condition: jax.Array | None = None, guidance_scale: float | jax.Array | None = None,
                null_condition: NullCondition = None, prediction: str = "epsilon",
                clip_x0: float | None = None, inpaint: InpaintFn | None = None,
                x_T: jax.Array | None = None) -> jax.Array:
    """Draw samples with DDIM on a strided timestep subsequence (Song et al. 2021).

    From timestep t to its target s (alpha_bar_{-1} = 1):

        x_s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - sigma^2) eps_hat + sigma z,
        sigma = eta sqrt((1 - ab_s) / (1 - ab_t)) sqrt(1 - ab_t / ab_s).

    eta = 0 is deterministic given x_T, and eta = 1 with stride 1 is DDPM ancestral sampling.
    `stride`, `spacing` and the shape are static. The arguments shared with `ddpm_sample` mean the
    same there; VQ-CD samples with stride 20 over T = 200.
    """
    _check_prediction(prediction)
    timesteps, previous = ddim_timesteps(schedule.num_steps, stride, spacing)
    init_key, step_key = jax.random.split(key)
    x = _initial_noise(init_key, shape, x_T)
    batch = x.shape[0]
    keep = inpaint if inpaint is not None else (lambda value: value)
    x = keep(x)

    def step(x, pair):
        t, s = pair
        t_batch = jnp.full((batch,), t, dtype=jnp.int32)
        output = guided_output(apply_fn, params, x, t_batch, condition, guidance_scale, null_condition)
        eps, x0 = eps_and_x0(schedule, prediction, output, x, t_batch, clip_x0)
        ab_t = schedule.alpha_bars[t]
        ab_s = _alpha_bar_or_one(schedule, s)
        sigma = eta * jnp.sqrt((1.0 - ab_s) / (1.0 - ab_t)) * jnp.sqrt(1.0 - ab_t / ab_s)
        direction = jnp.sqrt(jnp.maximum(1.0 - ab_s - sigma**2, 0.0))
        noise = jax.random.normal(jax.random.fold_in(step_key, t), x.shape, x.dtype)
        x = jnp.sqrt(ab_s) * x0 + direction * eps + sigma * noise
        return keep(x), None

    x, _ = jax.lax.scan(step, x, (jnp.asarray(timesteps), jnp.asarray(previous)))
    return x


def ddim_invert(apply_fn: ApplyFn, params: PyTree, x0: jax.Array, *, schedule: NoiseSchedule,
                stride: int = 1, spacing: str = "leading", condition: jax.Array | None = None,
                guidance_scale: float | jax.Array | None = None, null_condition: NullCondition = None,
                prediction: str = "epsilon", fixed_point_iterations: int = 0) -> jax.Array:
    """Map data to DDIM noise by running the eta = 0 update backwards (Song et al. 2021).

    The sampler's step from t to s uses eps(x_t, t), which the inversion cannot evaluate before
    it has computed x_t. Each inversion step from level s to t therefore starts from the usual
    approximation eps(x_s, t). It then refines x_t `fixed_point_iterations` times: each
    iteration evaluates eps at the current x_t and solves the sampler's update for x_t again.
    Without iterations, `ddim_sample` with eta = 0 and the same stride and
    spacing maps the result back to `x0` up to an error that shrinks with the stride; each
    converging iteration shrinks it further, at one extra network call per step.

    Returns:
        x at the first timestep that `ddim_sample` visits, with x0's shape.
    """
    _check_prediction(prediction)
    if (isinstance(fixed_point_iterations, bool) or not isinstance(fixed_point_iterations, numbers.Integral)
            or fixed_point_iterations < 0):
        raise ValueError(f"fixed_point_iterations={fixed_point_iterations!r} is invalid; expected an int >= 0")
    timesteps, previous = ddim_timesteps(schedule.num_steps, stride, spacing)
    batch = x0.shape[0]

    def step(x_s, pair):
        t, s = pair
        t_batch = jnp.full((batch,), t, dtype=jnp.int32)
        ab_t = schedule.alpha_bars[t]
        ab_s = _alpha_bar_or_one(schedule, s)

        def solve_for_x_t(x_guess):
            # The x_t whose eta = 0 step to level s lands on x_s, given eps(x_guess, t).
            output = guided_output(apply_fn, params, x_guess, t_batch, condition, guidance_scale,
                                   null_condition)
            if prediction == "epsilon":
                eps = output
            else:
                eps = predict_eps_from_x0(schedule, x_guess, t_batch, output)
            x0_hat = (x_s - jnp.sqrt(1.0 - ab_s) * eps) / jnp.sqrt(ab_s)
            return jnp.sqrt(ab_t) * x0_hat + jnp.sqrt(1.0 - ab_t) * eps

        x_t = solve_for_x_t(x_s)
        x_t = jax.lax.fori_loop(0, fixed_point_iterations, lambda _, x: solve_for_x_t(x), x_t)
        return x_t, None

    # Ascending order: (timestep, level it starts from), from the clean sample upwards.
    pairs = (jnp.asarray(timesteps[::-1]), jnp.asarray(previous[::-1]))
    x, _ = jax.lax.scan(step, x0, pairs)
    return x
