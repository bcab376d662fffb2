"""Shard builders: source datasets to mmclip's WebDataset shards (``python -m data_pipelines``)."""
