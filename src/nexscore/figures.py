"""Figures as inline SVG strings (matplotlib, no pyplot, no display needed): the report's, and
the ones stages write beside their results (exploration.svg of `nex analyze exploration`, the
neuron grid's figure of `nex ablate` / `nex transfer`).

A leaf module (numpy and, when a figure is drawn, matplotlib), so that the analyses that write
a figure and the report that embeds it both use it without depending on each other.

Every function returns an `<svg>` element ready to be placed in HTML, or None when matplotlib
is not installed (pip install 'nexscore[report]'); the report then shows a note instead.
Figures are drawn on matplotlib's SVG canvas with text kept as text (svg.fonttype none), no
date in the metadata (so the same run gives the same file) and a per-figure id salt (so the
ids of several figures in one page do not collide). `new_figure`, `style_axes` and `to_svg` are
the steps for a new figure.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np

COLORS = {"nex": "#1f6feb", "nex_vote": "#8250df", "majority_vote": "#2e7d32", "random": "#6e7781",
          "oracle": "#24292f"}
OTHER = ["#bf8700", "#cf222e", "#0a7ea4", "#a475f9", "#e16f24", "#57606a", "#1b7c83", "#953800"]
E_COLOR, X_COLOR = "#f57c00", "#1976d2"
CORRECT, WRONG = "#2e7d32", "#c62828"
MISSING = "matplotlib is not installed, so this figure is left out: pip install 'nexscore[report]'"
PROXY_AXIS = {"mean_entropy": "mean token entropy (nats)", "high_entropy_fraction": "share of high-entropy tokens",
              "explore_fraction": "share of rows labelled E"}
NEURON_SET_COLORS = {"effective": "#1f6feb", "redundant": "#cf222e", "random-effective": "#6e9bd8",
                     "random-redundant": "#e8868d", "random": "#6e7781"}
NEURON_SET_LABELS = {"effective": "most effective (largest weights)", "redundant": "most redundant (most negative)",
                     "random-effective": "random, effective set's per-layer counts",
                     "random-redundant": "random, redundant set's per-layer counts",
                     "random": "random (effective set's per-layer counts)"}


def available() -> bool:
    """Whether matplotlib can be imported (figures are drawn) or not (None is returned)."""
    try:
        import matplotlib  # noqa: F401 - deferred: optional, and heavy to import
    except ImportError:
        return False
    return True


def new_figure(w: float, h: float):
    """A matplotlib Figure of w x h inches on the SVG canvas (no pyplot state)."""
    from matplotlib.backends.backend_svg import FigureCanvasSVG  # deferred: matplotlib is optional and heavy
    from matplotlib.figure import Figure  # deferred: as above

    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasSVG(fig)
    return fig


def to_svg(fig, name: str) -> str:
    """The figure as a responsive inline `<svg>` element; `name` salts its ids and labels it."""
    import matplotlib  # deferred: matplotlib is optional and heavy

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"nex-{name}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    # responsive: drop the fixed size, keep the viewBox; cap the width at the drawn size
    head_end = text.index(">")
    head = text[:head_end]
    width = re.search(r'\swidth="([\d.]+)pt"', head)
    head = re.sub(r'\s(width|height)="[\d.]+pt"', "", head)
    cap = f"max-width:{width.group(1)}pt;" if width else ""
    head += f' class="fig" role="img" aria-label="{name}" style="width:100%;{cap}height:auto"'
    return head + text[head_end:]


def style_axes(ax, grid_axis="y"):
    """The house style: no top/right spines, a light grid on grid_axis ("x", "y" or "both")."""
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(True, axis=grid_axis, color="#e5e8ec", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=9)


def accuracy_curves(methods: dict, labels: dict) -> str | None:
    """Accuracy of best-of-n against n, one line per selection method (select.json methods)."""
    if not available():
        return None
    fig = new_figure(7.6, 3.9)
    ax = fig.add_subplot()
    k = 0
    drawn = 0
    for name, m in methods.items():
        curve = m.get("accuracy_curve") if m.get("available") else None
        if not curve:
            continue
        pts = sorted((int(n), v) for n, v in curve.items() if v is not None)
        if not pts:
            continue
        xs, ys = zip(*pts)
        style = {"color": COLORS.get(name) or OTHER[k % len(OTHER)], "linewidth": 1.2, "alpha": 0.85,
                 "marker": "o", "markersize": 3}
        if name not in COLORS:
            k += 1
        if name == "nex":
            style.update(linewidth=2.8, alpha=1.0, markersize=5, zorder=5)
        elif name == "nex_vote":
            style.update(linewidth=2.0, alpha=1.0)
        elif name == "random":
            style.update(linestyle=":", marker=None, linewidth=1.6)
        elif name == "oracle":
            style.update(linestyle="--", marker=None, linewidth=1.4)
        ax.plot(xs, ys, label=labels.get(name, name), **style)
        drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("n: candidates per problem the selector chooses from", fontsize=10)
    ax.set_ylabel("accuracy of the chosen trace", fontsize=10)
    ax.xaxis.get_major_locator().set_params(integer=True)
    style_axes(ax, "both")
    ax.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return to_svg(fig, "accuracy-versus-n")


def gmf_figure(gmf: np.ndarray, correct: np.ndarray, auroc: float | None) -> str | None:
    """GMF of correct and incorrect traces: overlaid histograms and a strip plot."""
    if not available():
        return None
    gmf = np.asarray(gmf, float)
    correct = np.asarray(correct, float)
    ok = np.isfinite(gmf) & np.isfinite(correct)
    good, bad = gmf[ok & (correct == 1)], gmf[ok & (correct == 0)]
    if good.size + bad.size == 0:
        return None
    fig = new_figure(7.6, 3.0)
    ax, ax2 = fig.subplots(1, 2, width_ratios=[1.5, 1])
    lo, hi = float(np.min(gmf[ok])), float(np.max(gmf[ok]))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.01, hi + 0.01
    edges = np.linspace(lo, hi, 26)
    for vals, color, name in ((good, CORRECT, "correct"), (bad, WRONG, "incorrect")):
        if vals.size:
            ax.hist(vals, bins=edges, color=color, alpha=0.45, label=f"{name} (n={vals.size})",
                    density=True, edgecolor=color, linewidth=0.6)
            ax.axvline(float(np.median(vals)), color=color, linewidth=1.5, linestyle="--")
    ax.set_xlabel("GMF (Good-Mass Fraction) of a trace", fontsize=10)
    ax.set_ylabel("density", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    style_axes(ax)
    rng = np.random.default_rng(0)
    for pos, (vals, color) in enumerate(((good, CORRECT), (bad, WRONG))):
        if vals.size:
            ax2.scatter(vals, pos + rng.uniform(-0.18, 0.18, vals.size), s=9, color=color, alpha=0.6,
                        linewidths=0)
            med = float(np.median(vals))
            ax2.plot([med, med], [pos - 0.3, pos + 0.3], color="#24292f", linewidth=1.6)
    ax2.set_yticks([0, 1], ["correct", "incorrect"])
    ax2.set_ylim(-0.6, 1.6)
    ax2.set_xlabel("GMF (bar: median)", fontsize=10)
    style_axes(ax2, "x")
    if auroc is not None and math.isfinite(auroc):
        ax2.set_title(f"AUROC {auroc:.3f} (0.5 = chance)", fontsize=9, loc="left")
    return to_svg(fig, "gmf-correct-incorrect")


def weight_histogram(values: np.ndarray, n_zero: int) -> str | None:
    """Histogram of the non-zero neuron weights."""
    if not available() or values.size == 0:
        return None
    fig = new_figure(5.2, 2.9)
    ax = fig.add_subplot()
    edges = np.linspace(-1, 1, 41)
    counts, _ = np.histogram(values, edges)
    centres = (edges[:-1] + edges[1:]) / 2
    ax.bar(centres, counts, width=edges[1] - edges[0], color=np.where(centres > 0, CORRECT, WRONG),
           alpha=0.75, linewidth=0)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("neuron weight w  (−1 redundant … +1 effective)", fontsize=10)
    ax.set_ylabel("neurons (log scale)", fontsize=10)
    ax.set_title(f"{values.size:,} credited neurons; {n_zero:,} seen but never credited (w = 0)",
                 fontsize=9, loc="left")
    style_axes(ax)
    return to_svg(fig, "weight-histogram")


def layer_figure(layers: list[int], n_pos: np.ndarray, n_neg: np.ndarray,
                 mass_share: np.ndarray | None) -> str | None:
    """Per layer: effective (up) and redundant (down) neuron counts, and the layer's share of mass."""
    if not available() or not layers:
        return None
    fig = new_figure(7.6, 3.0)
    ax = fig.add_subplot()
    x = np.asarray(layers)
    ax.bar(x, n_pos, color=CORRECT, alpha=0.8, label="effective (w > 0)", width=0.8)
    ax.bar(x, -np.asarray(n_neg), color=WRONG, alpha=0.8, label="redundant (w < 0)", width=0.8)
    ax.axhline(0, color="#57606a", linewidth=0.8)
    ax.set_xlabel("layer", fontsize=10)
    ax.set_ylabel("neurons (redundant below 0)", fontsize=10)
    ax.xaxis.get_major_locator().set_params(integer=True)
    style_axes(ax)
    handles, names = ax.get_legend_handles_labels()
    if mass_share is not None:
        ax2 = ax.twinx()
        ax2.plot(x, 100 * np.asarray(mass_share), color="#24292f", marker=".", linewidth=1.2,
                 label="share of activation mass (%)")
        ax2.set_ylabel("% of the run's activation mass", fontsize=9)
        ax2.tick_params(labelsize=9)
        ax2.spines["top"].set_visible(False)
        ax2.set_ylim(bottom=0)
        h2, n2 = ax2.get_legend_handles_labels()
        handles, names = handles + h2, names + n2
    ax.legend(handles, names, fontsize=8, frameon=False, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3)
    return to_svg(fig, "neurons-by-layer")


