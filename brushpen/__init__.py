"""brushpen: a generative content studio (images, copy, a deepfake checker) that runs on one machine."""

__version__ = "0.1.0"
