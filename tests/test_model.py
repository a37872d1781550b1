import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from febm.model import EBM, ModelNotFoundError, list_models, load_model
from hub_server import hub_server  # noqa: F401  (pytest fixture)

NET = {"kind": "resnet", "in_channels": 1, "width": 4, "stages": 2}
COMMAND = "python -m training.run --div js --steps 10"


def make_model(divergence: str = "js", **kwargs) -> EBM:
    model = EBM(
        divergence,
        energy=NET,
        critic=None if divergence == "cd" else NET,
        dataset="fashion-mnist",
        image_shape=[1, 17, 23],
        sampler={"method": "authors", "steps": 60, "step_size": 10.0, "noise": 0.005, "grad_clip": 0.01, "clamp": True},
        training={"command": COMMAND, "steps": 10, "wall_time": "0:00:03", "machine": "2 CPU cores"},
        metrics={"fid": 123.4},
        **kwargs,
    )
    with torch.no_grad():  # move the gains off their initial values so the round trip tests real weights
        for name, p in model.named_parameters():
            if name.endswith("gain"):
                p.add_(0.3)
    return model.train()


@pytest.fixture
def x():
    return torch.rand(3, 1, 17, 23)


@pytest.fixture
def checkpoints(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    root.mkdir()
    monkeypatch.setenv("FEBM_CHECKPOINTS", str(root))
    return root


def run_forward_passes(model, x, n=3):
    """Training-mode passes advance the spectral-norm power iteration: u, v differ from their init."""
    for _ in range(n):
        model(x)
        if model.critic is not None:
            model.log_ratio(x)


def test_save_and_load_round_trip_is_bit_exact(tmp_path, x):
    model = make_model()
    run_forward_passes(model, x)
    model.eval()
    e, r = model.energy_of(x), model.log_ratio(x)
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    keys = load_file(tmp_path / "m" / "model.safetensors").keys()
    assert any(k.startswith("energy.") and k.endswith("._u") for k in keys)  # spectral-norm state is saved
    assert any(k.startswith("critic.") for k in keys)

    loaded = EBM.from_pretrained(tmp_path / "m")
    assert not loaded.training
    assert loaded.config == model.config
    assert torch.equal(loaded.energy_of(x), e)
    assert torch.equal(loaded.log_ratio(x), r)
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


def test_config_json_schema(tmp_path):
    model = make_model(notes_for_later="kept")  # unknown entries are kept (forward compatibility)
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config == model.config
    assert config["divergence"] == "js" and config["dataset"] == "fashion-mnist"
    assert config["image_shape"] == [1, 17, 23] and config["data_range"] == [0.0, 1.0]
    assert config["energy"]["kind"] == "resnet" and "branch_gain" in config["energy"]  # full spec
    assert config["sampler"]["steps"] == 60 and config["training"]["command"] == COMMAND
    assert config["metrics"] == {"fid": 123.4} and config["notes_for_later"] == "kept"
    assert EBM.from_pretrained(tmp_path / "m").config["notes_for_later"] == "kept"


def test_model_card(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path / "m")
    card = (tmp_path / "m" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: febm-restore" in card
    for text in ("js", "fashion-mnist", COMMAND, "0:00:03", "2 CPU cores", "123.4", 'load_model("m")'):
        assert text in card
    model.update_config({"metrics": {"fid": 99.0}})
    model.save_pretrained(tmp_path / "m", model_card_kwargs={"notes": "Trained overnight."})
    card = (tmp_path / "m" / "README.md").read_text()  # regenerated, not kept from the first save
    assert "99" in card and "123.4" not in card and "Trained overnight." in card
    model.update_config({"restoration": {"denoise": {"steps": 60, "grid": [{"steps": 777}]}}})
    model.save_pretrained(tmp_path / "m")
    card = (tmp_path / "m" / "README.md").read_text()
    assert "## Restoration defaults" in card and '"steps": 60' in card and "777" not in card  # the grid stays out
    model.save_pretrained(tmp_path / "m", model_card_kwargs={"text": "# Custom card"})
    assert (tmp_path / "m" / "README.md").read_text().rstrip().endswith("# Custom card")


def test_architecture_cannot_be_changed_through_config():
    with pytest.raises(ValueError, match="architecture"):
        make_model().update_config({"energy": {"kind": "resnet", "width": 8}})


def test_config_must_be_json_serialisable():
    with pytest.raises(TypeError, match="JSON"):
        EBM("js", energy=NET, critic=NET, metrics={"fid": torch.tensor(1.0)})


def test_in_channels_must_match_image_shape():
    with pytest.raises(ValueError, match="in_channels"):
        EBM("js", energy=NET, critic=NET, image_shape=[3, 32, 32])


def test_cd_model_has_no_critic(tmp_path, x):
    model = make_model("cd").eval()
    assert model.critic is None and not model.has_critic
    with pytest.raises(RuntimeError, match="no critic"):
        model.log_ratio(x)
    model.save_pretrained(tmp_path / "cd")
    loaded = EBM.from_pretrained(tmp_path / "cd")
    assert loaded.critic is None and loaded.config["critic"] is None
    assert torch.equal(loaded.energy_of(x), model.energy_of(x))
    with pytest.raises(RuntimeError, match="no critic"):
        loaded.log_ratio(x)
    with pytest.raises(ValueError, match="critic"):
        EBM("cd", energy=NET, critic=NET)


def test_load_model_by_name_folder_and_list_models(checkpoints, tmp_path, x):
    js, cd = make_model().eval(), make_model("cd").eval()
    js.save_pretrained(checkpoints / "fashion-js")
    cd.save_pretrained(checkpoints / "fashion-cd")
    (checkpoints / "not-a-model").mkdir()  # ignored: no config.json / weights
    (checkpoints / "README.md").write_text("not a model either")

    by_name = load_model("fashion-js")
    assert torch.equal(by_name.energy_of(x), js.energy_of(x))
    assert load_model("fashion-cd").critic is None

    cd.save_pretrained(tmp_path / "elsewhere" / "my-model")
    by_folder = load_model(tmp_path / "elsewhere" / "my-model")
    assert torch.equal(by_folder.energy_of(x), cd.energy_of(x))
    assert torch.equal(load_model(str(tmp_path / "elsewhere" / "my-model")).energy_of(x), cd.energy_of(x))

    listed = list_models()
    assert [m["name"] for m in listed] == ["fashion-cd", "fashion-js"]
    js_entry = listed[1]
    assert js_entry["divergence"] == "js" and js_entry["dataset"] == "fashion-mnist"
    assert js_entry["metrics"] == {"fid": 123.4} and js_entry["has_critic"] and not listed[0]["has_critic"]


def test_list_models_reads_no_weights(checkpoints, monkeypatch):
    make_model().save_pretrained(checkpoints / "a")
    import safetensors.torch

    def refuse(*args, **kwargs):
        raise AssertionError("list_models must not read weights")

    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    monkeypatch.setattr(safetensors.torch, "load_model", refuse)
    monkeypatch.setattr(safetensors, "safe_open", refuse)
    assert [m["name"] for m in list_models()] == ["a"]


def test_unknown_name_lists_available_checkpoints(checkpoints):
    make_model().save_pretrained(checkpoints / "fashion-js")
    make_model("cd").save_pretrained(checkpoints / "fashion-cd")
    with pytest.raises(ModelNotFoundError, match="fashion-cd, fashion-js"):
        load_model("fashion-kl")
    with pytest.raises(FileNotFoundError, match="fashion-js"):  # ModelNotFoundError is a FileNotFoundError
        load_model("./no/such/folder/anywhere")


def test_unknown_repo_offline_is_a_clear_error(checkpoints, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import time: the env var is not enough
    make_model().save_pretrained(checkpoints / "fashion-js")
    # offline, nothing cached => a ModelNotFoundError naming the local checkpoints
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE.*fashion-js"):
        load_model("someone/missing-model", cache_dir=tmp_path / "cache")


def test_model_folder_holds_no_pickle_and_pickles_are_refused(tmp_path, monkeypatch):
    model = make_model()
    model.save_pretrained(tmp_path / "m")
    assert not [p for p in (tmp_path / "m").iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((tmp_path / "m" / "config.json").read_text())
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(ModelNotFoundError, match=r"safetensors.*pytorch_model\.bin"):
        load_model(pickled)
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_model(tmp_path)  # a folder without config.json


def test_push_to_hub_and_load_back(hub_server, tmp_path, x):  # noqa: F811
    model = make_model()
    run_forward_passes(model, x)
    model.eval()
    commit_url = model.push_to_hub("someone/febm-js-test")
    assert commit_url.startswith(hub_server.url)
    remote = hub_server.files("someone/febm-js-test")
    assert {"config.json", "model.safetensors", "README.md"} <= set(remote)
    card = remote["README.md"].decode()
    assert "js" in card and COMMAND in card and 'load_model("someone/febm-js-test")' in card

    model.push_to_hub("someone/febm-js-test")  # a second push: the repo exists already (409 is fine)

    loaded = load_model("someone/febm-js-test", cache_dir=tmp_path / "fresh-cache")
    assert loaded.config == model.config
    assert torch.equal(loaded.energy_of(x), model.energy_of(x))
    assert torch.equal(loaded.log_ratio(x), model.log_ratio(x))
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert not hub_server.unknown, hub_server.unknown

    with pytest.raises(ModelNotFoundError, match="someone/nothing-here"):
        load_model("someone/nothing-here")

    model.save_pretrained(tmp_path / "local", push_to_hub=True, repo_id="someone/other")  # the mixin's other route
    assert 'load_model("someone/other")' in hub_server.files("someone/other")["README.md"].decode()


def test_hub_repo_without_safetensors_is_refused(hub_server, tmp_path, monkeypatch):  # noqa: F811
    """The mixin would fall back to unpickling pytorch_model.bin; EBM does not."""
    model = make_model()
    hub_server.create_repo("someone/pickled")
    config = json.dumps(model.config).encode()
    files = {"config.json": config, "pytorch_model.bin": b"\x80\x02}q\x00."}  # a pickle, never to be opened
    hub_server.commit("someone/pickled", "main", files, [], "pickled weights only")
    monkeypatch.setattr(torch, "load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("torch.load called")))
    with pytest.raises(ModelNotFoundError, match="safetensors"):
        load_model("someone/pickled")


def test_checkpoints_dir_defaults_to_the_repository(monkeypatch):
    import febm
    from febm.model import checkpoints_dir

    monkeypatch.delenv("FEBM_CHECKPOINTS", raising=False)
    assert checkpoints_dir() == Path(febm.__file__).resolve().parents[1] / "checkpoints"


def test_from_config_builds_a_fresh_model_of_the_same_architecture(x):
    model = make_model()
    twin = EBM.from_config(model.config)
    assert twin.config == model.config
    assert [k for k in twin.state_dict()] == [k for k in model.state_dict()]
    twin.load_state_dict(model.state_dict())
    assert torch.equal(twin.eval().energy_of(x), model.eval().energy_of(x))


def test_pca_start_distribution_is_saved_with_the_weights(tmp_path):
    model = EBM("js", energy=NET, critic=NET, image_shape=[1, 6, 5], start={"kind": "pca", "components": 3})
    model.start.fit(torch.rand(200, 1, 6, 5))
    model.save_pretrained(tmp_path / "m")
    back = load_model(tmp_path / "m")
    assert back.config["start"] == {"kind": "pca", "components": 3}
    for name in ("mean", "basis", "scale", "residual"):
        assert torch.equal(getattr(back.start, name), getattr(model.start, name))
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(back.initial_samples(4, g1), model.initial_samples(4, g2))


def test_pca_mixture_start_is_saved_with_the_weights(tmp_path):
    start = {"kind": "pca-mixture", "clusters": 3, "components": 2}
    model = EBM("js", energy=NET, critic=NET, image_shape=[1, 6, 5], start=start)
    model.start.fit(torch.rand(200, 1, 6, 5))
    model.save_pretrained(tmp_path / "m")
    back = load_model(tmp_path / "m")
    assert back.config["start"] == start
    for key, value in model.start.state_dict().items():
        assert torch.equal(back.start.state_dict()[key], value), key
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(back.initial_samples(4, g1), model.initial_samples(4, g2))


def test_uniform_start_is_the_default_and_unknown_kinds_are_refused():
    x = make_model().initial_samples(7, torch.Generator().manual_seed(0))
    assert x.shape == (7, 1, 17, 23) and 0 <= x.min() and x.max() <= 1
    with pytest.raises(ValueError, match="start distribution"):
        EBM("js", energy=NET, critic=NET, image_shape=[1, 6, 5], start={"kind": "gmm"})
