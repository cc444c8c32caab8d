"""Network plans: the nnU-Net-style description of a U-Net (one dataclass for 2D and 3D).

Plans by name (`get_plan`):
  "3d"     the authors' nnU-Net 3d_fullres plan for ACDC (ANCHORS.md): patch (20, 256, 224), 6 stages, features
           32..320, anisotropic strides, [1,3,3] kernels in the first stage.
  "2d"     the 2D counterpart for 256 x 224 slices, as nnU-Net plans 2D networks: 6 stages, features 32..512
           (nnU-Net caps 2D features at 512), strides 1, 2, 2, 2, 2, 2 (down to 8 x 7), 3 x 3 kernels.
  "tiny2d" 64 x 64, 4 stages, features 8..64: for CPU, CI and notebooks.
  "tiny3d" 8 x 32 x 32, 4 stages, features 8..64, strides like the paper's (in-plane first).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass
class Plan:
    """Everything that fixes a network's shape; lists have one entry per stage (highest resolution first). strides[s]:
    the downsampling at the start of stage s (strides[0] all ones); kernel_sizes[s]: the convs of stage s and of the
    decoder stage at that resolution; n_blocks_encoder[s] / n_blocks_decoder[s] (len stages - 1): residual blocks (or
    plain convs for "unet"); mamba_stages: encoder stages followed by a Mamba layer in "umamba_enc"."""

    spatial_dims: int
    patch_size: tuple
    features: list
    strides: list
    kernel_sizes: list
    n_blocks_encoder: list = None
    n_blocks_decoder: list = None
    mamba_stages: list = None
    deep_supervision: bool = True
    block: str = "residual"
    name: str = ""

    def __post_init__(self):
        n = len(self.features)
        self.patch_size = tuple(int(p) for p in self.patch_size)
        self.strides = [_per_axis(s, self.spatial_dims, "strides") for s in self.strides]
        self.kernel_sizes = [_per_axis(k, self.spatial_dims, "kernel_sizes") for k in self.kernel_sizes]
        if self.n_blocks_encoder is None:
            self.n_blocks_encoder = [2] * n
        if self.n_blocks_decoder is None:
            self.n_blocks_decoder = [2] * (n - 1)
        if self.mamba_stages is None:
            self.mamba_stages = list(range(n))
        self.validate()

    def validate(self):
        n = len(self.features)
        problems = []
        if self.spatial_dims not in (2, 3):
            problems.append(f"spatial_dims={self.spatial_dims} (use 2 or 3)")
        if len(self.patch_size) != self.spatial_dims:
            problems.append(
                f"patch_size {self.patch_size} has {len(self.patch_size)} axes, spatial_dims is {self.spatial_dims}"
            )
        for key, want in (("strides", n), ("kernel_sizes", n), ("n_blocks_encoder", n), ("n_blocks_decoder", n - 1)):
            if len(getattr(self, key)) != want:
                problems.append(f"{key} has {len(getattr(self, key))} entries, expected {want} ({n} stages)")
        if self.block not in ("residual", "plain"):
            problems.append(f"block={self.block!r} (use 'residual' or 'plain')")
        if any(not 0 <= s < n for s in self.mamba_stages):
            problems.append(f"mamba_stages {self.mamba_stages} must lie in 0..{n - 1}")
        if not problems and len(self.strides) == n:
            total = [1] * self.spatial_dims
            for s in self.strides:
                total = [t * a for t, a in zip(total, s)]
            if any(p % t for p, t in zip(self.patch_size, total)):
                problems.append(f"patch_size {self.patch_size} is not divisible by the total stride {tuple(total)}")
        if problems:
            raise ValueError(f"Plan {self.name or ''}: " + "; ".join(problems))

    @property
    def n_stages(self) -> int:
        return len(self.features)

    def feature_map_sizes(self) -> list:
        """Spatial size of each stage's output for an input of `patch_size`."""
        sizes, size = [], list(self.patch_size)
        for s in self.strides:
            size = [a // b for a, b in zip(size, s)]
            sizes.append(tuple(size))
        return sizes

    def with_(self, **changes) -> "Plan":
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)


def _per_axis(value, dims, what):
    if isinstance(value, int):
        return [value] * dims
    value = [int(v) for v in value]
    if len(value) != dims:
        raise ValueError(f"Plan: {what} entry {value} has {len(value)} axes, expected {dims}")
    return value


def paper_plan_3d() -> Plan:
    """The authors' ACDC 3d_fullres plan (nnU-Net), see ANCHORS.md."""
    return Plan(
        spatial_dims=3,
        patch_size=(20, 256, 224),
        features=[32, 64, 128, 256, 320, 320],
        strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]],
        kernel_sizes=[[1, 3, 3]] + [[3, 3, 3]] * 5,
        name="3d",
    )


def paper_plan_2d() -> Plan:
    """nnU-Net-like 2D plan for 256 x 224 slices (features capped at 512, 6 stages down to 8 x 7)."""
    return Plan(
        spatial_dims=2,
        patch_size=(256, 224),
        features=[32, 64, 128, 256, 512, 512],
        strides=[[1, 1]] + [[2, 2]] * 5,
        kernel_sizes=[[3, 3]] * 6,
        name="2d",
    )


def tiny_plan_2d() -> Plan:
    """A small 2D plan for CPU tests and notebooks (64 x 64, 4 stages)."""
    return Plan(
        spatial_dims=2,
        patch_size=(64, 64),
        features=[8, 16, 32, 64],
        strides=[[1, 1]] + [[2, 2]] * 3,
        kernel_sizes=[[3, 3]] * 4,
        name="tiny2d",
    )


def tiny_plan_3d() -> Plan:
    """A small 3D plan for CPU tests (8 x 32 x 32, 4 stages, anisotropic like the paper's)."""
    return Plan(
        spatial_dims=3,
        patch_size=(8, 32, 32),
        features=[8, 16, 32, 64],
        strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
        kernel_sizes=[[1, 3, 3]] + [[3, 3, 3]] * 3,
        name="tiny3d",
    )


PLANS = {"3d": paper_plan_3d, "2d": paper_plan_2d, "tiny2d": tiny_plan_2d, "tiny3d": tiny_plan_3d, "tiny": tiny_plan_2d}


def get_plan(name: str) -> Plan:
    """Plan by name: "3d", "2d", "tiny2d", "tiny3d" ("tiny" = "tiny2d")."""
    if isinstance(name, Plan):
        return name
    if name not in PLANS:
        raise ValueError(f"get_plan: unknown plan {name!r}; choose one of {sorted(PLANS)}")
    return PLANS[name]()
