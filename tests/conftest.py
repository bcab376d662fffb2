from pathlib import Path

import pytest
import torch

from mmclip import create_model, load_model_config

REPO = Path(__file__).resolve().parents[1]
# One sentence per script the tokenizer and loaders must handle.
MULTILINGUAL_SENTENCES = [
    "a small red cube to the left of two blue balls",
    "ein kleiner roter Würfel links von zwei blauen Kugeln",
    "un petit cube rouge à gauche de deux boules bleues",
    "一个小红色立方体在两个蓝色球的左边",
    "маленький красный куб слева от двух синих шаров",
    "दो नीली गेंदों के बाईं ओर एक छोटा लाल घन",
    "مكعب أحمر صغير على يسار كرتين زرقاوين",
]
TINY = REPO / "configs" / "model" / "tiny.yaml"
FULL = REPO / "configs" / "model" / "jina-clip-v2.yaml"


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return create_model(TINY).eval()


@pytest.fixture
def tiny_config():
    return load_model_config(TINY)
