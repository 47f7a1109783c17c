"""Drawing attention maps (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch


def visualize_attention_map(attention_map: torch.Tensor, save_path: Optional[Union[str, Path]] = None,
                            title: str = "Attention", grid_size: Optional[tuple[int, int]] = None):
    """Draw a ``(N, N)`` (or ``(B, N, N)``, first image) attention map; return the figure.

    With ``grid_size=(gh, gw)`` (``AttentionMaps.grid_size``) a second panel shows the attention
    each patch receives, averaged over queries, laid over the token grid. Saved as PNG when
    ``save_path`` is given.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    amap = attention_map.detach().float().cpu()
    if amap.dim() == 3:
        amap = amap[0]
    if amap.dim() != 2 or amap.shape[0] != amap.shape[1]:
        raise ValueError(f"expected an (N, N) or (B, N, N) attention map, got shape {tuple(attention_map.shape)}")
    panels = 2 if grid_size else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels + 1, 4.5), squeeze=False)
    im = axes[0][0].imshow(amap.numpy(), cmap="viridis", aspect="auto")
    axes[0][0].set_xlabel("key token")
    axes[0][0].set_ylabel("query token")
    axes[0][0].set_title("weights (rows sum to 1)")
    fig.colorbar(im, ax=axes[0][0])
    if grid_size:
        gh, gw = grid_size
        if gh * gw != amap.shape[0]:
            raise ValueError(f"grid_size {grid_size} has {gh * gw} tokens but the map has {amap.shape[0]}")
        received = amap.mean(dim=0).reshape(gh, gw)
        im2 = axes[0][1].imshow(received.numpy(), cmap="magma", aspect="auto")
        axes[0][1].set_title("attention received per patch")
        axes[0][1].set_xlabel("patch column")
        axes[0][1].set_ylabel("patch row")
        fig.colorbar(im2, ax=axes[0][1])
    fig.suptitle(title)
    fig.tight_layout()
    if save_path is not None:
        Path(save_path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save_path, dpi=100)
        plt.close(fig)
    return fig
