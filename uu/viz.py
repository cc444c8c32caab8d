"""Figures: overlays (Fig. 3), error and entropy maps, training curves, sigma trajectories, Bland-Altman,
reliability diagrams, loss landscapes. Each takes plain arrays / dicts / tables, returns a Figure and, given
`path`, also writes it as PNG; nothing here trains, loads runs or computes metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

from uu.clinical import INDICES, column
from uu.stats import ece_from_bins

# background transparent, RV red, Myo green, LV blue (ACDC labels 0..3)
LABEL_COLORS = ListedColormap([(0, 0, 0, 0), (0.9, 0.2, 0.2, 1), (0.2, 0.8, 0.3, 1), (0.2, 0.4, 0.95, 1)])


def save(fig, path=None, dpi: int = 110, tight: bool = False):
    """Write the figure as PNG when path is given (after fig.tight_layout() when tight); returns the figure."""
    if tight:
        fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(path), dpi=dpi, bbox_inches="tight")
    return fig


def _grid(n_rows: int, n_cols: int, size: float = 2.4):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols, size * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.set(xticks=[], yticks=[])
    return fig, axes


def _show_labels(ax, image, label, alpha: float = 0.45):
    ax.imshow(image, cmap="gray")
    masked = np.ma.masked_equal(np.asarray(label), 0)
    ax.imshow(masked, cmap=LABEL_COLORS, vmin=0, vmax=3, alpha=alpha, interpolation="nearest")


# ----------------------------------------------------------------------------- segmentations
def overlay_grid(
    images: Sequence[np.ndarray],
    ground_truth: Sequence[np.ndarray],
    predictions: Mapping[str, Sequence[np.ndarray]],
    mses: Mapping[str, Sequence[float]] | None = None,
    row_titles: Sequence[str] | None = None,
    path=None,
):
    """Fig. 3 style: one row per slice (Y, X), columns ground truth then each method; mses: method ->
    per-slice MSE (Eq. 10, fraction) shown x100 in the titles."""
    methods = list(predictions)
    fig, axes = _grid(len(images), 1 + len(methods))
    for r, (image, gt) in enumerate(zip(images, ground_truth)):
        _show_labels(axes[r, 0], image, gt)
        axes[r, 0].set_title("ground truth" if r == 0 else "", fontsize=9)
        if row_titles:
            axes[r, 0].set_ylabel(row_titles[r], fontsize=8)
        for c, method in enumerate(methods, start=1):
            _show_labels(axes[r, c], image, predictions[method][r])
            title = method if r == 0 else ""
            if mses is not None:
                title = (title + "\n" if title else "") + f"MSE {100 * mses[method][r]:.3f}%"
            axes[r, c].set_title(title, fontsize=8)
    return save(fig, path, tight=True)


def error_map_grid(
    images: Sequence[np.ndarray],
    ground_truth: Sequence[np.ndarray],
    predictions: Mapping[str, Sequence[np.ndarray]],
    row_titles: Sequence[str] | None = None,
    path=None,
):
    """Wrong voxels per method: wrongly predicted foreground in orange, missed foreground in cyan."""
    methods = list(predictions)
    fig, axes = _grid(len(images), len(methods))
    cmap = ListedColormap([(0, 0, 0, 0), (1.0, 0.6, 0.0, 1), (0.0, 0.9, 0.9, 1)])
    for r, (image, gt) in enumerate(zip(images, ground_truth)):
        for c, method in enumerate(methods):
            pred = np.asarray(predictions[method][r])
            wrong, ax = pred != gt, axes[r, c]
            kind = np.where(wrong & (pred > 0), 1, np.where(wrong, 2, 0))
            ax.imshow(image, cmap="gray")
            ax.imshow(np.ma.masked_equal(kind, 0), cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
            ax.set_title((method + "\n" if r == 0 else "") + f"{int(wrong.sum())} wrong", fontsize=8)
            if c == 0 and row_titles:
                ax.set_ylabel(row_titles[r], fontsize=8)
    return save(fig, path, tight=True)


def entropy_and_error(
    images: Sequence[np.ndarray],
    entropy: Mapping[str, Sequence[np.ndarray]],
    errors: Mapping[str, Sequence[np.ndarray]],
    path=None,
):
    """Per method and slice: the predictive entropy map (nats) next to the wrong voxels."""
    methods = list(entropy)
    fig, axes = _grid(len(images), 2 * len(methods))
    vmax = max(float(np.max(e)) for m in methods for e in entropy[m]) or 1.0
    for r, image in enumerate(images):
        for k, method in enumerate(methods):
            ax_e, ax_w = axes[r, 2 * k], axes[r, 2 * k + 1]
            im = ax_e.imshow(entropy[method][r], cmap="magma", vmin=0, vmax=vmax)
            ax_w.imshow(image, cmap="gray")
            ax_w.imshow(
                np.ma.masked_equal(np.asarray(errors[method][r]).astype(int), 0), cmap="autumn", interpolation="nearest"
            )
            if r == 0:
                ax_e.set_title(f"{method}\nentropy", fontsize=8)
                ax_w.set_title(f"{method}\nerrors", fontsize=8)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="entropy (nats)")
    return save(fig, path)


def slice_viewer(cases: Sequence, labels: bool = True):
    """ipywidgets viewer of cases: a case slider, a slice slider bounded by the shown case's Z and a labels box.
    Returns the widget; ``.children[0].children`` are the three controls."""
    import ipywidgets as widgets  # optional: only a live kernel shows widgets

    n_slices = lambda i: cases[i].image.shape[0]  # noqa: E731
    case = widgets.IntSlider(0, 0, len(cases) - 1, description="case")
    z = widgets.IntSlider(n_slices(0) // 2, 0, n_slices(0) - 1, description="slice z")
    shown = widgets.Checkbox(labels, description="labels")
    # observed before the drawing below: the slice is clamped before the new case is drawn
    case.observe(lambda change: setattr(z, "max", n_slices(change["new"]) - 1), names="value")

    def draw(case_index, z, labels):
        c = cases[case_index]
        fig, ax = _grid(1, 1, size=5)
        _show_labels(ax[0, 0], c.image[z], c.label[z] if labels and c.label is not None else np.zeros_like(c.image[z]))
        ax[0, 0].set_title(f"patient {c.patient} {c.phase}: slice {z} (0-{c.image.shape[0] - 1})")
        plt.show()

    output = widgets.interactive_output(draw, {"case_index": case, "z": z, "labels": shown})
    return widgets.VBox([widgets.HBox([case, z, shown]), output])


# ----------------------------------------------------------------------------- training
def _series(log: Sequence[dict], key: str, x: str = "epoch") -> tuple[list, list]:
    """(x values, values of a dotted key such as "val.mean") over the log lines that have the key."""
    xs, ys = [], []
    for entry in log:
        value = entry
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            xs.append(entry.get(x, len(xs)))
            ys.append(value)
    return xs, ys


def _grid_and_legend(ax):
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)


def training_curves(logs: Mapping[str, Sequence[dict]], path=None):
    """Training loss and validation mean Dice per epoch, one line per configuration (from log.jsonl)."""
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, log in logs.items():
        ax_loss.plot(*_series(log, "loss"), marker=".", label=name)
        xs, ys = _series(log, "val.mean")
        if xs:
            ax_dice.plot(xs, [100 * y for y in ys], marker="o", label=name)
    ax_loss.set(xlabel="epoch", ylabel="training loss (own objective)", title="training loss")
    ax_dice.set(xlabel="epoch", ylabel="validation Dice (%)", title="validation mean Dice")
    for ax in (ax_loss, ax_dice):
        _grid_and_legend(ax)
    return save(fig, path, tight=True)


def time_to_accuracy(logs: Mapping[str, Sequence[dict]], path=None, x: str = "wall", finals=None):
    """Validation mean Dice against seconds ("wall" or "train_seconds"), one line per run; finals: {run:
    (seconds, Dice 0-1)} drawn as a star."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, log in logs.items():
        xs, ys = _series(log, "val.mean", x=x)
        (line,) = ax.plot(xs, [100 * y for y in ys], marker="o", label=name)
        if finals and name in finals:
            ax.plot(finals[name][0], 100 * finals[name][1], "*", ms=12, color=line.get_color())
    label = {"wall": "wall-clock seconds of training", "train_seconds": "seconds in training steps"}[x]
    ax.set(xlabel=label, ylabel="validation Dice (%)", title="time to accuracy")
    _grid_and_legend(ax)
    return save(fig, path, tight=True)


