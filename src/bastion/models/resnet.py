"""Residual networks of the adversarial-training literature, behind the ImageClassifier surface.

- PreAct ResNet-18: He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks" (ECCV 2016,
  arXiv:1603.05027), CIFAR stem (one 3x3 conv, no max-pool), stages of 64/128/256/512 channels.
- WideResNet-d-k: Zagoruyko & Komodakis, "Wide Residual Networks" (BMVC 2016, arXiv:1605.07146),
  depth d = 6n + 4, widths 16, 16k, 32k, 64k. WRN-34-10 (``wrn`` with depth 34, width 10; 46.2M
  parameters) is the TRADES / Madry CIFAR-10 model, WRN-28-10 (the default; 36.5M) that of most
  RobustBench entries.

Both use pre-activation blocks (BN-ReLU-conv twice, identity shortcut; a 1x1 projection of the
pre-activated input when the shape changes) and global average pooling, so any input size of at least
8x8 works. ``features`` is the pooled vector before the linear head.
"""

from __future__ import annotations

from torch import Tensor, nn

from bastion.models.base import ImageClassifier, stat_shape


class PreActBlock(nn.Module):
    """x -> conv(relu(bn(conv(relu(bn(x)))))) + shortcut; the shortcut sees the pre-activated input."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if stride != 1 or c_in != c_out else None
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.relu(self.bn2(out))))
        return out + skip


def _stage(c_in: int, c_out: int, n_blocks: int, stride: int, dropout: float) -> nn.Sequential:
    blocks = [PreActBlock(c_in, c_out, stride, dropout)]
    blocks += [PreActBlock(c_out, c_out, 1, dropout) for _ in range(n_blocks - 1)]
    return nn.Sequential(*blocks)


def _residual_body(
    channels: int, stem_width: int, stages: tuple[tuple[int, int], ...], dropout: float
) -> nn.Sequential:
    """3x3 stem conv, then one stage per (width, blocks) (the first at stride 1, the others at 2), then
    BN-ReLU, global average pooling and flatten: (N, C, H, W) -> (N, last width)."""
    layers: list[nn.Module] = [nn.Conv2d(channels, stem_width, 3, padding=1, bias=False)]
    c_in = stem_width
    for i, (c_out, n_blocks) in enumerate(stages):
        layers.append(_stage(c_in, c_out, n_blocks, 1 if i == 0 else 2, dropout))
        c_in = c_out
    layers += [nn.BatchNorm2d(c_in), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


def _init_weights(module: nn.Module) -> None:
    """He initialisation for convolutions (both papers), unit BN scale, zero linear bias."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


def _check_input(input_shape: tuple[int, ...], name: str) -> None:
    if len(input_shape) != 3 or min(input_shape[1:]) < 8:
        raise ValueError(f"{name} needs images (C, H, W) of at least 8x8, got input_shape {input_shape}")


class PreActResNet(ImageClassifier):
    """Pre-activation ResNet with basic blocks; ``blocks=(2, 2, 2, 2)`` is PreAct ResNet-18."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        mean: Tensor,
        std: Tensor,
        blocks: tuple[int, int, int, int] = (2, 2, 2, 2),
        width: int = 64,
    ) -> None:
        _check_input(input_shape, "PreActResNet")
        super().__init__(mean.reshape(stat_shape(input_shape)), std.reshape(stat_shape(input_shape)))
        widths = (width, 2 * width, 4 * width, 8 * width)
        self.body = _residual_body(input_shape[0], width, tuple(zip(widths, blocks, strict=True)), 0.0)
        self.head = nn.Linear(widths[-1], num_classes)
        _init_weights(self)


class WideResNet(ImageClassifier):
    """WRN-depth-width: three stages of (depth - 4) / 6 pre-activation blocks, 16k / 32k / 64k channels."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        mean: Tensor,
        std: Tensor,
        depth: int = 28,
        width: int = 10,
        dropout: float = 0.0,
    ) -> None:
        _check_input(input_shape, "WideResNet")
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, ...), got {depth}")
        if width < 1:
            raise ValueError(f"WideResNet width must be >= 1, got {width}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        super().__init__(mean.reshape(stat_shape(input_shape)), std.reshape(stat_shape(input_shape)))
        n_blocks = (depth - 4) // 6
        widths = (16 * width, 32 * width, 64 * width)
        self.body = _residual_body(input_shape[0], 16, tuple((c, n_blocks) for c in widths), dropout)
        self.head = nn.Linear(widths[-1], num_classes)
        _init_weights(self)


def preact_resnet18(
    input_shape: tuple[int, ...], num_classes: int, mean: Tensor, std: Tensor, width: int = 64
) -> PreActResNet:
    """PreAct ResNet-18 (11.2M parameters at 10 classes); ``width`` scales every stage."""
    return PreActResNet(input_shape, num_classes, mean, std, blocks=(2, 2, 2, 2), width=width)
