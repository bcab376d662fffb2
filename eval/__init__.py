"""Evaluation of mmclip checkpoints: CLIP Benchmark, ViDoRe and MTEB."""
