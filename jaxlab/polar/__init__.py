"""Polar codes: construction, encoding, channels and successive-cancellation decoders."""
