"""Tune the hard-decision reliability β of the polar product code's hard-output baseline.

Run:
  python benchmarks/polar_product_code.py --length=64 --num_info=57 --ebno_db=3.25 --betas=5,8,11,16

For each β (and SO-SCL once, for reference) decodes the same payloads and noise at each Eb/N0 and prints
the BLER and the mean number of iterations. The BLER curves themselves come from the `polar_product_code`
experiment (configs/polar/product_code.py).
"""

import time

import jax
from absl import app, flags

from jaxlab.polar import codes, product, simulation

_LENGTH = flags.DEFINE_integer("length", 64, "Length n of the component polar code.")
_NUM_INFO = flags.DEFINE_integer("num_info", 57, "Information bits k of the component polar code.")
_EBNO_DB = flags.DEFINE_list("ebno_db", ["3.25"], "Eb/N0 points in dB (payload rate k²/n²).")
_BETAS = flags.DEFINE_list("betas", ["5", "8", "11", "16"], "Hard-decision reliabilities β to compare, in LLR units.")
_CODEWORDS = flags.DEFINE_integer("codewords", 384, "Product codewords per (decoder, Eb/N0) point.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Product codewords per batch.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of payloads and noise.")


def _measure(product_code, spec, ebno_db):
    simulate = product.make_batch_simulator(product_code, spec, _BATCH_SIZE.value)
    root_key = jax.random.key(_SEED.value)
    block_errors = iterations = codewords = batches = 0
    while codewords < _CODEWORDS.value:
        errors, _, batch_iterations = jax.device_get(simulate(simulation.batch_key(root_key, 0, batches), ebno_db))
        block_errors += int(errors)
        iterations += int(batch_iterations)
        codewords += _BATCH_SIZE.value
        batches += 1
    return block_errors, codewords, iterations / codewords


def main(argv):
    del argv
    product_code = product.ProductCode(codes.polar_code_5g(_LENGTH.value, _NUM_INFO.value))
    specs = [product.TurboSpec("soft")] + [product.TurboSpec("hard", beta=float(b)) for b in _BETAS.value]
    print(f"Product code ({product_code.n},{product_code.k})², rate {product_code.rate:.3f}, "
          f"{_CODEWORDS.value} codewords per point\n")
    print("| decoder | β | Eb/N0 [dB] | BLER (errors/codewords) | mean iterations | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for spec in specs:
        for ebno_db in (float(e) for e in _EBNO_DB.value):
            started = time.monotonic()
            errors, codewords, mean_iterations = _measure(product_code, spec, ebno_db)
            beta = f"{spec.beta:g}" if spec.component_output == "hard" else "–"
            print(f"| {spec.name} | {beta} | {ebno_db:g} | {errors / codewords:.3e} ({errors}/{codewords}) "
                  f"| {mean_iterations:.2f} | {time.monotonic() - started:.0f} |", flush=True)


if __name__ == "__main__":
    app.run(main)
