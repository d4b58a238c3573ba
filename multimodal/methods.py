"""CLIP, the "captions" dataset kind and the open_clip model family: declared by name, imported
on first use."""

from engine.pretrained import declare_family
from engine.registry import declare_datasets, declare_methods

declare_datasets({"captions": "multimodal.data"})
declare_methods({"clip": "multimodal.clip_method"})
declare_family("open_clip", "multimodal.embedder")  # open_clip:MODEL/TAG image towers
