"""The service's version: one line at the bottom of the layers, so any module may say it."""

__version__ = "0.1.0"
