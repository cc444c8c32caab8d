"""U-Mamba Enc / Bot and the plain nnU-Net, 2D and 3D: ``get_plan("3d" | "2d" | "tiny2d" | "tiny3d") -> Plan``;
``build_network(plan, arch, ...) -> nn.Module`` with arch "umamba_enc", "umamba_bot", "unet" (plain conv nnU-Net)
or "resunet" (residual, no Mamba) and norm a factory (spatial_dims, channels) -> nn.Module: instance_norm
(nn.InstanceNorm) or instance_norm_in_layout (the same function, keeps a channels-last layout)."""

import math

import torch

from .blocks import (
    ConvNormAct,
    InstanceNormInLayout,
    MambaLayer,
    ResidualBlock,
    instance_norm,
    instance_norm_in_layout,
    leaky_relu,
)
from .plan import PLANS, Plan, get_plan, paper_plan_2d, paper_plan_3d, tiny_plan_2d, tiny_plan_3d
from .umamba import ARCHS, UMambaNet

__all__ = [
    "Plan",
    "get_plan",
    "paper_plan_3d",
    "paper_plan_2d",
    "tiny_plan_2d",
    "tiny_plan_3d",
    "PLANS",
    "build_network",
    "NORMS",
    "count_parameters",
    "count_parameters_fast",
    "stage_table",
    "UMambaNet",
    "ARCHS",
    "MambaLayer",
    "ResidualBlock",
    "ConvNormAct",
    "instance_norm",
    "instance_norm_in_layout",
    "InstanceNormInLayout",
    "leaky_relu",
]

NORMS = {"instance": instance_norm, "instance_in_layout": instance_norm_in_layout}  # by name, as profiles give them


def build_network(plan, arch, in_channels=1, num_classes=4, **options):
    """Build a network from a Plan (or a plan name); options: UMambaNet's keywords (mamba_fp32, checkpoint_mamba,
    mamba_backend, channels_last: NHWC / NDHWC layout (same results), norm, act)."""
    return UMambaNet(get_plan(plan), arch, in_channels, num_classes, **options)


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_parameters_fast(plan, arch, **kwargs) -> int:
    """Parameter count without allocating weights (builds on the meta device)."""
    with torch.device("meta"):
        return count_parameters(build_network(plan, arch, **kwargs))


def stage_table(plan, arch, in_channels=1, num_classes=4, total=False) -> list:
    """One dict per resolution stage: feature-map size, channels, Mamba tokens, parameters of the encoder stage
    (+ stem), its Mamba layer and the decoder stage at that resolution (upsampling, blocks, head). total: a last
    row "total" summing the parameters, its other fields "" (channels or sizes do not add up)."""
    plan = get_plan(plan)
    with torch.device("meta"):
        model = build_network(plan, arch, in_channels=in_channels, num_classes=num_classes)
    rows, n = [], plan.n_stages
    for s, size in enumerate(plan.feature_map_sizes()):
        enc = count_parameters(model.encoder[s]) + (count_parameters(model.stem) if s == 0 else 0)
        mamba = count_parameters(model.mamba[str(s)]) if str(s) in model.mamba else 0
        dec = 0
        if s < n - 1:
            i = n - 2 - s  # decoder modules are stored bottleneck first
            dec = sum(count_parameters(m[i]) for m in (model.upsample, model.decoder, model.heads))
        rows.append(
            {
                "stage": s,
                "feature_map": "x".join(map(str, size)),
                "channels": plan.features[s],
                "stride": "x".join(map(str, plan.strides[s])),
                "mamba_tokens": math.prod(size) if mamba else 0,
                "params_encoder": enc,
                "params_mamba": mamba,
                "params_decoder": dec,
                "params_total": enc + mamba + dec,
            }
        )
    if total:
        rows.append({k: sum(r[k] for r in rows) if k.startswith("params_") else "" for k in rows[0]})
        rows[-1]["stage"] = "total"
    return rows