def exploration_figure(result: dict) -> str | None:
    """The inverted U: accuracy per equal-count bin (bootstrap CI) and the quadratic fit, per proxy."""
    if not available():
        return None
    proxies = {k: v for k, v in (result.get("proxies") or {}).items() if v.get("available") and v.get("bins")}
    if not proxies:
        return None
    fig = new_figure(3.0 * len(proxies) + 0.6, 3.1)
    axes = fig.subplots(1, len(proxies), sharey=True, squeeze=False)[0]
    for ax, (name, p) in zip(axes, proxies.items()):
        bins = p["bins"]
        xs = np.array([b["centre"] for b in bins], float)
        ys = np.array([b["accuracy"] for b in bins], float)
        lo = np.array([b["ci"][0] if b["ci"][0] is not None else np.nan for b in bins], float)
        hi = np.array([b["ci"][1] if b["ci"][1] is not None else np.nan for b in bins], float)
        ax.errorbar(xs, ys, yerr=[np.clip(ys - lo, 0, None), np.clip(hi - ys, 0, None)], fmt="o",
                    color="#1f6feb", ecolor="#8c959f", capsize=3, markersize=5, label="bin accuracy (95% CI)")
        fit = p.get("fit") or {}
        curve = fit.get("curve")
        if curve:
            ax.plot(curve["x"], curve["y"], color=E_COLOR, linewidth=1.8, label="quadratic fit (traces)")
        v = fit.get("vertex")
        if v is not None and fit.get("vertex_in_range"):
            ax.axvline(v, color=E_COLOR, linestyle=":", linewidth=1.2)
        shape = fit.get("shape") or ""
        c = fit.get("c")
        ax.set_title(f"{shape}" + (f"\nc = {c:.3g}" if c is not None else ""), fontsize=8.5, loc="left")
        ax.set_xlabel(PROXY_AXIS.get(name, name), fontsize=9)
        style_axes(ax, "both")
    axes[0].set_ylabel("accuracy", fontsize=10)
    axes[0].legend(fontsize=7.5, frameon=False, loc="lower left")
    return to_svg(fig, "inverted-u")


