"""U-Mamba Enc / Bot and nnU-Net's plain U-Net, one class for 2D and 3D.

Encoder: stem (not for "unet") -> per stage blocks (stride in the first) -> optional MambaLayer, each output a
skip. Decoder: transposed conv -> concat skip -> blocks -> a 1x1 head per resolution (deep supervision).
train(): list of logits, highest resolution first; eval(): full-resolution logits (B, num_classes, *spatial)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import CONV, CONV_T, ConvNormAct, MambaLayer, ResidualBlock, instance_norm, leaky_relu, stacked_blocks
from .plan import Plan

ARCHS = ("umamba_enc", "umamba_bot", "unet", "resunet")


class UMambaNet(nn.Module):
    """arch: "umamba_enc" (Mamba after plan.mamba_stages), "umamba_bot" (Mamba at the bottleneck), "unet" (plain
    conv nnU-Net), "resunet" (the residual net without Mamba)."""

    def __init__(
        self,
        plan: Plan,
        arch: str,
        in_channels=1,
        num_classes=4,
        mamba_fp32=True,
        checkpoint_mamba=False,
        mamba_backend="auto",
        channels_last=False,
        norm=instance_norm,
        act=leaky_relu,
    ):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"build_network: unknown arch {arch!r}; choose one of {ARCHS}")
        self.plan, self.arch, self.num_classes = plan, arch, num_classes
        dims, feats = plan.spatial_dims, plan.features
        self.block = block = "plain" if arch == "unet" else plan.block
        if arch == "unet":
            self.stem, prev = nn.Identity(), in_channels
        else:
            self.stem = ConvNormAct(dims, in_channels, feats[0], plan.kernel_sizes[0], 1, norm=norm, act=act)
            prev = feats[0]
        stack = lambda n, cin, cout, k, stride: stacked_blocks(block, n, dims, cin, cout, k, stride, norm, act)
        self.encoder = nn.ModuleList()
        for s, f in enumerate(feats):
            self.encoder.append(stack(plan.n_blocks_encoder[s], prev, f, plan.kernel_sizes[s], plan.strides[s]))
            prev = f
        stages = {"umamba_enc": sorted(plan.mamba_stages), "umamba_bot": [len(feats) - 1]}.get(arch, [])
        # only the full-resolution layer is checkpointed: it holds by far the most tokens
        self.mamba = nn.ModuleDict(
            {
                str(s): MambaLayer(
                    feats[s], fp32=mamba_fp32, backend=mamba_backend, checkpoint=checkpoint_mamba and s == 0
                )
                for s in stages
            }
        )
        self.upsample, self.decoder, self.heads = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for s in range(len(feats) - 1, 0, -1):  # bottleneck first
            below, skip = feats[s], feats[s - 1]
            self.upsample.append(CONV_T[dims](below, skip, plan.strides[s], plan.strides[s], bias=True))
            self.decoder.append(stack(plan.n_blocks_decoder[s - 1], 2 * skip, skip, plan.kernel_sizes[s - 1], 1))
            self.heads.append(CONV[dims](skip, num_classes, 1, 1, 0, bias=True))
        self.apply(_init_he)
        if arch == "umamba_enc":  # as U-Mamba's get_umamba_enc_from_plans (init_last_bn_before_add_to_0)
            for m in self.modules():
                if isinstance(m, ResidualBlock) and getattr(m.conv2.norm, "weight", None) is not None:
                    nn.init.zeros_(m.conv2.norm.weight)
                    nn.init.zeros_(m.conv2.norm.bias)
        # channels-last: cuDNN's fast bf16 kernels are NHWC / NDHWC. The activations keep it only with a
        # layout-preserving norm (blocks.InstanceNormInLayout): nn.InstanceNorm returns NCHW
        self.memory_format = (
            (torch.channels_last if dims == 2 else torch.channels_last_3d) if channels_last else torch.contiguous_format
        )
        if channels_last:
            self.to(memory_format=self.memory_format)

    def forward(self, x):
        """x (B, in_channels, *patch) -> list of logits (train) or full-resolution logits (eval)."""
        if x.dim() != self.plan.spatial_dims + 2:
            raise ValueError(
                f"{self.arch}: expected a (B, C, {'Z, Y, X' if self.plan.spatial_dims == 3 else 'Y, X'}) "
                f"tensor, got shape {tuple(x.shape)}"
            )
        x = self.stem(x.contiguous(memory_format=self.memory_format))
        skips = []
        for s, stage in enumerate(self.encoder):
            x = stage(x)
            if str(s) in self.mamba:
                x = self.mamba[str(s)](x)
            skips.append(x)
        deep, outputs, x = self.training and self.plan.deep_supervision, [], skips[-1]
        for i, (up, dec, head) in enumerate(zip(self.upsample, self.decoder, self.heads)):
            x = dec(torch.cat([up(x), skips[-(i + 2)]], dim=1))  # cat promotes bf16 + fp32 (Mamba output) to fp32
            if deep or i == len(self.decoder) - 1:
                outputs.append(head(x))
        outputs = outputs[::-1]  # highest resolution first
        return outputs if self.training else outputs[0]

    def extra_repr(self):
        return (
            f"arch={self.arch!r}, spatial_dims={self.plan.spatial_dims}, features={self.plan.features}, "
            f"block={self.block!r}, mamba_stages={sorted(int(k) for k in self.mamba)}, "
            f"channels_last={self.memory_format != torch.contiguous_format}"
        )


def _init_he(module):
    """nnU-Net's InitWeights_He(1e-2) on conv / transposed conv weights, zero bias (Mamba keeps its own)."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=1e-2)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
