"""Importing this package registers every engine method."""

from engine.methods import (
    barlow,  # noqa: F401
    byol,  # noqa: F401
    colorization,  # noqa: F401
    deepcluster,  # noqa: F401
    dino,  # noqa: F401
    ibot,  # noqa: F401
    inpainting,  # noqa: F401
    jigsaw,  # noqa: F401
    mae,  # noqa: F401
    maskfeat,  # noqa: F401
    moco,  # noqa: F401
    relpatch,  # noqa: F401
    rotation,  # noqa: F401
    simclr,  # noqa: F401
    splitbrain,  # noqa: F401
    supcon,  # noqa: F401
)
