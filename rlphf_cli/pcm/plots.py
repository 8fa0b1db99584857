"""Pictures of the PCM's routing: its weights over the experts, token by token, one response per combination."""

from __future__ import annotations

from pathlib import Path

import torch

# One colour per dimension's expert, the same in every panel (dimension 1, 2, 3, ...).
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def plot_token_weights(examples: list[dict], path: Path) -> Path:
    """`examples`: dicts with `combination` (pole names), `tokens` (strings) and `weights` [T, K].

    One panel per example: the weights as stacked bars under each generated token, coloured by expert.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = max(len(e["tokens"]) for e in examples)
    fig, axes = plt.subplots(
        len(examples), 1, figsize=(max(8.0, 0.28 * width), 1.9 * len(examples)), squeeze=False
    )
    for ax, ex in zip(axes[:, 0], examples, strict=True):
        w = torch.as_tensor(ex["weights"]).float()
        x = torch.arange(w.shape[0])
        bottom = torch.zeros(w.shape[0])
        for k, pole in enumerate(ex["combination"]):
            ax.bar(x, w[:, k], bottom=bottom, width=1.0, color=COLOURS[k % len(COLOURS)], label=pole)
            bottom += w[:, k]
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(0, 1)
        ax.set_xticks(x.tolist())
        ax.set_xticklabels(ex["tokens"], rotation=90, fontsize=7)
        ax.set_ylabel("weight")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        ax.set_title(" + ".join(ex["combination"]), fontsize=9, loc="left")
    fig.suptitle("PCM weights over the experts, token by token (one held-out response per combination)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
