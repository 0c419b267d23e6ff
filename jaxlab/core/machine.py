"""A one-line description of the machine, for the records that benchmark scripts write into docs/."""

import os
import platform

import jax


def describe_machine() -> str:
    """Describe the CPU model, core count, JAX backend and versions, e.g. for a 'Machine:' line."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass  # Not Linux: keep the name from the platform module.
    devices = jax.devices()
    return (f"{cpu}, {os.cpu_count()} cores, JAX {jax.__version__} on {len(devices)} "
            f"{devices[0].platform} device(s), Python {platform.python_version()}")
