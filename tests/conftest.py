"""Test-wide setup shared by every test package."""

import os

# Eight host (CPU) devices let sharding tests run on one machine. XLA reads this
# flag when the CPU backend starts, so it must be set before jax is imported.
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]
).strip()
