"""The video methods and the "clips" dataset kind: declared by name, imported on first use."""

from engine.registry import declare_datasets, declare_methods

declare_datasets({"clips": "video.data"})
declare_methods(
    {
        "colorization_video": "video.methods.colorization",
        "cpc": "video.methods.cpc",
        "dense_object_nets": "video.methods.dense_object_nets",
        "maskfeat_video": "video.methods.maskfeat_video",
    }
)