def sigma_trajectories(logs: Mapping[str, Sequence[dict]], path=None):
    """The learnable sigmas of the UA loss per epoch (configurations without sigmas are skipped)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, log in logs.items():
        names = sorted({k for entry in log for k in (entry.get("sigma") or {})})
        for sigma in names:
            xs, ys = _series(log, f"sigma.{sigma}")
            ax.plot(xs, ys, marker=".", label=f"{name}: sigma_{sigma}")
    ax.set(xlabel="epoch", ylabel="sigma", title="uncertainty weights sigma (Eq. 8)")
    _grid_and_legend(ax)
    if not ax.lines:
        ax.text(0.5, 0.5, "no configuration with learnable sigma", ha="center", va="center", transform=ax.transAxes)
    return save(fig, path, tight=True)


def run_curves(table, x: str = "epoch", title: str = "", path=None):
    """One run in four panels: loss components, sigmas (Eq. 8), learning rate, validation Dice per class.
    table: uu.runs.log_table(run); x: "epoch", "step" or "wall" (seconds)."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    (ax_loss, ax_sigma), (ax_lr, ax_val) = axes
    fig.suptitle(title)
    if table.empty:
        for ax in axes.flat:
            ax.text(0.5, 0.5, "no epochs logged yet", ha="center", va="center", transform=ax.transAxes)
        return save(fig, path)
    xs = table[x]
    xlabel = {"epoch": "epoch", "step": "iteration", "wall": "wall-clock seconds"}[x]
    ax_loss.plot(xs, table["loss"], "k.-", label="total")
    for col in [c for c in table.columns if c.startswith("comp_")]:
        ax_loss.plot(xs, table[col], ".-", label=col[5:])
    sigma_cols = [c for c in table.columns if c.startswith("sigma_")]
    for col in sigma_cols:
        ax_sigma.plot(xs, table[col], ".-", label=f"sigma {col[6:]}")
    if not sigma_cols:
        ax_sigma.text(0.5, 0.5, "this loss has no sigma", ha="center", va="center", transform=ax_sigma.transAxes)
    ax_lr.plot(xs, table["lr"], ".-", label="lr")
    for col in [c for c in table.columns if c.startswith("val_")]:
        rows = table[col].notna()
        ax_val.plot(xs[rows], 100 * table.loc[rows, col], "o-" if col == "val_mean" else ".--", label=col[4:])
    ax_loss.set(xlabel=xlabel, ylabel="training loss (epoch mean)", title="loss and its components")
    ax_sigma.set(xlabel=xlabel, ylabel="sigma", title="uncertainty weights (Eq. 8)")
    ax_lr.set(xlabel=xlabel, ylabel="learning rate (last step of the epoch)", title="poly learning rate")
    ax_val.set(xlabel=xlabel, ylabel="Dice (%)", title="validation Dice (sliding window)", ylim=(0, 100))
    for ax in axes.flat:
        _grid_and_legend(ax)
    return save(fig, path)


