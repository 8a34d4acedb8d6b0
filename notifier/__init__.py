"""Relationship change notifier for Autodesk BIM 360 / ACC."""
