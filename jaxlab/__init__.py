"""jaxlab: JAX-native implementations of recent ML and communications methods."""

__version__ = "0.1.0"
