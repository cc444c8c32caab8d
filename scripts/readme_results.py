"""Write the README's results block from the committed evidence campaign, so that its numbers are the campaign's.

    python scripts/readme_results.py            # rewrite the block between the markers in README.md
    python scripts/readme_results.py --check    # exit 1 when the block differs from what the campaign says

Reads results/evidence/acdc2d_cv5/: the runs (<config>/fold<k>/eval/summary.json), claims.csv, table_I.md,
table_II.md, length.csv, length_check.csv and landscape/sharpness.csv, as notebook 04 and 05 rendered them
(scripts/evidence_harvest.sh).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's uu, never the standard library's module of that name
from uu.ablation import DEFAULT_CONFIGS, collect_runs  # noqa: E402

BEGIN = "<!-- results:begin: written by scripts/readme_results.py from results/evidence/acdc2d_cv5 -->"
END = "<!-- results:end -->"


def runs_in(evidence: Path) -> str:
    """ "**5 of the 25 runs are in** (fold 0: `a`, `b`; fold 1: `a`)." """
    folds = {}
    for config, runs in collect_runs(evidence, DEFAULT_CONFIGS, kind="fold").items():
        for run in runs:
            folds.setdefault(int(run.name[4:]), []).append(f"`{config}`")
    n = sum(len(v) for v in folds.values())
    where = "; ".join(f"fold {k}: {', '.join(v)}" for k, v in sorted(folds.items()))
    return f"**{n} of the 25 runs {'is' if n == 1 else 'are'} in**" + (f" ({where})." if where else ".")


def _signed(x: float) -> str:
    return f"{x:+.2f}"


def claims_rows(claims: pd.DataFrame) -> list[str]:
    lines = [
        "| claim | baseline → method | paper | ours [95 % interval] | volumes (folds) | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for _, c in claims.iterrows():
        measured = pd.notna(c["delta"])
        ours = f"{_signed(c['delta'])} [{_signed(c['ci_low'])}, {_signed(c['ci_high'])}]" if measured else "-"
        counts = f"{int(c['n_volumes'])} ({int(c['n_folds'])})" if measured else "0"
        word = str(c["verdict"]).split(":")[0]
        if measured and int(c["n_folds"]) < 5:  # a partial campaign: say how partial
            word += f" ({int(c['n_folds'])} of 5 folds so far)"
        lines.append(
            f"| {c['claim']} | `{c['baseline']}` → `{c['method']}` | {c['paper']:+.3g} | {ours} | {counts} | {word} |"
        )
    return lines


def sharpness_line(path: Path) -> list[str]:
    if not path.is_file():
        return []
    table = pd.read_csv(path)
    sharp = [c for c in table.columns if c.startswith("SAM sharpness")][0]
    eig = [c for c in table.columns if c.startswith("top Hessian eigenvalue")][0]
    parts = [f"`{r['method']}` {r[sharp]:.4f} (top Hessian eigenvalue {r[eig]:.2f})" for _, r in table.iterrows()]
    return [
        "",
        "Sharpness of the fold-0 minima (SAM sharpness, the loss rise within rho 0.05): " + ", ".join(parts) + ".",
    ]


def length_lines(evidence: Path) -> list[str]:
    """Which rows were still rising when training stopped, and the length check's verdicts once it is in."""
    lines = []
    if (evidence / "length.csv").is_file():
        table = pd.read_csv(evidence / "length.csv")
        slope = "mean slope (Dice points / 1k iterations)"
        rising = [f"`{r['config']}` {r[slope]:+.2f}" for _, r in table.iterrows() if r["still rising"]]
        if rising:
            lines += [
                "",
                "Still rising when training stopped (validation Dice over the last 40 % of iterations, points per "
                "1,000 iterations): " + ", ".join(rising) + ". The verdicts compare the rows at 5,000 iterations, "
                "not at convergence; the length check trains fold 0 to 10,000.",
            ]
    if (evidence / "length_check.csv").is_file():
        for _, r in pd.read_csv(evidence / "length_check.csv").iterrows():
            lines += ["", f"- {r['claim']}: {r['with training']}."]
    return lines


def block(evidence: Path) -> str:
    claims = pd.read_csv(evidence / "claims.csv")
    lines = [BEGIN, runs_in(evidence), "", *claims_rows(claims), ""]
    lines.append(
        "Ours: the mean over the volumes that every row of the table has scored, ± the std of the fold means; "
        "Dice in %, MSE (Eq. 10) x100."
    )
    for name, title in (("table_I.md", "Table I: the loss and SAM"), ("table_II.md", "Table II: the networks")):
        lines += ["", f"*{title}*", "", (evidence / name).read_text().strip()]
    lines += sharpness_line(evidence / "landscape" / "sharpness.csv")
    lines += length_lines(evidence)
    return "\n".join([*lines, END])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when the README is stale")
    p.add_argument("--readme", default=str(REPO / "README.md"))
    p.add_argument("--evidence", default=str(REPO / "results" / "evidence" / "acdc2d_cv5"))
    args = p.parse_args(argv)
    readme = Path(args.readme)
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        print(f"{readme}: no results block (the lines {BEGIN!r} and {END!r})", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    new = head + block(Path(args.evidence)) + tail
    if args.check:
        if new != text:
            print(f"{readme}: the results block is stale: run python scripts/readme_results.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    print(f"{readme}: results block written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
