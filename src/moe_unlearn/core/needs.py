"""What a method or an adapter needs from a run: one frozen record each, `needs(cfg)`.

`Method.needs(cfg)` and `Adapter.needs(cfg)` compute it from their own settings. The engine,
the combination checks and the memory estimate ask about capabilities through these records
only, and about a whole run through `RunNeeds`, so a question such as "does this run keep a
reference?" is answered in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from moe_unlearn.vocab import Role


@dataclass(frozen=True)
class Needs:
    # ctx.reference() while training: the engine keeps one copy of the original trained values
    reference: bool = False
    # (method) its loss has a retain term (TRACE's weights and the retain forwards act on it)
    retain_term: bool = False
    # (method) it reads its forget and retain batches only through what ctx.forward returns (no
    # hook around the forward, as RMU's on a decoder layer), so one forward may serve both (ctx.joint)
    shares_forward: bool = False
    # (adapter) the method must have a retain term (checked at config load)
    requires_retain_term: bool = False
    # (adapter) a retain forward every micro-step; the engine runs one when the method does not
    retain_forward: bool = False
    # (adapter) training roles whose routing it reads in loss_terms / retain_token_weights
    capture: frozenset[Role] = frozenset()
    # (adapter) the captured router logits keep their autograd graph (a loss on them)
    capture_grad: bool = True
    # (adapter) select_trainable() chooses what trains; prepared BEFORE the trained set is built
    selects_trainable: bool = False
    # (adapter) why it changes parameters outside the trained set, else None; refused next to
    # an adapter that selects_trainable, whose guarantee is that nothing else changes
    edits_untrained: str | None = None
    # (adapter) works on peft LoRA deltas (refused with train.lora otherwise)
    lora: bool = True
    # (adapter) adapter names it cannot be combined with (checked both ways)
    conflicts: frozenset[str] = frozenset()
    # (adapter) examples it forwards per micro-step besides the method's batches (memory estimate)
    extra_rows: int = 0


@dataclass(frozen=True)
class RunNeeds:
    """The records of one run: its method's, and its adapters' by name (in the config's order)."""

    method: Needs
    adapters: dict[str, Needs] = field(default_factory=dict)

    @property
    def reference(self) -> bool:
        """The run keeps the original trained values (Trainable.keep_originals)."""
        return self.method.reference or any(n.reference for n in self.adapters.values())

    @property
    def retain_forward(self) -> bool:
        """An adapter needs a retain forward every micro-step (the engine runs one if the method does not)."""
        return any(n.retain_forward for n in self.adapters.values())

    @property
    def retain_rows(self) -> bool:
        """Retain batches are forwarded with a graph every micro-step (method's retain term or an adapter)."""
        return self.method.retain_term or self.retain_forward

    @property
    def joint_forward(self) -> bool:
        """The forget and retain batches share one forward every micro-step (ctx.joint). Not for a
        method with a reference during training (a KL retain loss): its reference forward of the
        retain batch runs alone, and only the same computation gives KL exactly 0 at the start."""
        return self.method.shares_forward and self.retain_rows and not self.method.reference

    @property
    def capture(self) -> frozenset[Role]:
        """Training roles whose routing is recorded."""
        return frozenset().union(*(n.capture for n in self.adapters.values()))

    @property
    def capture_grad(self) -> frozenset[Role]:
        """The captured roles whose router logits keep their graph."""
        return frozenset().union(*(n.capture for n in self.adapters.values() if n.capture_grad))

    @property
    def extra_rows(self) -> int:
        return sum(n.extra_rows for n in self.adapters.values())

