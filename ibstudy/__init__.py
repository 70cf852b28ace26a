"""ibstudy: E2E vs layer-wise training through the normalized-HSIC information plane."""

__version__ = "0.1.0"
