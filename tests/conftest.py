from pathlib import Path

import pytest
import torch

from mmclip import create_model, load_model_config

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "model" / "tiny.yaml"
FULL = REPO / "configs" / "model" / "jina-clip-v2.yaml"


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return create_model(TINY).eval()


@pytest.fixture
def tiny_config():
    return load_model_config(TINY)
