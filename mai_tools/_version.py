__version__ = "0.1.0"
"""The installed mai-tools version."""
