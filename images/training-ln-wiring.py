"""Draw images/training-ln-wiring.svg: Post-LN and Pre-LN residual wiring side by side.

Used by the chapter "Training dynamics" (chapters/05-training). Regenerate with
    python images/training-ln-wiring.py
The output is deterministic (fixed SVG hash salt, no date), so re-running gives no diff.
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

plt.rcParams["svg.hashsalt"] = "training-ln-wiring"
plt.rcParams["svg.fonttype"] = "none"  # keep text as text

SKIP_POST, SKIP_PRE = "#c0392b", "#1e8449"
BOX = dict(boxstyle="round,pad=0.02,rounding_size=0.08", linewidth=1.2)


def box(ax, x, y, text, color):
    ax.add_patch(FancyBboxPatch((x - 0.85, y - 0.22), 1.7, 0.44, facecolor=color,
                                edgecolor="black", **BOX))
    ax.text(x, y, text, ha="center", va="center", fontsize=11)


def plus(ax, x, y):
    ax.add_patch(plt.Circle((x, y), 0.17, facecolor="white", edgecolor="black", lw=1.2))
    ax.text(x, y - 0.01, "+", ha="center", va="center", fontsize=14)


def arrow(ax, points, color="black", lw=1.4):
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        last = (x1, y1) == points[-1]
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>" if last else "-",
                                     mutation_scale=12, color=color, lw=lw,
                                     shrinkA=0, shrinkB=0))


def main() -> None:
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 5.2))
    for ax in axes:
        ax.set_xlim(-1.2, 2.0)
        ax.set_ylim(-0.4, 5.0)
        ax.axis("off")

    # Post-LN: x_{t+1} = LN(x_t + F(x_t))
    ax = axes[0]
    ax.set_title("Post-LN (original Transformer)\n$x_{t+1} = \\mathrm{LN}(x_t + F_t(x_t))$", fontsize=11)
    ax.text(0, -0.2, "$x_t$", ha="center", fontsize=12)
    arrow(ax, [(0, 0.05), (0, 1.08)])
    box(ax, 0, 1.3, "$F_t$ (attention or FFN)", "#d6eaf8")
    arrow(ax, [(0, 1.52), (0, 2.43)])
    plus(ax, 0, 2.6)
    arrow(ax, [(0, 0.5), (1.15, 0.5), (1.15, 2.6), (0.17, 2.6)], color=SKIP_POST, lw=2.2)
    arrow(ax, [(0, 2.77), (0, 3.28)], color=SKIP_POST, lw=2.2)
    box(ax, 0, 3.5, "LayerNorm", "#fadbd8")
    arrow(ax, [(0, 3.72), (0, 4.45)], color=SKIP_POST, lw=2.2)
    ax.text(0, 4.55, "$x_{t+1}$", ha="center", fontsize=12)
    ax.text(1.25, 1.55, "skip path\nthen LN", color=SKIP_POST, fontsize=9, ha="left")

    # Pre-LN: x_{t+1} = x_t + F(LN(x_t))
    ax = axes[1]
    ax.set_title("Pre-LN (GPT-2/3, LLaMA)\n$x_{t+1} = x_t + F_t(\\mathrm{LN}(x_t))$", fontsize=11)
    ax.text(0, -0.2, "$x_t$", ha="center", fontsize=12)
    arrow(ax, [(0, 0.05), (0, 0.98)])
    box(ax, 0, 1.2, "LayerNorm", "#fadbd8")
    arrow(ax, [(0, 1.42), (0, 2.08)])
    box(ax, 0, 2.3, "$F_t$ (attention or FFN)", "#d6eaf8")
    arrow(ax, [(0, 2.52), (0, 3.33)])
    plus(ax, 0, 3.5)
    arrow(ax, [(0, 0.5), (1.15, 0.5), (1.15, 3.5), (0.17, 3.5)], color=SKIP_PRE, lw=2.2)
    arrow(ax, [(0, 3.67), (0, 4.45)], color=SKIP_PRE, lw=2.2)
    ax.text(0, 4.55, "$x_{t+1}$", ha="center", fontsize=12)
    ax.text(1.25, 1.9, "identity\npath", color=SKIP_PRE, fontsize=9, ha="left")

    fig.tight_layout()
    out = Path(__file__).with_suffix(".svg")
    fig.savefig(out, format="svg", metadata={"Date": None})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
