"""torchvision ResNets as SSL backbones, with the CIFAR-style stem for small images and an
optional narrower trunk (`width`) for short CPU budgets on small images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

SMALL_IMAGE_MAX = 96  # at or below this size, use a 3x3 stride-1 stem and no max-pool


class ResNetBackbone(nn.Module):
    """ResNet trunk without the classifier: global pooled features and a dense feature map."""

    def __init__(
        self,
        depth: int = 18,
        image_size: int = 224,
        small_stem: bool | None = None,
        output_stride: int | None = None,
        width: int = 64,
    ):
        super().__init__()
        net = (
            getattr(torchvision.models, f"resnet{depth}")(weights=None)
            if width == 64
            else _narrow_resnet(depth, width)
        )
        small = image_size <= SMALL_IMAGE_MAX if small_stem is None else small_stem
        if small:
            net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.embed_dim = net.fc.in_features
        self.stride = 8 if small else 32
        self.arch = {"name": f"resnet{depth}", "image_size": image_size, "small_stem": small}
        if width != 64:
            self.arch["name"] = f"resnet{depth}_w{width}"
        if output_stride and output_stride != self.stride:
            self.set_output_stride(output_stride)

    def set_output_stride(self, stride: int) -> None:
        """Dense features at `stride` (8 or 16) by turning the striding convs of layer4 (and
        layer3 for 8) to stride 1, as CRW and colorization-as-tracking do. Weights are
        unchanged, so a checkpoint loads either way; the choice is part of `arch`."""
        from engine.errors import UserError

        current, layers = self.stride, [self.layer4, self.layer3]
        while current > stride and layers:
            block = layers.pop(0)[0]
            for conv in (block.conv1, block.conv2):
                if conv.stride != (1, 1):
                    conv.stride = (1, 1)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
            current //= 2
        if current != stride:
            raise UserError(
                f"cannot make this ResNet output at stride {stride} (reaches {current})"
            )
        self.stride = stride
        self.arch["output_stride"] = stride

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the stem and the four stages (for activation-based attention maps)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = [x]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outs.append(x)
        return outs

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.forward_dense(x), 1), 1)

    def load_torchvision_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Accept a torchvision ResNet state dict (fc.* is ignored)."""
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        self.load_state_dict(state, strict=True)


def _narrow_resnet(depth: int, width: int) -> torchvision.models.ResNet:
    """torchvision's ResNet layout (same module names, so the same key layout) with stage
    widths width x (1, 2, 4, 8) instead of 64 x (1, 2, 4, 8): a quarter of the FLOPs at
    width 32, for budgets where epochs matter more than capacity."""
    block, layers = {18: (BasicBlock, [2, 2, 2, 2]), 50: (Bottleneck, [3, 4, 6, 3])}[depth]
    net = torchvision.models.ResNet(block, layers)
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.inplanes = width
    net.layer1 = net._make_layer(block, width, layers[0])
    net.layer2 = net._make_layer(block, 2 * width, layers[1], stride=2)
    net.layer3 = net._make_layer(block, 4 * width, layers[2], stride=2)
    net.layer4 = net._make_layer(block, 8 * width, layers[3], stride=2)
    net.fc = nn.Linear(8 * width * block.expansion, 1000)
    for m in net.modules():  # torchvision's init, applied to the rebuilt layers
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net
