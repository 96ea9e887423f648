"""The MoE model layer: loading, layout discovery, routing capture/replay/masking, selectors."""

from moe_unlearn.models.archs import ARCH_RULES
from moe_unlearn.models.balance import load_balancing_loss
from moe_unlearn.models.decoder import LayerOutput, decoder_layer_output, decoder_layers, stop_after
from moe_unlearn.models.layout import MoELayer, moe_layers
from moe_unlearn.models.loading import first_nonfinite, load_model, resolve_device, save_model
from moe_unlearn.models.routing import LayerRouting, RoutingCapture, capture_routing, mask_experts, replay_routing
from moe_unlearn.models.selectors import ParamRef, select_parameters
from moe_unlearn.models.tiny import TINY_ARCHS, tiny_model, tiny_tokenizer

__all__ = [
    "LayerOutput", "decoder_layer_output", "decoder_layers", "stop_after", "ARCH_RULES", "MoELayer",
    "load_balancing_loss", "moe_layers", "first_nonfinite", "load_model", "resolve_device", "save_model",
    "LayerRouting", "RoutingCapture", "capture_routing", "mask_experts", "replay_routing", "ParamRef", "select_parameters",
    "TINY_ARCHS", "tiny_model", "tiny_tokenizer",
]
