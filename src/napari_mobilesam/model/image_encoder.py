"""TinyViT-5M, MobileSAM's image encoder: a 1024x1024 image to a 256x64x64 embedding.

The architecture is TinyViT (Wu et al., 2022) as distilled from SAM's ViT-H by MobileSAM
(Zhang et al., 2023): a convolutional stem and stage, three stages of windowed attention with
learned relative position biases and a depth-wise "local" convolution after each attention,
and SAM's neck. Module and parameter names follow the official checkpoint, so its state dict
loads with ``strict=True``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import nn

from napari_mobilesam.model.common import LayerNorm2d


class Conv2dBN(nn.Sequential):
    """A bias-free convolution followed by batch normalisation (``c``, ``bn``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.add_module(
            "c",
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False
            ),
        )
        bn = nn.BatchNorm2d(out_channels)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.constant_(bn.bias, 0.0)
        self.add_module("bn", bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        # In evaluation the normalisation is affine: fold it into the convolution.
        conv, bn = self.c, self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight = conv.weight * scale.view(-1, 1, 1, 1)
        bias = bn.bias - bn.running_mean * scale
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convolutions: (B, 3, 1024, 1024) -> (B, C, 256, 256)."""

    def __init__(self, in_chans: int, embed_dim: int, resolution: int) -> None:
        super().__init__()
        self.patches_resolution = (resolution // 4, resolution // 4)
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, 3x3 depth-wise, 1x1 project, residual."""

    def __init__(
        self, in_chans: int, out_chans: int, expand_ratio: float, drop_path: float
    ) -> None:
        super().__init__()
        hidden = int(in_chans * expand_ratio)
        self.conv1 = Conv2dBN(in_chans, hidden, kernel_size=1)
        self.act1 = nn.GELU()
        self.conv2 = Conv2dBN(hidden, hidden, kernel_size=3, stride=1, padding=1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2dBN(hidden, out_chans, kernel_size=1, bn_weight_init=0.0)
        self.act3 = nn.GELU()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        shortcut = x
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        x = self.drop_path(self.conv3(x))
        return self.act3(x + shortcut)


class PatchMerging(nn.Module):
    """Downsampling between stages: (B, C, H, W) or (B, H*W, C) -> (B, H'*W', C_out).

    MobileSAM keeps the last stage at 64x64: the merge into 320 channels uses stride 1.
    """

    def __init__(self, input_resolution: tuple[int, int], dim: int, out_dim: int) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        stride = 1 if out_dim in (320, 448, 576) else 2
        self.conv1 = Conv2dBN(dim, out_dim, 1, 1, 0)
        self.act = nn.GELU()
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            height, width = self.input_resolution
            x = x.view(x.shape[0], height, width, -1).permute(0, 3, 1, 2)
        x = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        return x.flatten(2).transpose(1, 2)


class Stage(nn.Module):
    """A sequence of ``blocks``, then an optional patch merge (``downsample``)."""

    blocks: nn.ModuleList
    downsample: PatchMerging | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class ConvLayer(Stage):
    """The convolutional first stage: MBConv blocks, then a patch merge."""

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        drop_path: Sequence[float],
        out_dim: int,
        conv_expand_ratio: float,
        downsample: bool,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            MBConv(dim, dim, conv_expand_ratio, drop_path[i]) for i in range(depth)
        )
        self.downsample = (
            PatchMerging(input_resolution, dim=dim, out_dim=out_dim) if downsample else None
        )


class FeedForward(nn.Module):
    """Pre-norm feed-forward of a TinyViT block (``norm``, ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class WindowAttention(nn.Module):
    """Pre-norm multi-head attention inside a window, with a learned bias per head for each
    relative offset (|dy|, |dx|) between two window positions.

    Input and output: (B * windows, window_size**2, dim).
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim**-0.5
        self.key_dim = key_dim
        self.value_dim = key_dim  # TinyViT uses attn_ratio = 1
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, num_heads * (2 * key_dim + self.value_dim))
        self.proj = nn.Linear(num_heads * self.value_dim, dim)

        points = list(itertools.product(range(window_size), range(window_size)))
        offsets: dict[tuple[int, int], int] = {}
        idxs = []
        for p1 in points:
            for p2 in points:
                offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                idxs.append(offsets.setdefault(offset, len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.register_buffer(
            "attention_bias_idxs",
            torch.tensor(idxs, dtype=torch.long).view(len(points), len(points)),
            persistent=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(batch, n, self.num_heads, -1)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.value_dim], dim=3)
        q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)
        attn = (q @ k.transpose(-2, -1)).mul_(self.scale).add_(bias)
        x = torch.softmax(attn, dim=-1) @ v
        x = x.transpose(1, 2).reshape(batch, n, self.num_heads * self.value_dim)
        return self.proj(x)