# ----------------------------------------------------------------------------- clinical indices
def bland_altman(per_patient, agreement, path=None):
    """One panel per clinical index: mean against difference per patient, with bias and limits of agreement.
    per_patient, agreement: the tables of uu.clinical (agreement indexed by "statistic")."""
    names = [n for n in INDICES if column(n) in agreement.columns]
    n_cols = max(1, min(4, len(names)))
    n_rows = max(1, -(-len(names) // n_cols))
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(3.6 * n_cols, 3.2 * n_rows), squeeze=False, constrained_layout=True
    )
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        unit, stats = INDICES[name], agreement[column(name)]
        gt, pred = per_patient[column(name, "gt")], per_patient[column(name, "pred")]
        ax.scatter((gt + pred) / 2, pred - gt, s=14)
        ax.axhline(stats["bias"], color="k", lw=1, label=f"bias {stats['bias']:.2f} {unit}")
        for key, text in (("lower limit", "bias -+ 1.96 SD"), ("upper limit", None)):
            ax.axhline(stats[key], color="gray", ls="--", lw=1, label=text)
        ax.set(
            xlabel=f"mean of prediction and ground truth ({unit})",
            ylabel=f"prediction - ground truth ({unit})",
            title=f"{name} (r {stats['Pearson r']:.3f})",
        )
        ax.title.set_fontsize(9)
        _grid_and_legend(ax)
    return save(fig, path)


# ----------------------------------------------------------------------------- calibration
def reliability_diagram(bins: Mapping[str, dict], path=None):
    """Accuracy against confidence per bin, one panel per method, ECE in the title; bins: method -> reliability_bins."""
    methods = list(bins)
    fig, axes = plt.subplots(1, len(methods), figsize=(3.4 * len(methods), 3.4), squeeze=False)
    for ax, method in zip(axes[0], methods):
        b = bins[method]
        n_bins = len(b["count"])
        edges = np.linspace(0, 1, n_bins + 1)
        accuracy = np.divide(b["correct_sum"], b["count"], out=np.zeros(n_bins), where=b["count"] > 0)
        ax.bar(edges[:-1], accuracy, width=1 / n_bins, align="edge", edgecolor="k", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", title=f"{method}\nECE {100 * ece_from_bins(b):.2f}%")
        ax.title.set_fontsize(9)
    axes[0, 0].set_ylabel("accuracy")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    return save(fig, path, tight=True)


# ----------------------------------------------------------------------------- loss landscapes
def loss_line(
    alphas: Sequence[float],
    losses: Mapping[str, Sequence[float]],
    path=None,
    ylabel: str = "loss on fixed training patches",
):
    """1D landscape: loss along w_init + alpha (w_final - w_init), one line per method."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, values in losses.items():
        ax.plot(alphas, values, marker=".", label=name)
    for a in (0, 1):
        ax.axvline(a, color="gray", lw=0.8, ls=":")
    ax.set(xlabel="alpha (0: initial weights, 1: final weights)", ylabel=ylabel, title="loss from init to final")
    _grid_and_legend(ax)
    return save(fig, path, tight=True)


def landscape_2d(
    surfaces: Mapping[str, tuple[Sequence[float], Sequence[float], np.ndarray]], path=None, levels: int = 15
):
    """2D landscapes: per method (row) a contour plot and a 3D surface; surfaces: method -> (alphas, betas,
    surface (len(alphas), len(betas))) from uu.landscape.loss_surface_2d."""
    methods = list(surfaces)
    fig = plt.figure(figsize=(9, 3.8 * len(methods)))
    for r, method in enumerate(methods):
        alphas, betas, surface = surfaces[method]
        A, B = np.meshgrid(np.asarray(alphas), np.asarray(betas), indexing="ij")
        ax = fig.add_subplot(len(methods), 2, 2 * r + 1)
        contour = ax.contour(A, B, surface, levels=levels, cmap="viridis")
        ax.clabel(contour, fontsize=6)
        ax.plot(0, 0, "r+", ms=10)
        ax.set(xlabel="direction 1", ylabel="direction 2", title=f"{method}: contour")
        ax3 = fig.add_subplot(len(methods), 2, 2 * r + 2, projection="3d")
        ax3.plot_surface(A, B, surface, cmap="viridis", linewidth=0, antialiased=True)
        ax3.set(xlabel="direction 1", ylabel="direction 2", zlabel="loss", title=f"{method}: surface")
    return save(fig, path, tight=True)


def claims_plot(claims, path=None):
    """Forest plot of the claims: our difference in mean Dice points with its 95 % interval (bar), the paper's
    difference (cross), zero (line); claims: uu.evidence.claims_table."""
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.55 * len(claims)))
    ys = np.arange(len(claims))[::-1]
    for y, (_, c) in zip(ys, claims.iterrows()):
        xerr, label = [[c["delta"] - c["ci_low"]], [c["ci_high"] - c["delta"]]], "ours (95 % interval)"
        ax.errorbar(c["delta"], y, xerr=xerr, fmt="o", color="tab:blue", capsize=4, label=label if y == ys[0] else None)
        ax.plot(c["paper"], y, "x", color="tab:red", ms=9, mew=2, label="paper" if y == ys[0] else None)
    ax.axvline(0.0, color="0.4", lw=1)
    ax.set_yticks(ys, [f"{c['claim']}\n{c['baseline']} → {c['method']}" for _, c in claims.iterrows()], fontsize=8)
    ax.set(xlabel="difference in mean Dice (points)", title="the paper's claims, paired per volume")
    _grid_and_legend(ax)
    return save(fig, path, tight=True)
