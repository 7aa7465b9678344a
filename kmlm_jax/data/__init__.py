"""The training input: token cache (offline), masking, packing and mixtures (online)."""
