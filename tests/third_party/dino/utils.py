"""Stand-in for DINO's utils.py, which vision_transformer.py imports only for trunc_normal_
(a copy of PyTorch's); the rest of DINO's utils (training helpers, checkpoint loading with a
plain torch.load) is not vendored. The tests re-randomise every weight, so init does not matter."""

from torch.nn.init import trunc_normal_  # noqa: F401
