"""Building blocks: conv-norm-activation, the ResNet-D residual block, the Mamba layer.

Norm and activation are arguments, as factories: norm(spatial_dims, channels) -> nn.Module and
act() -> nn.Module (defaults `instance_norm`, `leaky_relu`); `spatial_dims` picks the 2D or 3D op."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ..ssm import Mamba

CONV = {2: nn.Conv2d, 3: nn.Conv3d}
CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
AVG_POOL = {2: nn.AvgPool2d, 3: nn.AvgPool3d}


def instance_norm(spatial_dims, channels):
    """The default norm factory: InstanceNorm (eps 1e-5, affine), as nnU-Net and U-Mamba."""
    return NORM[spatial_dims](channels, eps=1e-5, affine=True)


class InstanceNormInLayout(nn.Module):
    """nn.InstanceNorm{2,3}d(channels, eps, affine=True) computed as a reduction over the spatial dimensions of
    (B, C, *spatial), so the output keeps the input's memory layout (nn.InstanceNorm's reshape to (1, B * C,
    *spatial) copies a channels-last tensor and returns NCHW / NCDHW). Same parameters and state_dict; statistics
    in fp32; output in the input's dtype."""

    def __init__(self, spatial_dims, channels, eps=1e-5):
        super().__init__()
        self.spatial_dims, self.num_features, self.eps = spatial_dims, channels, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"InstanceNormInLayout: expected (B, {self.num_features}, "
                f"{self.spatial_dims} spatial dims), got shape {tuple(x.shape)}"
            )
        x32 = x.float()
        var, mean = torch.var_mean(x32, dim=tuple(range(2, x.dim())), correction=0, keepdim=True)
        shape = (1, -1) + (1,) * self.spatial_dims
        out = (x32 - mean) * torch.rsqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, spatial_dims={self.spatial_dims}"


def instance_norm_in_layout(spatial_dims, channels):
    """A norm factory: InstanceNormInLayout (eps 1e-5, affine), for channels-last networks."""
    return InstanceNormInLayout(spatial_dims, channels, eps=1e-5)


def leaky_relu():
    """The default activation factory: LeakyReLU(0.01, inplace)."""
    return nn.LeakyReLU(0.01, inplace=True)


class ConvNormAct(nn.Module):
    """conv (bias on) -> norm -> activation (None: none); (B, in, *spatial) -> (B, out, *spatial / stride)."""

    def __init__(
        self,
        spatial_dims,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        conv_bias=True,
        norm=instance_norm,
        act=leaky_relu,
    ):
        super().__init__()
        kernel_size, stride = _tuple(kernel_size, spatial_dims), _tuple(stride, spatial_dims)
        padding = [k // 2 for k in kernel_size]
        self.conv = CONV[spatial_dims](in_channels, out_channels, kernel_size, stride, padding=padding, bias=conv_bias)
        self.norm = norm(spatial_dims, out_channels)
        self.act = act() if act is not None else nn.Identity()

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


class ResidualBlock(nn.Module):
    """ResNet-D basic block (nnU-Net's BasicBlockD): act(conv-norm-act-conv-norm + skip), the skip an avgpool
    when strided and a 1x1 conv + norm when the channel count changes."""

    def __init__(
        self, spatial_dims, in_channels, out_channels, kernel_size, stride=1, norm=instance_norm, act=leaky_relu
    ):
        super().__init__()
        stride = _tuple(stride, spatial_dims)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.conv1 = ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size, stride, norm=norm, act=act)
        self.conv2 = ConvNormAct(spatial_dims, out_channels, out_channels, kernel_size, 1, norm=norm, act=None)
        skip = []
        if any(s != 1 for s in stride):
            skip.append(AVG_POOL[spatial_dims](stride, stride))
        if in_channels != out_channels:
            skip.append(ConvNormAct(spatial_dims, in_channels, out_channels, 1, 1, False, norm=norm, act=None))
        self.skip = nn.Sequential(*skip) if skip else nn.Identity()
        self.act = act()

    def forward(self, x):
        return self.act(self.conv2(self.conv1(x)) + self.skip(x))

    def extra_repr(self):
        return f"{self.in_channels} -> {self.out_channels}, stride={tuple(self.stride)}"


def stacked_blocks(
    block, n, spatial_dims, in_channels, out_channels, kernel_size, stride, norm=instance_norm, act=leaky_relu
):
    """`n` blocks ("residual": ResidualBlock, "plain": ConvNormAct); only the first has the stride."""
    make = ResidualBlock if block == "residual" else ConvNormAct
    layers = dict(norm=norm, act=act)
    blocks = [make(spatial_dims, in_channels, out_channels, kernel_size, stride, **layers)]
    blocks += [make(spatial_dims, out_channels, out_channels, kernel_size, 1, **layers) for _ in range(n - 1)]
    return nn.Sequential(*blocks)


class MambaLayer(nn.Module):
    """LayerNorm + Mamba over the flattened voxels of a feature map, no residual (as the authors trained).
    (B, C, *spatial) -> tokens (B, N, C) with N = prod(spatial) in C order (x fastest, then y, then z) ->
    LayerNorm(C) -> Mamba -> back to (B, C, *spatial). A contiguous (NCHW / NCDHW) input takes the channels-first
    path: the same numbers on the (B, C, N) view (Mamba.forward_channels_first), no transpose copied; a channels-last
    input takes the token path, for which (B, N, C) is the free view. fp32=True: autocast off and the input cast to
    fp32 (output stays fp32, as in U-Mamba); else the active autocast dtype. checkpoint: activation checkpointing."""

    def __init__(self, dim, d_state=16, d_conv=4, expand=2, fp32=True, checkpoint=False, backend="auto"):
        super().__init__()
        self.dim, self.fp32, self.use_checkpoint = dim, fp32, checkpoint
        self.norm = nn.LayerNorm(dim)
        self.mamba = Mamba(d_model=dim, d_state=d_state, d_conv=d_conv, expand=expand, backend=backend)

    def _mix(self, x):
        b, c = x.shape[:2]
        if x.is_contiguous():
            channels_first = x.reshape(b, c, -1)  # (B, C, N), a view
            x32 = channels_first.to(torch.promote_types(x.dtype, torch.float32))  # fp32 statistics, as F.layer_norm
            mean = x32.mean(dim=1, keepdim=True)
            var = (x32 - mean).square().mean(dim=1, keepdim=True)
            normed = (x32 - mean) * torch.rsqrt(var + self.norm.eps)
            normed = normed * self.norm.weight[:, None] + self.norm.bias[:, None]
            return self.mamba.forward_channels_first(normed).reshape(x.shape)
        tokens = x.reshape(b, c, -1).transpose(1, 2)  # (B, N, C)
        out = self.mamba(self.norm(tokens))
        return out.transpose(1, 2).reshape(x.shape)

    def _forward(self, x):
        if self.fp32:
            with torch.autocast(device_type=x.device.type, enabled=False):
                return self._mix(x.float())
        return self._mix(x)

    def forward(self, x):
        if x.shape[1] != self.dim:
            raise ValueError(f"MambaLayer: input has {x.shape[1]} channels, layer was built for {self.dim}")
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def extra_repr(self):
        return f"dim={self.dim}, fp32={self.fp32}, checkpoint={self.use_checkpoint}, tokens=C-order (x fastest)"


def _tuple(v, dims):
    return tuple(v) if isinstance(v, (list, tuple)) else (v,) * dims
