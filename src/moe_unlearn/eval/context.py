"""EvalContext: the model, the eval sets and the forward passes metrics share.

A metric never runs the model itself for data another metric also needs: the QA pass (token
scores + routing capture), the text pass and the MC pass run once per split and are memoised
here. `EvalCache` keeps metric results across calls, keyed by (model fingerprint, metric,
split, data fingerprint), so re-evaluating an unchanged model costs nothing, and the encoded
eval sets, keyed by (set, data fingerprint), so a run's periodic evaluations tokenize once.

Under several processes each pass cuts every global batch (eval.batch_size rows per process)
into per-process row blocks (core.dist.shard_rows); token scores are gathered so every process
holds every example's scores in order, while routing captures stay per process (routing metrics
reduce their sums themselves).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from moe_unlearn.core.chunked import ChunkedLogits, forward_takes, lm_forward
from moe_unlearn.data.tokenize import collate, pad_id, to_device
from moe_unlearn.eval.batches import Batch, make_batches, mc_examples, qa_examples, shared_prompt, text_examples
from moe_unlearn.eval.config import EvalConfig
from moe_unlearn.eval.metric import METRICS, MetricResult
from moe_unlearn.core.dist import shard_rows, world_size
from moe_unlearn.eval.scores import TokenStats, gather_examples, token_stats
from moe_unlearn.models import capture_routing
from moe_unlearn.vocab import SPLITS

# eval sets beyond the three splits: the utility MC set and TOFU's QA sets (real authors, world facts)
EXTRA_SETS = ("utility", "real_authors", "world_facts")


@dataclass
class QAPass:
    """Answer-token scores of one split's QA set (every example) and the routing of this
    process's rows of the same forwards; rows[c] are the example indices of captured call c
    (-1 for a placeholder row)."""

    stats: TokenStats
    routing: Any  # RoutingCapture
    rows: list[list[int]]


def model_fingerprint(model: torch.nn.Module) -> str:
    """Short hash of every parameter's name, shape and exact sum and norm (on device, accumulated
    in float64 without a float64 copy of the weights)."""
    h = hashlib.sha1()
    with torch.no_grad():
        for name, p in model.named_parameters():
            x = p.detach()
            total = float(torch.sum(x, dtype=torch.float64))
            norm = float(torch.linalg.vector_norm(x, dtype=torch.float64))
            h.update(f"{name}{tuple(p.shape)}{total.hex()}{norm.hex()}".encode())
    return h.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """What the encoded eval sets depend on besides the records: the tokenizer's kind, vocabulary
    size, special tokens and chat template."""
    parts = [type(tokenizer).__name__, len(tokenizer), getattr(tokenizer, "all_special_ids", []),
             getattr(tokenizer, "chat_template", None)]
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:16]


class EvalCache:
    """Metric results keyed by (model fingerprint, metric, split, data fingerprint) and encoded
    eval sets keyed by (set, split, data fingerprint), in memory. Keys name their content, so one
    cache may serve several models (a run's periodic and final evaluations; every run of the
    demo, whose step-0 evaluation is the original model's); it pickles to worker processes."""

    def __init__(self) -> None:
        self._results: dict[tuple[str, str, str, str], Any] = {}
        self.encodings: dict[tuple[str, str, str], Any] = {}
        self.hits = 0  # results served from the cache

    def get(self, key: tuple[str, str, str, str]) -> Any:
        hit = self._results.get(key)
        self.hits += hit is not None
        return hit

    def put(self, key: tuple[str, str, str, str], value: Any) -> None:
        self._results[key] = value

    def __len__(self) -> int:
        return len(self._results)


@dataclass
class EvalContext:
    """One model under evaluation: metrics read its memoised passes and each other's results."""

    model: torch.nn.Module
    tokenizer: Any
    data: Any  # UnlearnData
    cfg: EvalConfig
    original_routing: dict[str, Any] | None = None  # {split: RoutingCapture} of the original model
    retrained: dict[str, Any] | None = None  # metrics.json of a retain-only model (TOFU, PrivLeak)
    progress: bool = False
    cache: EvalCache | None = None
    fingerprint: str | None = None  # the model's model_fingerprint, when the caller has it for these weights
    _memo: dict[tuple, Any] = field(default_factory=dict)

    def result(self, name: str, split: str | None = None) -> MetricResult | None:
        """Run metric `name` (on `split` for split metrics) once; reuse it from the cache."""
        key = ("result", name, split)
        if key in self._memo:
            return self._memo[key]
        m = METRICS.get(name)

        def compute() -> MetricResult | None:
            return m.fn(self, split) if m.scope == "split" else m.fn(self)

        res = self.cached(name, split or "-", compute) if m.cacheable else compute()
        self._memo[key] = res
        return res

    def cached(self, name: str, split: str, compute: Any) -> Any:
        """compute(), or what it returned for these weights on this data before (with a cache);
        the value must not be modified by its readers."""
        if self.cache is None:
            return compute()
        fp = self.fingerprint or self.memo(("model_fp",), lambda: model_fingerprint(self.model))
        ckey = (fp, name, split, self.data_fingerprint())
        hit = self.cache.get(ckey)
        if hit is not None:
            return hit[0]
        value = compute()
        self.cache.put(ckey, (value,))
        return value

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def pad_id(self) -> int:
        return pad_id(self.tokenizer)

    # ---- data ---------------------------------------------------------------------------
    def records(self, split: str, kind: str) -> list[dict] | None:
        """The first cfg.max_examples records of split's `kind` set (qa | text | mc), or None."""
        if split == "utility":  # UnlearnData.utility_mc: an MC record list (or a Split)
            holder = getattr(self.data, "utility_mc", None)
            recs = getattr(holder, "mc", holder) if kind == "mc" else None
        else:
            holder = getattr(self.data, split, None)
            recs = getattr(holder, kind, None) if holder is not None else None
        if not recs:
            return None
        return list(recs[: self.cfg.max_examples] if self.cfg.max_examples else recs)

    def data_fingerprint(self) -> str:
        """Hash of every eval record used, the eval settings, the retrained reference and the tokenizer."""
        key = ("data_fp",)
        if key not in self._memo:
            blob = {s: {k: self.records(s, k) for k in ("qa", "text", "mc", "completion")} for s in (*SPLITS, *EXTRA_SETS)}
            cfg = {k: v for k, v in vars(self.cfg).items() if k not in ("metrics", "relearn", "lm_eval")}
            parts = [blob, cfg, vars(self.cfg.relearn), vars(self.cfg.lm_eval), self.retrained,
                     tokenizer_fingerprint(self.tokenizer)]
            raw = json.dumps(parts, sort_keys=True, default=str)
            self._memo[key] = hashlib.sha1(raw.encode()).hexdigest()[:16]
        return self._memo[key]

    def qa_batches(self, split: str) -> list[Batch]:
        """The split's QA eval set in its fixed batches (what routing captures line up with)."""
        return self.encoded(("qa_batches", split), lambda: make_batches(
            qa_examples(self.tokenizer, self.records(split, "qa") or [], self.cfg), self.global_batch, self.pad_id))

    def encoded(self, key: tuple[str, ...], compute: Any) -> Any:
        """An encoded eval set: memoised here and, with a cache, across evaluations of the same
        data (the value must not be modified by its readers)."""
        def shared() -> Any:
            ckey = (*key, self.data_fingerprint())
            if ckey not in self.cache.encodings:
                self.cache.encodings[ckey] = compute()
            return self.cache.encodings[ckey]

        return self.memo(key, compute if self.cache is None else shared)

    @property
    def global_batch(self) -> int:
        """Rows of one eval batch over all processes (eval.batch_size per process)."""
        return self.cfg.batch_size * world_size()

    # ---- forward passes -----------------------------------------------------------------
    def _forward(self, batch: Batch) -> ChunkedLogits:
        batch = to_device(batch, self.device)
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        return lm_forward(self.model, inputs, chunk=self.cfg.loss_chunk)[1]

    def score(self, batch_list: list[Batch], *, moments: bool = False, desc: str = "") -> TokenStats:
        """Token scores of every example of every batch, in order, under no_grad (each process
        scores its rows; the scores are gathered)."""
        return self._score(batch_list, moments=moments, desc=desc)[0]

    def _score(self, batch_list: list[Batch], *, moments: bool, desc: str) -> tuple[TokenStats, list[list[int]]]:
        mine, rows = TokenStats(), []
        with torch.no_grad():
            for batch in tqdm(batch_list, desc=desc, disable=not self.progress, leave=False):
                local = shard_rows(batch)
                mine.extend(token_stats(self._forward(local), local["labels"].to(self.device), moments=moments))
                rows.append(local["index"].tolist())
        return gather_examples(mine, [i for r in rows for i in r]), rows

    def qa_pass(self, split: str) -> QAPass | None:
        """Answer-token scores of split's QA set, with the routing of the same forwards."""
        key = ("qa_pass", split)
        if key not in self._memo:
            bl = self.qa_batches(split)
            if not bl:
                self._memo[key] = None
            else:
                with capture_routing(self.model) as cap:
                    stats, rows = self._score(bl, moments=False, desc=f"eval {split} QA")
                self._memo[key] = QAPass(stats, cap, rows)
        return self._memo[key]

    def text_stats(self, split: str) -> TokenStats | None:
        """All-token scores (with Min-k%++ moments) of split's text set; None without texts."""
        key = ("text", split)
        if key not in self._memo:
            recs = self.records(split, "text")
            if not recs:
                self._memo[key] = None
            else:
                bl = self.encoded(("text_batches", split), lambda: make_batches(
                    text_examples(self.tokenizer, recs, self.cfg), self.global_batch, self.pad_id))
                self._memo[key] = self.score(bl, moments=True, desc=f"eval {split} text")
        return self._memo[key]

    def mc_loglik(self, split: str) -> tuple[list[torch.Tensor], list[int]] | None:
        """Per MC record: summed log-likelihood of each choice [C]; and the answer indices."""
        key = ("mc", split)
        if key not in self._memo:
            recs = self.records(split, "mc")
            if not recs:
                self._memo[key] = None
            else:
                examples, sizes = self.encoded(("mc_examples", split), lambda: mc_examples(self.tokenizer, recs, self.cfg))
                flat = self.shared_prompt_logliks(examples, sizes, desc=f"eval {split} MC")
                self._memo[key] = (list(torch.split(flat, sizes)), [int(r["answer"]) for r in recs])
        return self._memo[key]

    def shared_prompt_logliks(self, examples: list[dict], sizes: list[int], *, desc: str) -> torch.Tensor:
        """[N] summed answer log-likelihood of every (question, answer) example, in order, the
        examples in groups of `sizes` (one record's choices or answers to the same question).

        A group whose examples share their prompt runs the prompt once (less its last token)
        and its answers as continuations over a copy of that cache: about half the tokens of
        scoring every example in full on short-answer sets, the same numbers up to float rounding.
        Groups without a shared prompt, several processes (rows are sharded per batch) and
        models whose cache is not every position's attention keys and values score every example
        in full.
        """
        out = torch.empty(len(examples))
        starts = [0, *itertools.accumulate(sizes)][:-1]
        shared = [] if world_size() > 1 else [(i, g) for i, n in zip(starts, sizes)
                                              if (g := shared_prompt(examples[i:i + n])) is not None]
        with torch.no_grad():
            for at in tqdm(range(0, len(shared), self.cfg.batch_size), desc=desc, disable=not self.progress, leave=False):
                chunk = shared[at:at + self.cfg.batch_size]
                scores = self._continuations([g for _, g in chunk])
                if scores is None:  # the cache cannot be reused this way: every record in full
                    shared = []
                    break
                for (i, (_, tails)), row in zip(chunk, scores.split([len(g[1]) for _, g in chunk])):
                    out[i:i + len(tails)] = row
        done = {i + j for i, (_, tails) in shared for j in range(len(tails))}
        rest = [k for k in range(len(examples)) if k not in done]
        if rest:
            bl = make_batches([examples[k] for k in rest], self.global_batch, self.pad_id)
            out[rest] = self.score(bl, desc=desc).sum_logp().to(out.dtype)
        return out

    def _continuations(self, groups: list[tuple[list[int], list[dict]]]) -> torch.Tensor | None:
        """Summed answer log-likelihood of every tail of every (prefix, tails) group, the prefixes
        run once; None when the model's cache holds anything but every past position's attention
        keys and values (linear attention, sliding windows: gpt-oss)."""
        argument = _cache_argument(self.model)
        if argument is None:
            return None
        pre = to_device(collate([{"input_ids": p, "labels": p} for p, _ in groups], self.pad_id), self.device)
        out, _ = lm_forward(self.model, {"input_ids": pre["input_ids"], "attention_mask": pre["attention_mask"],
                                         "use_cache": True}, chunk=self.cfg.loss_chunk)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)  # transformers >= 5.25: cache
        # a sliding-window layer keeps the last positions of the right-padded prefixes (pads for
        # a short one); a linear-attention state has folded the pads in
        if not isinstance(cache, DynamicCache) or any(cache.is_linear) or any(cache.is_sliding):
            return None
        owner = [g for g, (_, tails) in enumerate(groups) for _ in tails]
        tails = [t for _, ts in groups for t in ts]
        length = pre["attention_mask"].sum(1)
        scores = torch.empty(len(tails))
        # tails sorted by length, batch_size rows per forward: each pads to its own longest tail
        # (one forward over all tails padded every answer to the longest of any: 34-42% of the
        # demo's tail tokens were padding)
        order = sorted(range(len(tails)), key=lambda k: len(tails[k]["input_ids"]))
        for at in range(0, len(order), self.cfg.batch_size):
            rows = order[at:at + self.cfg.batch_size]
            rows_cache = copy.deepcopy(cache)
            who = torch.tensor([owner[k] for k in rows], device=self.device)
            rows_cache.batch_select_indices(who)
            tail = to_device(collate([tails[k] for k in rows], self.pad_id), self.device)
            inputs = {"input_ids": tail["input_ids"], argument: rows_cache, "use_cache": True,
                      "attention_mask": torch.cat([pre["attention_mask"][who], tail["attention_mask"]], dim=1),
                      "position_ids": length[who][:, None] + torch.arange(tail["input_ids"].shape[1], device=self.device)}
            _, lm = lm_forward(self.model, inputs, chunk=self.cfg.loss_chunk)
            scores[rows] = token_stats(lm, tail["labels"]).sum_logp().to(scores.dtype)
        return scores

    def memo(self, key: tuple, compute: Any) -> Any:
        """Memoise compute() under key for the lifetime of this context."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


def _cache_argument(model: torch.nn.Module) -> str | None:
    """The forward's name for a past cache: `cache` from transformers 5.25 (which deprecates
    `past_key_values`), `past_key_values` before; None for a forward that takes neither."""
    return next((n for n in ("cache", "past_key_values") if forward_takes(model, n)), None)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put the model in eval mode (deterministic routing, no dropout) and restore it afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