def neuron_grid_figure(doc: dict) -> str | None:
    """`nex ablate` / `nex transfer`: accuracy change (points) against m for each neuron set and
    each random control, with 95 % paired intervals, one panel per arm (the model the weights were
    learned on); zero is the unedited model, and for a transfer a dashed line marks the donor.
    None without matplotlib or data."""
    if not available() or not doc.get("summary") or not doc.get("base"):
        return None
    kind = doc.get("kind", "ablate")
    arms = list(dict.fromkeys(r.get("arm", "") for r in doc["summary"]))
    fig = new_figure(4.4 * len(arms) + 2.8, 3.6)
    axes = fig.subplots(1, len(arms), sharey=True, squeeze=False)[0]
    ms = sorted({r["m"] for r in doc["summary"]})
    names = list(dict.fromkeys(r["set"] for r in doc["summary"]))
    offsets = np.linspace(0.94, 1.06, len(names)) if len(names) > 1 else [1.0]
    gap = (doc.get("donor_gap") or {}).get("value")
    for ax, arm in zip(axes, arms):
        ax.axhline(0.0, color="#24292f", linewidth=1.2,
                   label="unedited " + ("model" if kind == "ablate" else "recipient"))
        if kind == "transfer" and gap is not None:
            ax.axhline(100 * gap, color="#8250df", linestyle="--", linewidth=1.2, label="donor")
        for name, off in zip(names, offsets):
            rows = sorted((r for r in doc["summary"] if r["set"] == name and r.get("arm", "") == arm),
                          key=lambda r: r["m"])
            if not rows:
                continue
            xs = [r["m"] * off for r in rows]
            ys = [100 * r["change"] for r in rows]
            err = [[100 * (r["change"] - r["change_ci95"][0]) for r in rows],
                   [100 * (r["change_ci95"][1] - r["change"]) for r in rows]]
            ax.errorbar(xs, ys, yerr=err, color=NEURON_SET_COLORS.get(name, "#57606a"), marker="o", markersize=4,
                        linewidth=1.6, capsize=3, label=NEURON_SET_LABELS.get(name, name),
                        linestyle=":" if name.startswith("random") else "-")
        ax.set_xscale("log", base=2)
        ax.set_xlim(min(ms) / 1.5, max(ms) * 1.5)
        ax.set_xticks(ms)
        ax.set_xticklabels([str(m) for m in ms])
        ax.minorticks_off()
        what = "ablated" if kind == "ablate" else "transplanted"
        ax.set_xlabel(f"m: neurons {what}", fontsize=10)
        if len(arms) > 1 or kind == "transfer":
            ax.set_title(f"weights learned on the {arm}", fontsize=10)
        style_axes(ax, "both")
    axes[0].set_ylabel("accuracy change (points)", fontsize=10)
    axes[-1].legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return to_svg(fig, f"neuron-{kind}")
