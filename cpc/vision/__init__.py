"""The vision domain: CPC on image patches (paper section 3.2)."""
