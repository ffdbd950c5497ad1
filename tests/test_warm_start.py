"""research/warm_start.py: the warm start's backbones are exported standalone and reload equal (no training)."""

import json

import torch
from conftest import load_script, tiny_sista_config

from modeling_sista import SistaModel


warm_start = load_script("research/warm_start.py")


def test_export_backbones_reload_equal_and_rebuild_the_model(tmp_path):
    torch.manual_seed(0)
    model = SistaModel(tiny_sista_config(vision_pooling="mean", text_pooling="mean"))
    model.save_pretrained(tmp_path / "warm")
    report = warm_start.export_backbones(tmp_path / "warm", tmp_path / "backbones")
    assert report["vision"]["reloads_equal"] and report["text"]["reloads_equal"]
    assert report["vision"]["class"] == "ViTModel" and report["text"]["class"] == "BertModel"
    json.dumps(report)
    # what pretrain.py does with the two paths: the backbones carry over exactly, the projections are new
    rebuilt = SistaModel.from_vision_text_pretrained(
        str(tmp_path / "backbones" / "vision"), str(tmp_path / "backbones" / "text"), projection_dim=16
    )
    for name in ("vision_model", "text_model"):
        original, loaded = getattr(model, name).state_dict(), getattr(rebuilt, name).state_dict()
        assert original.keys() == loaded.keys()
        assert all(torch.equal(original[key], loaded[key]) for key in original)


def test_parse_defaults():
    options = warm_start.parse([])
    assert options.objectives == "clip,sia,sta,sista" and options.seeds == "0" and options.warm_epochs == 1.0
