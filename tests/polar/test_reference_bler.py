"""BLER agreement with Sionna's decoders on the 5G (1024, 512) code."""

from jaxlab.polar import reference


def test_bler_agrees_with_sionna_reference():
    points = reference.load_reference_points()
    assert len(points) >= 10
    rows = reference.compare_with_reference(points, batch_size=1000, seed=0)
    disagreements = [row for row in rows if not row["agree"]]
    assert not disagreements, f"BLER outside the 99% intervals of the reference: {disagreements}"
