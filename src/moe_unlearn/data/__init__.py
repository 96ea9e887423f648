"""Data layer: sources, schemas, tokenisation, forget/retain pairing, benchmark manifests."""

from moe_unlearn.data.config import DataConfig, EvalSources, load_data, paired_batches
from moe_unlearn.data.manifest import Manifest, load_manifest
from moe_unlearn.data.schemas import SCHEMAS
from moe_unlearn.data.sources import SourceConfig, load_records
from moe_unlearn.data.splits import PairedBatches, Split, UnlearnData, encode_records, shared_records
from moe_unlearn.data.tokenize import IGNORE, collate, encode_mc, encode_qa, encode_text

__all__ = [
    "IGNORE", "SCHEMAS", "DataConfig", "EvalSources", "Manifest", "PairedBatches", "SourceConfig", "Split", "UnlearnData",
    "collate", "encode_mc", "encode_qa", "encode_records", "encode_text", "load_data", "load_manifest",
    "load_records", "paired_batches", "shared_records",
]
