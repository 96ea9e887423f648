"""The linear algebra behind GRIP: span bases, row-wise null-space projection, margins, ridge refit.

Shapes: a router has E rows of width d' (d, or d + 1 for a router with a trainable bias, whose
inputs are augmented to [x; 1]). Everything here is batched over the E rows; nothing loops over
tokens in Python. Ridge solves run in float64; eigen-decompositions in float64 unless asked
for float32 (span_bases); the results come back in the dtype of the inputs. A basis stack
[E, d', r] gives each row its own span (the paper); [1, d', r] is one span shared by all rows.
A row whose span holds more than half of d' stores the span's orthogonal complement instead
(`SpanBases.complement`): the same projection, d' - rank columns instead of rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moe_unlearn.core.dist import all_reduce_sum


def augment(x: torch.Tensor) -> torch.Tensor:
    """[T, d] -> [T, d + 1] with a trailing column of ones (inputs of a router with bias)."""
    return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)


def accumulate_gram(gram: torch.Tensor, x: torch.Tensor, selected: torch.Tensor) -> None:
    """gram[e] += X_e^T X_e in place, X_e = rows of x [T, d'] whose selection mask [T, E] has e.

    gram is [E, d', d'] (float64): the streaming form of the per-expert span of retained inputs.
    Only each expert's own rows are converted to float64.
    """
    for e in range(gram.shape[0]):
        xs = x[selected[:, e]].to(gram.dtype)
        if xs.shape[0]:
            gram[e] += xs.T @ xs


@dataclass
class SpanBases:
    """Orthonormal bases of each row's protected span, zero-padded to a common width r.

    basis [E, d', r]: row e's span (rank[e] columns), or, where complement[e], the span's
    orthogonal complement (d' - rank[e] columns), whichever is narrower; columns past a row's own
    width are zero. The projection reads the basis once per step, so storing the narrower side
    halves its work and bytes where spans are wide. rank [E], null_dim [E] = d' - rank,
    energy [E] = share of the row's retained input energy (trace of its Gram) inside the kept
    span (1 for a row no token selected: nothing to protect).
    """

    basis: torch.Tensor
    rank: torch.Tensor
    energy: torch.Tensor
    complement: torch.Tensor  # [E] bool: the basis holds the span's complement

    @property
    def null_dim(self) -> torch.Tensor:
        return self.basis.shape[1] - self.rank

    @property
    def width(self) -> torch.Tensor:
        """[E] basis columns each row uses."""
        return torch.where(self.complement, self.null_dim, self.rank)

    @property
    def nbytes(self) -> int:
        return self.basis.numel() * self.basis.element_size()

    def project(self, delta: torch.Tensor, *, chunk: int = 16) -> torch.Tensor:
        """Each row of delta [E, d'] minus its component in the row's span (project_rows)."""
        if self.basis.shape[2] == 0:  # bases always keep >= 1 column: only metadata() has none
            raise RuntimeError("these rows' basis lives in a WidthBuckets store: project through it")
        return project_rows(delta, self.basis, self.complement, chunk=chunk)

    def rows(self, rows: torch.Tensor) -> SpanBases:
        """The bases of the listed rows (a shared basis serves every row)."""
        if self.basis.shape[0] == 1:
            return self
        return SpanBases(self.basis[rows], self.rank[rows], self.energy[rows], self.complement[rows])

    def metadata(self) -> SpanBases:
        """These rows without their basis (a [E, d', 0] placeholder): what a summary reads once
        the basis itself has moved into a WidthBuckets store."""
        return SpanBases(self.basis.new_empty(self.basis.shape[0], self.basis.shape[1], 0), self.rank, self.energy,
                         self.complement)


@dataclass
class WidthBuckets:
    """The rows of several layers' bases, regrouped into a few stacks of rows of similar width.

    Why: SpanBases pads every row to its layer's widest one, and the projection is bound by
    reading the bases and by its count of small products (two per layer). Sorted by width into
    a few buckets, each padded only to its own widest row, the same projection reads fewer bytes
    in 2 x buckets calls instead of 2 x layers (docs/benchmarks.md, "GRIP's projection"). The
    stacked rows are the layers' rows one after another: layer k's row e is row k * E + e.
    """

    order: torch.Tensor  # [R] stacked rows sorted by width (stable)
    inverse: torch.Tensor  # [R] where each stacked row sits in `order`
    basis: list[torch.Tensor]  # per bucket [n_b, d', w_b], rows in `order`'s order
    complement: list[torch.Tensor]  # per bucket [n_b, 1] bool
    rows: list[int]  # rows per layer, in stack order

    @classmethod
    def build(cls, layers: list[SpanBases], buckets: int, device: torch.device | None = None) -> WidthBuckets:
        """Regroup per-layer row bases (same d' and dtype, `span: expert`) into `buckets` stacks on
        `device` (default: the bases'). Each stack is assembled where the bases are, then moved: from
        host copies, the device holds the stacks alone, never the per-layer bases beside them."""
        width = torch.cat([b.width for b in layers]).cpu()  # the bucketing is planned on the host
        complement = torch.cat([b.complement for b in layers]).cpu()
        offsets = torch.tensor([0] + [b.basis.shape[0] for b in layers]).cumsum(0)
        order = torch.argsort(width, stable=True)
        stacks, flags = [], []
        for rows in order.tensor_split(min(buckets, len(order))):
            w = max(int(width[rows].max()), 1)
            stack = layers[0].basis.new_zeros(len(rows), layers[0].basis.shape[1], w)
            for k, layer in enumerate(layers):  # each layer's rows of this bucket, in one copy
                mine = ((rows >= offsets[k]) & (rows < offsets[k + 1])).nonzero().squeeze(1)
                if len(mine):
                    part = layer.basis[rows[mine] - offsets[k], :, :w]
                    stack[mine, :, :part.shape[2]] = part
            stacks.append(stack.to(device or stack.device))
            flags.append(complement[rows][:, None].to(stacks[-1].device))
        device = stacks[0].device
        return cls(order=order.to(device), inverse=torch.argsort(order).to(device), basis=stacks, complement=flags,
                   rows=[b.basis.shape[0] for b in layers])

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.basis)

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        """project_rows of the stacked rows delta [R, d'], bucket by bucket."""
        sorted_delta, out = delta[self.order], []
        for d, b, complement in zip(sorted_delta.split([len(b) for b in self.basis]), self.basis, self.complement):
            # both products as a row times a matrix: on CPU about 10% faster here than project_rows'
            # matrix times a column (docs/benchmarks.md, "GRIP's projection")
            inside = torch.bmm(torch.bmm(d[:, None, :], b), b.transpose(1, 2)).squeeze(1)
            out.append(torch.where(complement, inside, d - inside))
        return torch.cat(out)[self.inverse]

    def layer_basis(self, k: int) -> torch.Tensor:
        """Layer k's rows as one padded basis [E, d', w] (a copy; for inspection, not per step)."""
        start = sum(self.rows[:k])
        rows = self.inverse[start:start + self.rows[k]]  # their positions in sorted order
        bounds = torch.tensor([0] + [len(b) for b in self.basis], device=rows.device).cumsum(0)
        w = max(b.shape[2] for b in self.basis)
        basis = self.basis[0].new_zeros(len(rows), self.basis[0].shape[1], w)
        for b, lo, hi in zip(self.basis, bounds[:-1], bounds[1:]):
            mine = ((rows >= lo) & (rows < hi)).nonzero().squeeze(1)
            basis[mine, :, :b.shape[2]] = b[rows[mine] - lo]
        return basis


def span_bases(gram: torch.Tensor, *, rel_energy: float, max_rank: int | None, dtype: torch.dtype,
               chunk: int | None = None, eigh_dtype: torch.dtype = torch.float64) -> SpanBases:
    """Eigen-directions of each Gram [E, d', d'] with eigenvalue >= rel_energy * the largest.

    At most max_rank directions per row (the strongest). A row no retained token selected
    gets rank 0: it is unconstrained. `chunk` experts are decomposed at a time (None: all), so
    the eigh workspace is chunk x d' x d', not E x d' x d'; `eigh_dtype` float32 halves it.
    """
    parts = []
    for g in gram.split(chunk or gram.shape[0]):
        evals, evecs = torch.linalg.eigh(g.to(eigh_dtype))  # ascending
        parts.append(select_span(evals.flip(-1), evecs.flip(-1), rel_energy, max_rank, dtype))
    return _stack(parts)


def span_bases_from_inputs(x: torch.Tensor, selected: torch.Tensor, *, rel_energy: float, max_rank: int | None,
                           dtype: torch.dtype, eigh_dtype: torch.dtype = torch.float64) -> SpanBases:
    """The bases of `span_bases` computed expert by expert from the inputs x [T, d'] and the
    selection mask [T, E], with no Gram stack: an expert with n_e < d' tokens is decomposed
    through its n_e x n_e Gram X_e X_e^T (same nonzero eigenvalues; U = X_e^T V / sqrt(lambda)),
    so memory and time follow min(n_e, d')^2 and min(n_e, d')^3, not d'^2 and d'^3."""
    parts = []
    for e in range(selected.shape[1]):
        xe = x[selected[:, e]].to(torch.float64)
        if xe.shape[0] == 0:  # no retained token chose this row: nothing to protect
            parts.append((x.new_zeros(1, x.shape[1], 1, dtype=dtype), x.new_zeros(1, dtype=torch.long), x.new_ones(1),
                          x.new_zeros(1, dtype=torch.bool)))
            continue
        dual = xe.shape[0] < xe.shape[1]
        gram = xe @ xe.T if dual else xe.T @ xe
        evals, evecs = torch.linalg.eigh(gram.to(eigh_dtype))
        evals, evecs = evals.flip(-1).double(), evecs.flip(-1).double()
        if dual:  # left singular vectors -> right: U = X_e^T V Lambda^(-1/2), for the nonzero eigenvalues
            evecs = (xe.T @ evecs) / evals.clamp_min(1e-300).sqrt()
            evecs = torch.where(evals > 0, evecs, torch.zeros_like(evecs))
        parts.append(select_span(evals[None], evecs[None], rel_energy, max_rank, dtype))
    return _stack(parts)


def _stack(parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]) -> SpanBases:
    r = max(p[0].shape[2] for p in parts)
    # contiguous: the batched matmuls in project_rows are ~8x faster on it than on a strided view
    basis = torch.cat([torch.nn.functional.pad(p[0], (0, r - p[0].shape[2])) for p in parts]).contiguous()
    rank, energy, complement = (torch.cat([p[i] for p in parts]) for i in (1, 2, 3))
    return SpanBases(basis=basis, rank=rank, energy=energy, complement=complement)


def select_span(evals: torch.Tensor, evecs: torch.Tensor, rel_energy: float, max_rank: int | None,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(basis [C, d', r_c], rank [C], energy [C], complement [C]) from eigenpairs in DESCENDING
    order (evals [C, m], evecs [C, d', m]). A row whose span is wider than half of d' gets the
    basis of its complement: the eigenvectors past the span when evecs is complete (m = d'),
    else the tail of a complete QR of the span's basis."""
    evals = evals.double().clamp_min(0)
    keep = (evals > 0) & (evals >= rel_energy * evals[:, :1])
    if max_rank is not None:
        keep[:, max_rank:] = False
    rank = keep.sum(dim=1)  # keep is a prefix: the eigenvalues descend
    total = evals.sum(dim=1)
    energy = torch.where(total > 0, (evals * keep).sum(dim=1) / total.clamp_min(1e-300), torch.ones_like(total))
    d = evecs.shape[1]
    complement = 2 * rank > d
    width = torch.where(complement, d - rank, rank)
    basis = evecs.new_zeros(evecs.shape[0], d, max(int(width.max()), 1))
    for c, (k, w, comp) in enumerate(zip(rank.tolist(), width.tolist(), complement.tolist())):
        if not comp:
            basis[c, :, :w] = evecs[c, :, :k]
        elif evecs.shape[2] == d:
            basis[c, :, :w] = evecs[c, :, k:]
        else:
            basis[c, :, :w] = torch.linalg.qr(evecs[c, :, :k], mode="complete").Q[:, k:]
    return basis.to(dtype), rank, energy.float(), complement


def project_rows(delta: torch.Tensor, basis: torch.Tensor, complement: torch.Tensor | None = None, *,
                 chunk: int = 16) -> torch.Tensor:
    """Each row of delta [E, d'] minus its component in the span of row e ([E, d', r] bases; where
    complement[e], basis[e] spans the span's complement and the result is delta's part in it).

    Afterwards delta[e] . x = 0 for every x in that span (the GRIP equality constraint). A
    shared basis ([1, d', r]) is one span for every row. A basis held in another dtype (bf16)
    or on another device (host memory) is brought to delta's dtype and device `chunk` rows at a
    time, so the arithmetic runs in delta's precision (fp32 accumulation) and the transient
    copy is chunk x d' x r.
    """
    if complement is None:
        complement = torch.zeros(basis.shape[0], dtype=torch.bool)
    complement = complement.to(delta.device, non_blocking=True)[:, None]
    if basis.shape[0] == 1:
        u = basis[0].to(delta.device, delta.dtype, non_blocking=True)
        inside = (delta @ u) @ u.T
        return torch.where(complement, inside, delta - inside)
    if basis.dtype == delta.dtype and basis.device == delta.device:
        chunk = basis.shape[0]
    out = []
    for start in range(0, basis.shape[0], chunk):
        b = basis[start:start + chunk].to(delta.device, delta.dtype, non_blocking=True)
        d = delta[start:start + chunk]
        inside = torch.bmm(b, torch.bmm(d[:, None, :], b).transpose(1, 2)).squeeze(-1)
        out.append(torch.where(complement[start:start + chunk], inside, d - inside))
    return out[0] if len(out) == 1 else torch.cat(out)


def kaczmarz_margins(
    delta: torch.Tensor,
    x: torch.Tensor,
    bound: torch.Tensor,
    bases: SpanBases,
    *,
    iters: int,
    previous: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    tol: float = 0.0,
) -> tuple[torch.Tensor, int]:
    """Randomised Kaczmarz onto {delta : x_t . delta[e] <= bound[t, e]} inside each row's null space.

    delta [E, d'] is the total change of the router since the original weights, x [T, d'] the
    cached retained inputs, bound [T, E] the allowed score rise (min selected score - score -
    eps; +inf where e was selected). Each iteration computes all violations at once and, for
    every row with one, projects onto the half-space of a violating token drawn with probability
    proportional to the squared violation, along the token's null-space component (so the
    equality constraints stay exact). Rows still violating after `iters` are pulled back towards
    `previous` (a feasible delta, e.g. the last step's) by the largest step that satisfies every
    margin, computed exactly for all tokens at once. Returns (delta, rows pulled back).
    """
    delta = delta.clone()
    for _ in range(iters):
        viol = (x @ delta.T - bound).clamp_min(0)  # [T, E]
        viol = torch.where(viol > tol, viol, torch.zeros_like(viol))
        rows = (viol > 0).any(dim=0).nonzero().flatten()
        if rows.numel() == 0:
            return delta, 0
        w = viol[:, rows].T.double().pow(2)  # [R, T]
        pick = torch.multinomial(w / w.sum(dim=1, keepdim=True), 1, generator=generator).flatten()
        xt = x[pick]
        a = bases.rows(rows).project(xt)  # null-space component of each picked token
        a2 = a.pow(2).sum(dim=1)
        movable = a2 > 1e-8 * xt.pow(2).sum(dim=1)  # a token inside the span cannot be fixed here
        step = torch.where(movable, viol[pick, rows] / a2.clamp_min(1e-30), torch.zeros_like(a2))
        delta[rows] -= step[:, None] * a
    bad = ((x @ delta.T - bound) > tol).any(dim=0)
    if previous is None or not bool(bad.any()):
        return delta, 0
    return backtrack(previous, delta, x, bound, rows=bad), int(bad.sum())


def backtrack(start: torch.Tensor, end: torch.Tensor, x: torch.Tensor, bound: torch.Tensor,
              *, rows: torch.Tensor) -> torch.Tensor:
    """start + alpha_e (end - start) per row in `rows` ([E] bool), alpha_e the largest in [0, 1]
    keeping x_t . delta[e] <= bound[t, e] for every token (start must satisfy them)."""
    step = end - start
    rise = x @ step.T  # [T, E] score rise along the step
    room = (bound - x @ start.T).clamp_min(0)
    ratio = torch.where(rise > 0, room / rise.clamp_min(1e-30), torch.full_like(rise, float("inf")))
    alpha = ratio.min(dim=0).values.clamp(0, 1) * 0.999  # a hair inside the boundary
    alpha = torch.where(rows, alpha, torch.ones_like(alpha))
    return start + alpha[:, None] * step


class RidgeStats:
    """Streaming sufficient statistics for refitting one router: new inputs -> old scores.

    add(x_new [T, d'], target [T, E]) accumulates A = X^T X, C = X^T S and |S|^2, so a refit needs
    d' x d' + d' x E numbers, never the tokens.
    """

    def __init__(self, dim: int, experts: int, device: torch.device) -> None:
        self.a = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.c = torch.zeros(dim, experts, dtype=torch.float64, device=device)
        self.ss = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, x_new: torch.Tensor, target: torch.Tensor) -> None:
        x, s = x_new.double(), target.double()
        self.a += x.T @ x
        self.c += x.T @ s
        self.ss += s.pow(2).sum()

    def reduce_over_processes(self) -> None:
        """Sum the statistics of every process's tokens (identity in one process)."""
        self.a, self.c, self.ss = all_reduce_sum(self.a), all_reduce_sum(self.c), all_reduce_sum(self.ss)

    def solve(self, weight: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
        """(refitted weight [E, d'], cos(vec(S), vec(X W'^T))).

        Ridge regression anchored at the current weight W: W' = W + ((A + lam I)^-1 (C - A W^T))^T.
        On span(X) this is the reference formula Theta X X~^T (X~ X~^T + lam I)^-1; outside it
        W keeps its own component (with the reference formula it would be zeroed).
        """
        w = weight.double()
        eye = torch.eye(self.a.shape[0], dtype=torch.float64, device=self.a.device)
        delta_t = torch.linalg.solve(self.a + lam * eye, self.c - self.a @ w.T)
        new = w + delta_t.T
        dot = (new * self.c.T).sum()
        pred_sq = (new @ self.a * new).sum()
        cos = float(dot / (pred_sq.sqrt() * self.ss.sqrt()).clamp_min(1e-30))
        return new.to(weight.dtype), cos
