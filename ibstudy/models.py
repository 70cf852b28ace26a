"""Block-structured networks (docs/method.md §6): ordered blocks plus a final classifier.

Every model is a :class:`BlockNet`. Its blocks' outputs are the representations Z_l that the
information plane and the linear probes read; the same object serves E2E and layer-wise training
(the trainer, not the model, decides where gradients stop). ``forward`` has no side effects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ibstudy.checks import check_choice, check_int, check_positive
from ibstudy.pooling import MaxPool2x2

MODELS: tuple[str, ...] = ("lenet5", "resnet18", "resnet34", "resnet50", "vgg8b", "vgg11b")
#: the nonlinearity after each conv/linear layer (LeNet5 and the VGG family; ResNets: relu only)
ACTIVATIONS: tuple[str, ...] = ("relu", "tanh")
#: the activations each model accepts (ResNets keep their ReLUs inside the residual blocks)
MODEL_ACTIVATIONS: dict[str, tuple[str, ...]] = {
    name: ("relu",) if name.startswith("resnet") else ACTIVATIONS for name in MODELS
}


class BlockNet(nn.Module):
    """Ordered blocks followed by a classifier; ``forward`` can also return every block's output."""

    def __init__(
        self, blocks: Sequence[nn.Module], block_names: Sequence[str], classifier: nn.Module
    ) -> None:
        super().__init__()
        if len(blocks) != len(block_names):
            raise ValueError(
                f"block_names has {len(block_names)} entries but blocks has {len(blocks)}"
            )
        if len(set(block_names)) != len(block_names):
            raise ValueError(f"block_names must be unique, got {list(block_names)}")
        self.blocks = nn.ModuleList(blocks)
        self.classifier = classifier
        self.block_names: list[str] = list(block_names)

    def forward(
        self, x: Tensor, return_blocks: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Logits, or ``(logits, [Z_1, ..., Z_L])`` when ``return_blocks`` is true."""
        outputs: list[Tensor] = []
        h = x
        for block in self.blocks:
            h = block(h)
            outputs.append(h)
        logits = self.classifier(h)
        return (logits, outputs) if return_blocks else logits

    @torch.no_grad()
    def block_output_shapes(self, in_channels: int, image_size: int) -> list[tuple[int, ...]]:
        """Per-sample shape of every block's output, from an eval-mode dry run on one zero image."""
        check_int("in_channels", in_channels, minimum=1)
        check_int("image_size", image_size, minimum=1)
        ref = next(self.parameters())
        x = torch.zeros(1, in_channels, image_size, image_size, device=ref.device, dtype=ref.dtype)
        was_training = self.training
        self.eval()
        try:
            _, outputs = self(x, return_blocks=True)
        finally:
            self.train(was_training)
        return [tuple(z.shape[1:]) for z in outputs]


# --------------------------------------------------------------------------------------------
# helpers


def _scaled(n: int, width: float) -> int:
    """Channel/unit count ``n`` scaled by ``width``, rounded, at least 1."""
    return max(1, int(round(n * width)))


def _act(activation: str, inplace: bool = False) -> nn.Module:
    """The nonlinearity ``activation`` as a module (``inplace`` applies to ReLU only)."""
    return nn.ReLU(inplace=inplace) if activation == "relu" else nn.Tanh()


def _conv_bn_act(cin: int, cout: int, activation: str = "relu") -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        _act(activation, inplace=True),
    ]


# --------------------------------------------------------------------------------------------
# LeNet5


def _lenet5(
    num_classes: int, in_channels: int, image_size: int, width: float, activation: str = "relu"
) -> BlockNet:
    """LeNet5 with 4 blocks; conv1 gets padding 2 on 28-px inputs so the flatten size is 16*5*5."""
    c1, c2 = _scaled(6, width), _scaled(16, width)
    f1, f2 = _scaled(120, width), _scaled(84, width)
    pad = 2 if image_size == 28 else 0
    side = ((image_size + 2 * pad - 4) // 2 - 4) // 2  # conv5 -> pool2 -> conv5 -> pool2
    if image_size + 2 * pad - 4 < 2 or side < 1:
        raise ValueError(f"image_size={image_size} is too small for lenet5 (need at least 16)")
    blocks = [
        nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=5, padding=pad),
            _act(activation),
            MaxPool2x2(),
        ),
        nn.Sequential(nn.Conv2d(c1, c2, kernel_size=5), _act(activation), MaxPool2x2()),
        nn.Sequential(nn.Flatten(), nn.Linear(c2 * side * side, f1), _act(activation)),
        nn.Sequential(nn.Linear(f1, f2), _act(activation)),
    ]
    return BlockNet(blocks, ["conv1", "conv2", "fc1", "fc2"], nn.Linear(f2, num_classes))


