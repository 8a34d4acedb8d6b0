"""Relationship change notifier for Autodesk BIM 360 / ACC."""

__version__ = "0.1.0"
