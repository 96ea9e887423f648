"""`moe-unlearn inspect`: per-layer expert selection counts of a model over a JSONL text file.

    moe-unlearn inspect MODEL --data texts.jsonl --out stats.json [--plot heatmap.png]

stats.json: {"model": ..., "tokens": <non-padding tokens>, "layers": [{"name": <MoE block path>,
"num_experts": E, "top_k": k, "counts": [E ints: tokens whose selection includes the expert]}]}
The work is in eval/expert_stats.py, imported when the command runs (--help stays fast).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from moe_unlearn.cli.app import app
from moe_unlearn.errors import UserError
from moe_unlearn.paths import atomic_write, check_destination


@app.command("inspect")
def inspect_command(
    model: str = typer.Argument(..., help="Model directory or hub id."),
    data: Path = typer.Option(..., "--data", help="JSONL (one object per line), Parquet or CSV file with a text field."),
    out: Path = typer.Option(..., "--out", help="Where to write stats.json."),
    text_field: str = typer.Option("text", "--text-field", help="Name of the text field in each record."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1, help="Stop after this many tokens."),
    plot: Path | None = typer.Option(None, "--plot", help="Also write a layer x expert heatmap (PNG)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    max_length: int = typer.Option(512, "--max-length", min=1, help="Truncate each text to this many tokens."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run the model repo's own code."),
    allow_missing_weights: bool = typer.Option(False, "--allow-missing-weights",
                                               help="Accept weight files that lack tensors (left at random values)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Count which experts each MoE layer selects over a text file."""
    from moe_unlearn.data import load_records
    from moe_unlearn.eval.expert_stats import encode, plot_heatmap, routing_stats
    from moe_unlearn.models import load_model

    if quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    inputs = [("model dir", model), ("--data file", data)]
    out_path = check_destination(out, inputs)
    plot_path = check_destination(plot, inputs, what="--plot") if plot is not None else None
    if plot_path == out_path:
        raise UserError(f"--plot {plot} and --out {out} name the same file; give the heatmap its own .png")
    texts = [r["text"] for r in load_records(data, kind="text", fields={"text": text_field})]
    net, tokenizer = load_model(model, device=device, trust_remote_code=trust_remote_code,
                                allow_missing=allow_missing_weights)
    sequences = encode(tokenizer, texts, max_tokens, max_length)
    if not sequences:
        raise UserError(f"{data}: the texts encode to no tokens")
    stats = routing_stats(net, tokenizer, sequences, batch_size=batch_size, name=model,
                          progress=not quiet)
    atomic_write(out_path, json.dumps(stats, indent=2) + "\n")
    if plot_path is not None:
        plot_heatmap(stats, plot_path)
    typer.echo(f"{stats['tokens']} tokens, {len(stats['layers'])} MoE layers -> {out_path}")
