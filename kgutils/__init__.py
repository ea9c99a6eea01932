"""kgutils: the helper package behind the kg-triplets notebooks."""

__version__ = "0.1.0"