class TinyViTBlock(nn.Module):
    """Windowed attention, a depth-wise 3x3 convolution, and a feed-forward, with residuals.

    Input and output: (B, H*W, dim) at ``input_resolution`` (H, W).
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop_path: float,
        local_conv_size: int = 3,
    ) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.window_size = window_size
        self.attn = WindowAttention(dim, dim // num_heads, num_heads, window_size)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.input_resolution
        ws = self.window_size
        batch, length, channels = x.shape
        if height == ws and width == ws:
            return self.attn(x)
        x = x.view(batch, height, width, channels)
        pad_b = (ws - height % ws) % ws
        pad_r = (ws - width % ws) % ws
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = height + pad_b, width + pad_r
        nh, nw = ph // ws, pw // ws
        x = x.view(batch, nh, ws, nw, ws, channels).transpose(2, 3)
        x = self.attn(x.reshape(batch * nh * nw, ws * ws, channels))
        x = (
            x.view(batch, nh, nw, ws, ws, channels)
            .transpose(2, 3)
            .reshape(batch, ph, pw, channels)
        )
        if pad_b or pad_r:
            x = x[:, :height, :width]
        return x.reshape(batch, length, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.input_resolution
        batch, length, channels = x.shape
        x = x + self.drop_path(self._windowed_attention(x))
        x = x.transpose(1, 2).reshape(batch, channels, height, width)
        x = self.local_conv(x)
        x = x.view(batch, channels, length).transpose(1, 2)
        return x + self.drop_path(self.mlp(x))


class BasicLayer(Stage):
    """An attention stage: TinyViT blocks, then an optional patch merge."""

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop_path: Sequence[float],
        out_dim: int,
        downsample: bool,
        local_conv_size: int = 3,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(
                dim,
                input_resolution,
                num_heads,
                window_size,
                mlp_ratio,
                drop_path[i],
                local_conv_size,
            )
            for i in range(depth)
        )
        self.downsample = (
            PatchMerging(input_resolution, dim=dim, out_dim=out_dim) if downsample else None
        )


class TinyViT(nn.Module):
    """MobileSAM's image encoder.

    Parameters
    ----------
    img_size : int
        Side of the square, padded input (1024).
    embed_dims, depths, num_heads, window_sizes
        Per-stage widths, block counts, attention heads and window sides (TinyViT-5M).
    out_chans : int
        Channels of the output embedding (256, SAM's prompt space).

    The classification head (``norm_head``, ``head``) is unused but kept so the official
    checkpoint loads strictly.
    """

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0], img_size)
        res = self.patch_embed.patches_resolution[0]
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()

        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            # Stage i runs at res / 2**i, except the last, which keeps the third's resolution.
            side = res // 2 ** (i - 1 if i == 3 else i)
            common = dict(
                dim=embed_dims[i],
                input_resolution=(side, side),
                depth=depth,
                drop_path=dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                out_dim=embed_dims[min(i + 1, len(embed_dims) - 1)],
                downsample=i < len(depths) - 1,
            )
            if i == 0:
                self.layers.append(ConvLayer(conv_expand_ratio=mbconv_expand_ratio, **common))
            else:
                self.layers.append(
                    BasicLayer(
                        num_heads=num_heads[i],
                        window_size=window_sizes[i],
                        mlp_ratio=mlp_ratio,
                        local_conv_size=local_conv_size,
                        **common,
                    )
                )
        self.embedding_side = res // 4
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 1024, 1024) normalised image -> (B, 256, 64, 64) embedding."""
        # oneDNN's convolutions are faster on channels-last tensors.
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        for layer in self.layers:
            x = layer(x)
        side = self.embedding_side
        x = x.view(x.shape[0], side, side, x.shape[-1]).permute(0, 3, 1, 2)
        return self.neck(x)
