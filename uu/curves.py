"""Training curves of one run from RUN/log.jsonl: loss and its components, sigmas, lr, validation Dice.

    fig = plot_run_curves("runs/smoke")         # 2 x 2 panels, x = epoch (or wall-clock seconds)
    table = log_table("runs/smoke")             # the log as a flat pandas DataFrame
"""

from __future__ import annotations

from pathlib import Path

from uu.runs import log_table, read_log  # noqa: F401  (the run-folder format lives in uu.runs)


def plot_run_curves(run_dir, x: str = "epoch", path=None):
    """Four panels: loss + components, sigmas (Eq. 8), learning rate, validation Dice per class.
    x: "epoch", "step" or "wall" (seconds). Saves to ``path`` when given; returns the figure."""
    import matplotlib.pyplot as plt

    table = log_table(run_dir)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    (ax_loss, ax_sigma), (ax_lr, ax_val) = axes
    if table.empty:
        for ax in axes.flat:
            ax.text(0.5, 0.5, "no epochs logged yet", ha="center", va="center", transform=ax.transAxes)
        return fig
    xs = table[x]
    xlabel = {"epoch": "epoch", "step": "iteration", "wall": "wall-clock seconds"}[x]

    ax_loss.plot(xs, table["loss"], "k.-", label="total")
    for col in [c for c in table.columns if c.startswith("comp_")]:
        ax_loss.plot(xs, table[col], ".-", label=col[5:])
    ax_loss.set(xlabel=xlabel, ylabel="training loss (epoch mean)", title="loss and its components")
    ax_loss.legend()

    sigma_cols = [c for c in table.columns if c.startswith("sigma_")]
    for col in sigma_cols:
        ax_sigma.plot(xs, table[col], ".-", label=f"sigma {col[6:]}")
    if sigma_cols:
        ax_sigma.legend()
    else:
        ax_sigma.text(0.5, 0.5, "this loss has no sigma", ha="center", va="center", transform=ax_sigma.transAxes)
    ax_sigma.set(xlabel=xlabel, ylabel="sigma", title="uncertainty weights (Eq. 8)")

    ax_lr.plot(xs, table["lr"], ".-")
    ax_lr.set(xlabel=xlabel, ylabel="learning rate (last step of the epoch)", title="poly learning rate")

    val_cols = [c for c in ("val_RV", "val_Myo", "val_LV", "val_mean") if c in table.columns]
    for col in val_cols:
        rows = table[col].notna()
        ax_val.plot(xs[rows], table.loc[rows, col], "o-" if col == "val_mean" else ".--", label=col[4:])
    if val_cols:
        ax_val.legend()
    ax_val.set(xlabel=xlabel, ylabel="Dice", title="validation Dice (sliding window)", ylim=(0, 1))
    fig.suptitle(Path(run_dir).name)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
