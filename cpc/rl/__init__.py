"""Reinforcement learning: A2C with a CPC auxiliary loss (paper section 3.4)."""
