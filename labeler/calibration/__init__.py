"""Rounds 1..R: the verifier flags likely mislabels, asked again with retrieved examples; operator review."""
