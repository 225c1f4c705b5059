"""Data: the data model (samples, reference chains, responses, steps), loaders of the authors'
annotated chains, images, crash-safe JSONL, Hugging Face datasets conversion."""

from mmboundary.data.images import load_image, resolve_image
from mmboundary.data.io import read_jsonl, read_responses, write_json_atomic, write_jsonl_atomic
from mmboundary.data.loaders import LoadResult, load_annotated
from mmboundary.data.schema import (
           ReferenceChain,
           Response,
           Sample,
           Step,
           TokenStats,
           extract_answer,
)

__all__ = ["LoadResult", "ReferenceChain", "Response", "Sample", "Step", "TokenStats",
           "extract_answer", "load_annotated", "load_image", "read_jsonl", "read_responses",
           "resolve_image", "write_json_atomic", "write_jsonl_atomic"]
