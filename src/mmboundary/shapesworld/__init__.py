"""ShapesWorld: the procedural demo world (scenes, questions, reference chains in the authors'
format), its small LLaVA-style VLM and CLIP (pretraining, shipped checkpoints).

A client of the method, like the demo: the method's packages (data, models, text, judging,
confidence, training, evaluation, guidance) import nothing from here.
"""

from mmboundary.shapesworld.scenes import (
    COLORS,
    SHAPES,
    WorldConfig,
    load_image,
    make_sample,
    make_samples,
    read_split,
    render,
    shipped_world_clip_path,
    shipped_world_model_path,
    write_split,
)

__all__ = ["COLORS", "SHAPES", "WorldConfig", "load_image", "make_sample", "make_samples",
           "read_split", "render", "shipped_world_clip_path", "shipped_world_model_path",
           "write_split"]
