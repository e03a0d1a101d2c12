"""Backbones: one interface, one registry, and the video ViT shared by several stages."""
