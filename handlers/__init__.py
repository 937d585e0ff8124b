"""Reference handlers that users copy: each module exposes a ``router``."""
