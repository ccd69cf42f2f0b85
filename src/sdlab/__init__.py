"""sdlab: thirteen system-design building blocks, made real and measured on real servers."""

__version__ = "0.1.0"
