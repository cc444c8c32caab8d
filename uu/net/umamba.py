"""U-Mamba Enc / Bot and nnU-Net's plain U-Net, one class for 2D and 3D.

Encoder (residual archs): stem conv-norm-lrelu (stage-0 kernel, stride 1) -> per stage s:
n_blocks_encoder[s] ResNet-D blocks (stride in the first) -> optional MambaLayer. The output of each
stage is a skip. "unet" (nnU-Net PlainConvUNet): no stem, per stage n conv-norm-lrelu, stride in the first.
Decoder, from the bottleneck up: transposed conv (kernel = stride) -> concat skip -> n_blocks_decoder
blocks -> a 1x1 segmentation head per resolution (deep supervision).
train(): list of logits, highest resolution first (stages - 1 entries with deep supervision, else 1).
eval(): the full-resolution logits tensor (B, num_classes, *spatial).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import CONV, CONV_T, ConvNormAct, MambaLayer, ResidualBlock, instance_norm, leaky_relu, stacked_blocks
from .plan import Plan

ARCHS = ("umamba_enc", "umamba_bot", "unet", "resunet")


class UMambaNet(nn.Module):
    """arch: "umamba_enc" (Mamba after every stage in plan.mamba_stages), "umamba_bot" (one Mamba layer
    at the bottleneck), "unet" (plain conv nnU-Net), "resunet" (the residual net without Mamba).
    norm(spatial_dims, channels), act(): the layer factories of every conv block (see blocks.py)."""

    def __init__(self, plan: Plan, arch: str, in_channels=1, num_classes=4, mamba_fp32=True,
                 checkpoint_mamba=False, mamba_backend="auto", channels_last=False, norm=instance_norm,
                 act=leaky_relu):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"build_network: unknown arch {arch!r}; choose one of {ARCHS}")
        self.plan, self.arch = plan, arch
        self.num_classes = num_classes
        dims, feats = plan.spatial_dims, plan.features
        block = "plain" if arch == "unet" else plan.block
        self.block = block

        if arch == "unet":
            self.stem = nn.Identity()
            prev = in_channels
        else:
            self.stem = ConvNormAct(dims, in_channels, feats[0], plan.kernel_sizes[0], 1, norm=norm, act=act)
            prev = feats[0]
        self.encoder = nn.ModuleList()
        for s, f in enumerate(feats):
            self.encoder.append(stacked_blocks(block, plan.n_blocks_encoder[s], dims, prev, f,
                                               plan.kernel_sizes[s], plan.strides[s], norm=norm, act=act))
            prev = f
        if arch == "umamba_enc":
            stages = sorted(plan.mamba_stages)
        elif arch == "umamba_bot":
            stages = [len(feats) - 1]
        else:
            stages = []
        # only the full-resolution layer is checkpointed: it holds by far the most tokens
        self.mamba = nn.ModuleDict({
            str(s): MambaLayer(feats[s], fp32=mamba_fp32, backend=mamba_backend,
                               checkpoint=checkpoint_mamba and s == 0) for s in stages})

        self.upsample, self.decoder, self.heads = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for s in range(len(feats) - 1, 0, -1):  # bottleneck first
            below, skip = feats[s], feats[s - 1]
            self.upsample.append(CONV_T[dims](below, skip, plan.strides[s], plan.strides[s], bias=True))
            self.decoder.append(stacked_blocks(block, plan.n_blocks_decoder[s - 1], dims, 2 * skip, skip,
                                               plan.kernel_sizes[s - 1], 1, norm=norm, act=act))
            self.heads.append(CONV[dims](skip, num_classes, 1, 1, 0, bias=True))
        self.apply(_init_he)
        if arch == "umamba_enc":  # as U-Mamba's get_umamba_enc_from_plans (init_last_bn_before_add_to_0)
            for m in self.modules():
                if isinstance(m, ResidualBlock) and getattr(m.conv2.norm, "weight", None) is not None:
                    nn.init.zeros_(m.conv2.norm.weight)
                    nn.init.zeros_(m.conv2.norm.bias)
        # channels-last: cuDNN's fast bf16 kernels are NHWC / NDHWC, and a Mamba layer's (B, C, *spatial) ->
        # (B, N, C) token view becomes free (no transpose copy). Same numbers, another memory layout.
        self.memory_format = ((torch.channels_last if dims == 2 else torch.channels_last_3d) if channels_last
                              else torch.contiguous_format)
        if channels_last:
            self.to(memory_format=self.memory_format)

    def forward(self, x):
        """x (B, in_channels, *patch) -> list of logits (train) or full-resolution logits (eval)."""
        if x.dim() != self.plan.spatial_dims + 2:
            raise ValueError(f"{self.arch}: expected a (B, C, {'Z, Y, X' if self.plan.spatial_dims == 3 else 'Y, X'}) "
                             f"tensor, got shape {tuple(x.shape)}")
        x = self.stem(x.contiguous(memory_format=self.memory_format))
        skips = []
        for s, stage in enumerate(self.encoder):
            x = stage(x)
            if str(s) in self.mamba:
                x = self.mamba[str(s)](x)
            skips.append(x)
        deep = self.training and self.plan.deep_supervision
        outputs = []
        x = skips[-1]
        for i, (up, dec, head) in enumerate(zip(self.upsample, self.decoder, self.heads)):
            skip = skips[-(i + 2)]
            x = up(x)
            x = dec(torch.cat([x, skip], dim=1))  # cat promotes bf16 + fp32 (Mamba output) to fp32
            if deep or i == len(self.decoder) - 1:
                outputs.append(head(x))
        outputs = outputs[::-1]  # highest resolution first
        return outputs if self.training else outputs[0]

    def extra_repr(self):
        return (f"arch={self.arch!r}, spatial_dims={self.plan.spatial_dims}, features={self.plan.features}, "
                f"block={self.block!r}, mamba_stages={sorted(int(k) for k in self.mamba)}, "
                f"channels_last={self.memory_format != torch.contiguous_format}")


def _init_he(module):
    """nnU-Net's InitWeights_He(1e-2): kaiming normal on conv / transposed conv weights, zero bias.
    Mamba's Conv1d and Linear layers keep their own initialisation."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=1e-2)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
