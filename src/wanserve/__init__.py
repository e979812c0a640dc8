"""wanserve: a self-hosted job service for the Wan family of video models."""

__version__ = "0.1.0"
