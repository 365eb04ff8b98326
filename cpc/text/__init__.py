"""The text domain: CPC sentence embeddings (paper section 3.3)."""
