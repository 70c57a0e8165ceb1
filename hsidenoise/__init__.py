"""hsidenoise: denoise hyperspectral cubes with DECSC (deep-equilibrium convolutional sparse coding)."""

__version__ = "0.1.0"
