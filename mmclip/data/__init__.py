"""Training data: the shard format, streaming loaders, image transforms and tokenization."""
