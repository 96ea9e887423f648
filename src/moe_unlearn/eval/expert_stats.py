"""Expert selection counts of a model over texts (`moe-unlearn inspect`), and their heatmap."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from moe_unlearn.core.chunked import no_logits
from moe_unlearn.data.tokenize import clip, pad_id
from moe_unlearn.models import capture_routing, moe_layers
from moe_unlearn.paths import atomic_path


def encode(tokenizer, texts: list[str], max_tokens: int | None, max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to max_length and, overall, to the first max_tokens tokens."""
    encoded = tokenizer([clip(t, max_length) for t in texts], truncation=True, max_length=max_length)["input_ids"]
    kept, budget = [], max_tokens
    for ids in encoded:
        if budget is not None:
            ids = ids[:budget]
            budget -= len(ids)
        if ids:
            kept.append(list(ids))
        if budget == 0:
            break
    return kept


def _pad(batch: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input_ids [B, S] and attention_mask [B, S]."""
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
    return input_ids.to(device), mask.to(device)


def routing_stats(model, tokenizer, sequences: list[list[int]], *, batch_size: int, name: str,
                  progress: bool = True) -> dict:
    """Run every sequence under no_grad and count expert selections per MoE layer."""
    layers = moe_layers(model)
    counts = [torch.zeros(layer.num_experts, dtype=torch.long) for layer in layers]
    pad = pad_id(tokenizer)
    device = next(model.parameters()).device
    tokens = 0
    starts = range(0, len(sequences), batch_size)
    with torch.no_grad():
        for start in tqdm(starts, desc="inspect", unit="batch", disable=not progress):
            input_ids, mask = _pad(sequences[start : start + batch_size], pad, device)
            with capture_routing(model) as cap:  # one capture per batch keeps memory flat
                model(input_ids=input_ids, attention_mask=mask, **no_logits(model, device))  # routing only
            tokens += cap.tokens
            for i in range(len(layers)):
                counts[i] += cap.counts(i).cpu()
    return {
        "model": name,
        "tokens": tokens,
        "layers": [{"name": layer.name, "num_experts": layer.num_experts, "top_k": layer.top_k,
                    "counts": counts[i].tolist()} for i, layer in enumerate(layers)],
    }


def plot_heatmap(stats: dict, path: Path) -> None:
    """Layer x expert heatmap of activation frequency (share of tokens routed to the expert)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = max(stats["tokens"], 1)
    width = max(layer["num_experts"] for layer in stats["layers"])
    grid = torch.full((len(stats["layers"]), width), float("nan"))
    for i, layer in enumerate(stats["layers"]):
        grid[i, : layer["num_experts"]] = torch.tensor(layer["counts"], dtype=torch.float) / tokens
    rows, cols = grid.shape
    fig, ax = plt.subplots(figsize=(min(3 + 0.6 * cols, 24), min(2 + 0.45 * rows, 18)))
    image = ax.imshow(grid.numpy(), aspect="auto", cmap="viridis", vmin=0)
    if rows * cols <= 600:  # annotate when the numbers stay legible
        peak = float(torch.nan_to_num(grid).max()) or 1.0
        for r in range(rows):
            for c in range(cols):
                value = float(grid[r, c])
                if value == value:
                    ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if value > 0.6 * peak else "white")
    ax.set_xlabel("expert")
    ax.set_ylabel("MoE layer")
    ax.set_yticks(range(rows), [f"{i}" for i in range(rows)])
    if cols <= 64:
        ax.set_xticks(range(cols))
    k = stats["layers"][0]["top_k"]
    ax.set_title(f"Expert activation frequency ({stats['tokens']} tokens, top-{k}; rows sum to k)")
    fig.colorbar(image, ax=ax, label="fraction of tokens")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
