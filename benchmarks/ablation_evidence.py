"""Notebooks 04 and 05 without Jupyter, for a machine without papermill (the lent GPU).

    python benchmarks/ablation_evidence.py --runs RUNS --data D --out OUT [--budget-s 300]

The notebooks' own library calls on finished ablation runs: the tables (uu.tables and uu.evidence, CSV +
Markdown: every configuration, the paper's claims with intervals and verdicts), the loss landscapes and
sharpness of the --methods (`OUT/landscape.json`, read by notebook 05's `landscape_file`; the Hessian estimates,
the slow part, run last and only while --budget-s lasts), the calibration bins and ECE (`OUT/calibration.json`, its
`calibration_file`), and the figures as PNG.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from uu import ablation, evidence, figures, landscape, tables, viz
from uu.runs import read_log


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", required=True)
    p.add_argument("--data", default="")
    p.add_argument("--out", required=True)
    p.add_argument("--kind", default="seed", choices=["seed", "fold"], help="runs RUNS/<config>/seed<k> or fold<k>")
    p.add_argument("--seed", type=int, default=0, help="k of the runs whose landscapes and figures are drawn")
    p.add_argument(
        "--landscape-only",
        action="store_true",
        help="only landscape.json, sharpness and calibration.json (no tables, no image figures)",
    )
    p.add_argument("--methods", default="umamba_ce,umamba_ua,umamba_ua_sam")
    p.add_argument("--landscape-loss", default="dice_ce")
    p.add_argument("--n-patches", type=int, default=4)
    p.add_argument("--line-points", type=int, default=11)
    p.add_argument("--grid-points", type=int, default=11)
    p.add_argument("--rho", type=float, default=0.05)
    p.add_argument("--sam-steps", type=int, default=5)
    p.add_argument("--hessian-iters", type=int, default=10)
    p.add_argument("--budget-s", type=float, default=600.0, help="start no Hessian estimate after this")
    args = p.parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # small differences matter here

    runs = ablation.collect_runs(args.runs, kind=args.kind)  # notebook 04
    print("finished runs:", {k: [str(r) for r in v] for k, v in runs.items()}, flush=True)
    chosen = {m: r for m in args.methods.split(",") for r in runs.get(m, []) if r.name == f"{args.kind}{args.seed}"}
    if not args.landscape_only:
        tabulate(runs, chosen, out)
    report = landscape.landscape_report(  # notebook 05; a Hessian started in the last minute would overrun
        chosen,
        loss=args.landscape_loss,
        n_patches=args.n_patches,
        rho=args.rho,
        sam_steps=args.sam_steps,
        hessian_iters=args.hessian_iters,
        line_points=args.line_points,
        grid_points=args.grid_points,
        seed=args.seed,
        data_dir=args.data or None,
        device=device,
        hessian_budget_s=args.budget_s - (time.perf_counter() - start) - 60,
        save_to=out / "landscape.json",
    )
    sharp = tables.sharpness_table(report, args.landscape_loss)
    tables.write_table(sharp, out / "sharpness", floatfmt=".5g")
    print(tables.to_markdown(sharp, ".5g"), flush=True)
    alphas = next(iter(report.values()))["line"][0]
    viz.loss_line(
        alphas,
        {m: r["line"][1] for m, r in report.items()},
        path=out / "landscape_1d.png",
        ylabel=f"{args.landscape_loss} loss on {args.n_patches} fixed training patches",
    )
    viz.landscape_2d({m: r["surface"] for m, r in report.items()}, path=out / "landscape_2d.png")
    viz.sigma_trajectories({m: read_log(r) for m, r in chosen.items()}, path=out / "sigmas.png")

    material = figures.figure_material(chosen, data_dir=args.data or None)
    figures.save_calibration(material, out / "calibration.json")
    viz.reliability_diagram(material["bins"], path=out / "reliability.png")
    tables.write_table(tables.calibration_table(material["ece"]), out / "calibration", floatfmt=".4f")
    if not args.landscape_only:  # images of the data: never committed from real data
        viz.overlay_grid(
            material["images"],
            material["ground_truth"],
            material["predictions"],
            material["mses"],
            row_titles=material["titles"],
            path=out / "overlays.png",
        )
        viz.entropy_and_error(material["images"], material["entropy"], material["errors"], path=out / "entropy.png")
    print(f"done in {time.perf_counter() - start:.0f} s", flush=True)
    (out / "evidence.json").write_text(
        json.dumps(
            {"seconds": time.perf_counter() - start, "device": device, "runs": {m: str(r) for m, r in chosen.items()}}
        )
    )
    return 0


def tabulate(runs, chosen, out: Path) -> None:
    """Notebook 04's tables (CSV + Markdown): every configuration, the claims with their intervals and verdicts,
    the training curves."""
    table = tables.ablation_table(runs, ablation.CONFIGS)
    tables.write_table(table, out / "ablation_numbers", floatfmt=".4f")
    tables.write_table(tables.format_table(table), out / "ablation_table")
    claims = evidence.claims_table(evidence.pooled_scores(runs))
    tables.write_table(claims, out / "claims", floatfmt=".3f")
    print(tables.to_markdown(tables.format_table(table)), flush=True)
    viz.training_curves(
        {name: read_log(run_list[0]) for name, run_list in runs.items()}, path=out / "training_curves.png"
    )


if __name__ == "__main__":
    raise SystemExit(main())
