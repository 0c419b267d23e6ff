"""Online virtual network embedding (VNE): substrates, request streams, a jitted simulator and baselines."""
