"""bench.app_latency times the model it is asked for (the benchmark itself starts a server: not run here)."""

import torch

from app.models import ModelRegistry
from bench.app_latency import model_key
from febm.model import EBM, list_models

NET = {"kind": "conv", "in_channels": 1, "width": 4, "downsamples": 2}


def test_a_shipped_name_times_that_model_not_the_last_shipped_one():
    shipped = [m["name"] for m in list_models()]
    assert len(shipped) > 1 and shipped[0] != shipped[-1]
    for name in (shipped[0], shipped[1]):
        assert model_key(ModelRegistry.discover([name]), name) == name
    assert model_key(ModelRegistry.discover([]), None) == shipped[0]


def test_an_added_folder_is_timed_under_its_own_key(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "tiny"
    EBM("cd", energy=NET, critic=None, dataset="test", image_shape=[1, 8, 8]).save_pretrained(folder)
    registry = ModelRegistry.discover([str(folder)])
    assert model_key(registry, str(folder)) == str(folder)
    assert registry.entry(str(folder)).config["dataset"] == "test"


def test_the_photo_case_times_the_photo_model_asked_for_else_a_shipped_one_else_the_tiny_test_model(tmp_path,
                                                                                                    monkeypatch):
    from bench.app_latency import photo_model_key, save_tiny_photo_model

    monkeypatch.setenv("FEBM_CHECKPOINTS", str(tmp_path / "checkpoints"))
    EBM("cd", energy=NET, critic=None, dataset="test", image_shape=[1, 8, 8]).save_pretrained(
        tmp_path / "checkpoints" / "fmnist")
    assert photo_model_key(ModelRegistry.discover([]), None) is None  # no photo model ships
    tiny = save_tiny_photo_model(tmp_path / "checkpoints" / "tiny-photo")
    registry = ModelRegistry.discover([])
    assert photo_model_key(registry, None) == "tiny-photo" and registry.entry("tiny-photo").fully_convolutional
    assert photo_model_key(ModelRegistry.discover([tiny]), tiny) == tiny