# --------------------------------------------------------------------------------------------
# ResNet (CIFAR variant: 3x3 stride-1 stem, no max-pool)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut; expansion 1."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: Tensor) -> Tensor:
        """ReLU(F(x) + shortcut(x))."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4), each with BN, plus shortcut; expansion 4."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: Tensor) -> Tensor:
        """ReLU(F(x) + shortcut(x))."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


_RESNET_SPECS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, ...]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def _resnet(name: str, num_classes: int, in_channels: int, width: float) -> BlockNet:
    """CIFAR ResNet: block 0 = stem conv+BN+ReLU, then one block per residual block."""
    block_cls, counts = _RESNET_SPECS[name]
    planes = [_scaled(p, width) for p in (64, 128, 256, 512)]
    stem_c = planes[0]
    blocks: list[nn.Module] = [nn.Sequential(*_conv_bn_act(in_channels, stem_c))]
    names = ["stem"]
    cin = stem_c
    for stage, (p, n) in enumerate(zip(planes, counts, strict=True)):
        for i in range(n):
            stride = 2 if (stage > 0 and i == 0) else 1
            blocks.append(block_cls(cin, p, stride))
            names.append(f"layer{stage + 1}.{i}")
            cin = p * block_cls.expansion
    classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))
    return BlockNet(blocks, names, classifier)


# --------------------------------------------------------------------------------------------
# VGG (Noekland & Eidnes 2019 "b" variants)

# integers: 3x3 conv widths; "M": 2x2 max-pool folded into the preceding conv's block.
_VGG_SPECS: dict[str, tuple[tuple[int | str, ...], tuple[int, ...]]] = {
    "vgg8b": ((128, 256, "M", 256, 512, "M", 512, "M", 512, "M"), (1024,)),
    "vgg11b": (
        (128, 128, 128, 256, "M", 256, 512, "M", 512, 512, "M", 512, "M"),
        (1024, 1024),
    ),
}


def _vgg(
    name: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    width: float,
    activation: str = "relu",
) -> BlockNet:
    """VGG-b: one block per conv+BN+activation (a following pool joins it), then Linear+activation.

    Pools use ``ceil_mode=True`` so 28-px and 32-px inputs both end at 2x2 after the four pools.
    """
    convs, fcs = _VGG_SPECS[name]
    groups: list[list[nn.Module]] = []
    cin, side = in_channels, image_size
    for item in convs:
        if item == "M":
            groups[-1].append(nn.MaxPool2d(2, ceil_mode=True))
            side = math.ceil(side / 2)
        else:
            cout = _scaled(int(item), width)
            groups.append(_conv_bn_act(cin, cout, activation))
            cin = cout
    blocks: list[nn.Module] = [nn.Sequential(*g) for g in groups]
    names = [f"conv{i + 1}" for i in range(len(groups))]
    fin = cin * side * side
    for j, units in enumerate(fcs):
        u = _scaled(units, width)
        layers: list[nn.Module] = [nn.Flatten()] if j == 0 else []
        blocks.append(nn.Sequential(*layers, nn.Linear(fin, u), _act(activation, inplace=True)))
        names.append(f"fc{j + 1}")
        fin = u
    return BlockNet(blocks, names, nn.Linear(fin, num_classes))


# --------------------------------------------------------------------------------------------


def build_model(
    name: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    width: float = 1.0,
    activation: str = "relu",
) -> BlockNet:
    """Build one of :data:`MODELS` for ``image_size`` x ``image_size`` inputs; ``width`` scales channels.

    ``activation`` (:data:`ACTIVATIONS`; ResNets: ``"relu"`` only) follows every conv/linear layer.
    """
    if name not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {name!r}")
    check_activation(name, activation)
    check_int("num_classes", num_classes, minimum=1)
    check_int("in_channels", in_channels, minimum=1)
    check_int("image_size", image_size, minimum=1)
    check_positive("width", width)
    if name == "lenet5":
        return _lenet5(num_classes, in_channels, image_size, float(width), activation)
    if name in _RESNET_SPECS:
        return _resnet(name, num_classes, in_channels, float(width))
    return _vgg(name, num_classes, in_channels, image_size, float(width), activation)


def check_activation(model: str, activation: str) -> str:
    """``activation`` if ``model`` accepts it, else ValueError naming it and the allowed values."""
    check_choice("activation", activation, ACTIVATIONS)
    allowed = MODEL_ACTIVATIONS.get(model, ACTIVATIONS)
    if activation not in allowed:
        raise ValueError(
            f"activation must be one of {list(allowed)} for model {model!r} (its residual blocks "
            f"are ReLU networks), got {activation!r}"
        )
    return activation
