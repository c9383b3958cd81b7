"""benchmarks/parity_official.py's pieces that run without the official code: the official initial weights."""
from pathlib import Path

import numpy as np
import torch

from benchmarks.parity_official import _is, official_initial_weights
from softmax_bottleneck.config import ModelConfig
from softmax_bottleneck.model import GRU4Rec

OFFICIAL_INIT = Path(__file__).parent / "data" / "foreign" / "official-init.pt"  # tests/data/foreign/make_official.sh


def test_the_official_initial_weights_bit_for_bit_each_item_on_its_own_row():
    official = torch.load(OFFICIAL_INIT, weights_only=True)  # 7 items, layer 4, made by the official code
    items = np.array([3, 0, 6, 1, 5, 2, 4])  # official row j is this toolkit's item items[j]
    ours = official_initial_weights(items, 4)
    for part in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        assert torch.equal(ours[f"grus.0.{part}"], official[f"G.0.{part}"]), part
    assert torch.equal(ours["head.item_weight"][torch.as_tensor(items)], official["Wy.weight"])
    assert torch.equal(ours["head.item_bias"], official["By.weight"])
    model = GRU4Rec(ModelConfig(n_items=7, hidden_dim=4, head="softmax"))  # the names are this model's
    model.load_state_dict(ours)  # every parameter, no other
    assert torch.equal(model.head.item_weight[3], official["Wy.weight"][0])


def test_runs_recorded_before_the_init_option_count_as_each_side_s_own_draw():
    assert _is({"implementation": "ours", "seed": 0}, "ours", "own")
    assert not _is({"implementation": "ours", "seed": 0}, "ours", "official")
    assert _is({"implementation": "official", "seed": 0}, "official", "official")
    assert _is({"implementation": "ours", "init": "official", "seed": 0}, "ours", "official")
