"""Which convolutions of a channels-last network see another memory layout (no GPU needed).

    python benchmarks/layout_audit.py --arch unet --norm instance
    python benchmarks/layout_audit.py --arch unet --norm instance_in_layout

Two counts for one forward + backward of the tiny2d plan:
- eager: convolutions (and transposed ones) whose input is not channels-last, out of all of them;
- torch.compile's AOT graphs (aot_eager backend, CPU): convolutions whose input, and convolution backwards whose
  gradient, is not channels-last, and the copy ops (clone / _to_copy / copy) the graphs hold.
A mismatch makes cuDNN convert the tensor inside the convolution: on an H200 that copy cost 50 ms of a compiled 3D
SAM step (results/performance/h200/step_profiles/compiled_channels_last/).
On the CPU the PyTorch scan breaks the compiled graph, so for U-Mamba the AOT counts cover the parts between breaks.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn as nn


def _channels_last(t) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last)


def eager_counts(model, x) -> dict:
    seen = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, inp: seen.append(_channels_last(inp[0])))
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]
    sum(o.square().mean() for o in model.train()(x)).backward()
    for h in hooks:
        h.remove()
    return {"convolutions": len(seen), "input_not_channels_last": seen.count(False)}


def aot_counts(model, x) -> dict:
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    counts = {f"{g}_{k}": 0 for g in ("forward", "backward") for k in ("convolutions", "not_channels_last", "copies")}

    def audit(gm, graph):
        for node in gm.graph.nodes:
            if node.op != "call_function":
                continue
            name = str(node.target)
            if any(k in name for k in ("clone", "_to_copy", "copy")):
                counts[f"{graph}_copies"] += 1
            if name.startswith("aten.convolution"):  # forward: its input; backward: the incoming gradient
                counts[f"{graph}_convolutions"] += 1
                counts[f"{graph}_not_channels_last"] += not _channels_last(node.args[0].meta["val"])
        return make_boxed_func(gm.forward)

    backend = aot_autograd(
        fw_compiler=lambda gm, _: audit(gm, "forward"), bw_compiler=lambda gm, _: audit(gm, "backward")
    )
    torch._dynamo.reset()
    sum(o.square().mean() for o in torch.compile(model, backend=backend).train()(x)).backward()
    return counts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="unet")
    p.add_argument("--norm", default="instance", choices=("instance", "instance_in_layout"))
    p.add_argument("--no-compile", action="store_true", help="eager counts only")
    args = p.parse_args(argv)
    from uu.net import NORMS, build_network

    torch.manual_seed(0)
    model = build_network("tiny2d", args.arch, channels_last=True, norm=NORMS[args.norm])
    x = torch.randn(2, 1, *model.plan.patch_size)
    row = {"arch": args.arch, "norm": args.norm, "eager": eager_counts(model, x)}
    if not args.no_compile:
        row["aot"] = aot_counts(model, x)
    print(f"[layout_audit] {json.dumps(row)}")


if __name__ == "__main__":
    main()
