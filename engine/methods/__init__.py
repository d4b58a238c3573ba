"""The engine's image methods: declared here by name, imported when first asked for
(engine.registry.get_method), so listing them or starting the CLI does not import torch."""

from engine.registry import declare_datasets, declare_methods

declare_datasets({"images": "engine.data"})
declare_methods(
    {
        name: f"engine.methods.{module}"
        for name, module in {
            "barlow_twins": "barlow",
            "beit": "beit",
            "byol": "byol",
            "colorization": "colorization",
            "cpc_v2": "cpc_v2",
            "deepcluster": "deepcluster",
            "dino": "dino",
            "dvae": "dvae",
            "ibot": "ibot",
            "igpt": "igpt",
            "inpainting": "inpainting",
            "instdisc": "instdisc",
            "jigsaw": "jigsaw",
            "mae": "mae",
            "maskfeat": "maskfeat",
            "moca": "moca",
            "moco_v2": "moco",
            "moco_v3": "moco",
            "obow": "obow",
            "pixelcnn": "pixelcnn",
            "relpatch": "relpatch",
            "rotation": "rotation",
            "simclr": "simclr",
            "slot_attention": "slots",
            "splitbrain": "splitbrain",
            "spot": "slots",
            "supcon": "supcon",
        }.items()
    }
)
