"""Plait: a service mesh for mixed fleets."""

__version__ = "0.1.0"
