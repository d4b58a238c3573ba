"""CLIP and the "captions" dataset kind: declared by name, imported on first use."""

from engine.registry import declare_datasets, declare_methods

declare_datasets({"captions": "multimodal.data"})
declare_methods({"clip": "multimodal.clip_method"})
