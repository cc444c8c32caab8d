"""Tables, landscapes, sharpness and calibration of finished ablation runs, without papermill (issue 5).

    python benchmarks/ablation_evidence.py --runs RUNS --data D --out OUT [--budget-s 300]

What notebooks 04 and 05 compute, for a machine without Jupyter (the lent GPU): the ablation table
(CSV + Markdown, beside the paper's), paired bootstrap comparisons, the loss landscapes and sharpness
numbers of rows 3-5 (`OUT/landscape.json`, read by notebook 05's `landscape_file`), the calibration
bins and ECE (`OUT/calibration.json`, its `calibration_file`), and the figures as PNG. Hessian power
iterations are the slow part: they run last, per method, only while --budget-s lasts.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from uu import ablation, landscape, viz
from uu.losses import build_loss
from uu.runs import load_run_model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", required=True)
    p.add_argument("--data", default="")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default="umamba_ce,umamba_ua,umamba_ua_sam")
    p.add_argument("--landscape-loss", default="dice_ce")
    p.add_argument("--n-patches", type=int, default=4)
    p.add_argument("--line-points", type=int, default=11)
    p.add_argument("--grid-points", type=int, default=11)
    p.add_argument("--rho", type=float, default=0.05)
    p.add_argument("--sam-steps", type=int, default=5)
    p.add_argument("--hessian-iters", type=int, default=10)
    p.add_argument("--budget-s", type=float, default=600.0, help="stop starting Hessian estimates after this")
    p.add_argument("--protocol", default="")
    args = p.parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # small differences matter here

    runs = ablation.collect_runs(args.runs)
    print("finished runs:", {k: [str(r) for r in v] for k, v in runs.items()}, flush=True)
    table = ablation.ablation_table(runs)
    ablation.write_table(table, out / "ablation_numbers", floatfmt=".4f")
    ablation.write_table(ablation.format_table(table), out / "ablation_table")
    ablation.write_table(ablation.side_by_side(table, args.protocol or f"ours: {args.runs}"), out / "ablation_vs_paper")
    pairs = [pair for pair in ablation.DEFAULT_PAIRS if pair[0] in runs and pair[1] in runs]
    if pairs:
        ablation.write_table(ablation.paired_comparisons(runs, pairs), out / "ablation_paired", floatfmt=".4f")
    print(ablation.to_markdown(ablation.format_table(table)), flush=True)
    logs = {name: ablation.read_log(run_list[0]) for name, run_list in runs.items()}
    viz.training_curves(logs, path=out / "training_curves.png")

    methods = [m for m in args.methods.split(",") if m in runs]
    chosen = {m: next(r for r in runs[m] if ablation.run_seed(r) == args.seed) for m in methods}
    report = {}
    common = dict(loss=args.landscape_loss, n_patches=args.n_patches, rho=args.rho, sam_steps=args.sam_steps,
                  line_points=args.line_points, grid_points=args.grid_points, seed=args.seed,
                  data_dir=args.data or None, device=device)
    for m, run in chosen.items():  # lines, planes and SAM sharpness first: cheap with the fused scan
        t0 = time.perf_counter()
        report.update(landscape.landscape_report({m: run}, hessian_iters=0, **common))
        print(f"[landscape] {m}: {time.perf_counter() - t0:.0f} s, SAM sharpness {report[m]['sam']['sharpness']:.5g}",
              flush=True)
    meta = dict(common, hessian_iters=args.hessian_iters, runs={m: str(r) for m, r in chosen.items()})
    landscape.save_report(report, out / "landscape.json", **meta)
    for m, run in chosen.items():  # Hessians: double backprop through the PyTorch scan, slow
        left = args.budget_s - (time.perf_counter() - start)
        if left < 60:
            print(f"[hessian] {m}: skipped, {left:.0f} s of the budget left", flush=True)
            continue
        t0 = time.perf_counter()
        model, _ = load_run_model(run, "final", device)
        images, target = landscape.training_patches(run, n=args.n_patches, seed=args.seed, data_dir=args.data or None)
        closure = landscape.batch_loss_closure(model, build_loss(args.landscape_loss, num_classes=4).to(device),
                                               images, target)
        report[m]["hessian"] = landscape.top_hessian_eigenvalue(model, closure, iters=args.hessian_iters, seed=args.seed)
        print(f"[hessian] {m}: {report[m]['hessian']['eigenvalue']:.5g} ({report[m]['hessian']['iterations']} "
              f"products, {time.perf_counter() - t0:.0f} s)", flush=True)
        landscape.save_report(report, out / "landscape.json", **meta)
    sharp = landscape.sharpness_table(report)
    ablation.write_table(sharp, out / "sharpness", floatfmt=".5g")
    print(ablation.to_markdown(sharp, ".5g"), flush=True)
    alphas = next(iter(report.values()))["line"][0]
    viz.loss_line(alphas, {m: r["line"][1] for m, r in report.items()}, path=out / "landscape_1d.png",
                  ylabel=f"{args.landscape_loss} loss on {args.n_patches} fixed training patches")
    viz.landscape_2d({m: r["surface"] for m, r in report.items()}, path=out / "landscape_2d.png")
    viz.sigma_trajectories({m: ablation.read_log(r) for m, r in chosen.items()}, path=out / "sigmas.png")

    material = ablation.figure_material(chosen, data_dir=args.data or None)
    ablation.save_calibration(material, out / "calibration.json")
    viz.reliability_diagram(material["bins"], path=out / "reliability.png")
    viz.overlay_grid(material["images"], material["ground_truth"], material["predictions"], material["mses"],
                     row_titles=material["titles"], path=out / "overlays.png")
    viz.entropy_and_error(material["images"], material["entropy"], material["errors"], path=out / "entropy.png")
    print("ECE %:", {m: round(100 * e, 4) for m, e in material["ece"].items()})
    print(f"done in {time.perf_counter() - start:.0f} s", flush=True)
    (out / "evidence.json").write_text(json.dumps({"seconds": time.perf_counter() - start, "device": device}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
