"""Models: the Hugging Face VLM backend, sentence similarity, CLIP, prompts, the generation loop
and tiny offline models. Cheap to import; torch and transformers load on first use."""

from mmboundary.models.clip import ClipScorer
from mmboundary.models.prompts import build_messages, question_prompt
from mmboundary.models.responses import generate_responses
from mmboundary.models.similarity import (
    BiEncoderSimilarity,
    CrossEncoderSimilarity,
    SimilarityModel,
    default_similarity,
    load_similarity,
)
from mmboundary.models.tiny import make_tiny
from mmboundary.models.vlm import VLM, Generation

__all__ = ["VLM", "BiEncoderSimilarity", "ClipScorer", "CrossEncoderSimilarity", "Generation",
           "SimilarityModel", "build_messages", "default_similarity", "generate_responses",
           "load_similarity", "make_tiny", "question_prompt"]
