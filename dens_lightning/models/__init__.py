"""Backbones register themselves on import: one line here per backbone file."""

from . import equiformer, painn, schnet  # noqa: F401
from .base import BACKBONES, Backbone, BackboneConfig, Features, build_backbone, register_backbone

__all__ = ["BACKBONES", "Backbone", "BackboneConfig", "Features", "build_backbone", "register_backbone"]
