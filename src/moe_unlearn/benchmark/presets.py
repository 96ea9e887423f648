"""Named build configurations of the embedded benchmark ("default" for the demo, "tiny" for tests)."""

from __future__ import annotations

from dataclasses import dataclass

from moe_unlearn.benchmark.base_model import ModelConfig, TrainConfig
from moe_unlearn.benchmark.generator import GeneratorConfig
from moe_unlearn.registry import Registry


@dataclass(frozen=True)
class BuildConfig:
    generator: GeneratorConfig
    model: ModelConfig
    train: TrainConfig


PRESETS: Registry[BuildConfig] = Registry("benchmark preset")

# The demo model: 320 trained entities (1280 facts), 6.7M parameters, 16 experts; 700 steps
# of batch 128 is ~17 epochs of its 5120 training sequences.
PRESETS.register("default")(
    BuildConfig(
        generator=GeneratorConfig(entities_per_domain=64, holdout_entities=32),
        model=ModelConfig(vocab_size=1024, hidden_size=128, intermediate_size=256, layers=4, heads=4,
                          experts=16, top_k=2, aux_loss_coef=0.0),
        train=TrainConfig(steps=700, batch_size=128, lr=4e-3, warmup_steps=30, max_length=48, eval_size=256),
    )
)

# For tests: 50 trained entities (200 facts), 0.9M parameters, 8 experts; ~30 s on one core.
PRESETS.register("tiny")(
    BuildConfig(
        generator=GeneratorConfig(entities_per_domain=10, holdout_entities=5),
        model=ModelConfig(vocab_size=512, hidden_size=64, intermediate_size=128, layers=4, heads=2,
                          experts=8, top_k=2, aux_loss_coef=0.0),
        train=TrainConfig(steps=400, batch_size=32, lr=5e-3, warmup_steps=20, max_length=48, eval_size=64),
    )
)
