"""BLER and BER of polar decoders over BPSK-AWGN: the 5G (1024, 512) code with SC, SCL-8 and CA-SCL-8.

Run:
  python -m launch.main --config=configs/polar/awgn_bler.py --workdir=runs/polar_awgn_bler
  python -m launch.main --config=configs/polar/awgn_bler.py:quick --workdir=runs/polar_quick

The default variant aims at 200 block errors per point (up to 2e6 codewords); on 2 CPU cores it takes
hours, on one accelerator minutes. `quick` stops at 50 block errors or 10,000 codewords per point and takes
about a minute on 2 CPU cores. Expected BLER of SCL-8 (no CRC) at 2.0 dB: about 6e-3.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.experiment = "polar_awgn_bler"
    config.seed = 0

    # The code: "5g" (3GPP TS 38.212 reliability sequence), "ga" or "bhattacharyya" (both designed at
    # design_ebno_db). num_info counts the CRC bits of the CA-SCL decoders.
    config.code = ml_collections.ConfigDict()
    config.code.construction = "5g"
    config.code.length = 1024
    config.code.num_info = 512
    config.code.design_ebno_db = 2.0
    config.code.crc = "CRC11"  # CRC of the "CA-SCL-<L>" decoders only ("none" for none); the others use no CRC.

    # Decoders: "SC", "SCL-<L>" (most likely path) and "CA-SCL-<L>" (most likely path passing the CRC);
    # "Fast-SSCL-<L>" and "CA-Fast-SSCL-<L>" are the node-based list decoders.
    config.decoders = ("SC", "SCL-8", "CA-SCL-8")
    config.f_function = "boxplus"  # "boxplus" (exact) or "minsum".

    # Monte Carlo: Eb/N0 grid in dB (payload bits, CRC excluded); each point runs until it has
    # target_block_errors block errors or max_codewords codewords, in batches of batch_size (so the count
    # of codewords is rounded up to whole batches).
    config.ebno_db = (1.0, 1.5, 2.0, 2.5, 3.0)
    config.batch_size = 512
    config.target_block_errors = 200
    config.max_codewords = 2_000_000
    config.checkpoint_every_s = 60.0  # Wall-clock seconds between checkpoints within a point.

    if variant == "quick":
        config.target_block_errors = 50
        config.max_codewords = 10_000
        config.batch_size = 256
        config.checkpoint_every_s = 20.0
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of configs/polar/awgn_bler.py; expected '' or 'quick'")
    return config
