"""Code both the coordinator and the agents import: wire schemas, config models, formats, client."""

__version__ = "0.1.0"
