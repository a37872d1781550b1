"""Image training pipeline: run folder, resume after SIGKILL, stability guard, CLI errors."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from febm.model import load_model
from training import data as datasets
from training.checkpoint import load_state, save_state
from training.run import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> str:
    """A folder of 40 small grayscale images: the stand-in data set for training tests."""
    folder = tmp_path_factory.mktemp("standin")
    rng = np.random.default_rng(0)
    for i in range(40):
        img = np.zeros((12, 12), np.uint8)
        img[2 + i % 5 : 9 + i % 3, 3:9] = 200 + i
        img = np.clip(img + rng.integers(0, 30, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img, "L").save(folder / f"{i:02d}.png")
    return f"folder:{folder}"


def tiny_args(standin, run_dir, *extra):
    return ["--preset", "tiny", "--div", "js", "--dataset", standin, "--run-dir", str(run_dir), "--no-progress", *extra]


def test_tiny_run_writes_run_folder_and_loadable_model(standin, tmp_path):
    run = tmp_path / "run"
    assert main(tiny_args(standin, run)) == 0
    options = json.loads((run / "options.json").read_text())
    assert options["div"] == "js" and options["max_steps"] == 6
    lines = [json.loads(ln) for ln in (run / "stats.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [1, 2, 3, 4, 5, 6]
    for key in ("loss_energy", "loss_critic", "energy_pos", "energy_neg", "critic_pos", "critic_neg",
                "langevin_grad_norm", "step_time"):
        assert key in lines[-1] and np.isfinite(lines[-1][key])
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["buffer_000003.png", "buffer_000006.png"]
    model = load_model(run / "model")
    assert model.config["divergence"] == "js"
    assert model.config["training"]["steps"] == 6
    assert "--preset tiny" in model.config["training"]["command"]
    assert "python -m training.run" in (run / "model" / "README.md").read_text()
    x = torch.rand(3, 1, 12, 12)
    assert model.log_ratio(x).shape == (3,)


def test_cd_run_has_no_critic(standin, tmp_path):
    assert main(tiny_args(standin, tmp_path / "cd", "--div", "cd", "--max-steps", "2")) == 0
    model = load_model(tmp_path / "cd" / "model")
    assert model.critic is None and model.config["divergence"] == "cd"


def test_warm_start_continues_a_model_folder_with_snapshots(standin, tmp_path):
    assert main(tiny_args(standin, tmp_path / "a", "--max-steps", "3")) == 0
    source = load_model(tmp_path / "a" / "model")
    # no further steps: the exported model is the source, weights and step count
    assert main(tiny_args(standin, tmp_path / "same", "--max-steps", "3", "--warm-start", str(tmp_path / "a" / "model"))) == 0
    same = load_model(tmp_path / "same" / "model")
    assert same.config["training"]["steps"] == 3
    for key, value in source.state_dict().items():
        assert torch.equal(same.state_dict()[key], value), key
    # two more steps, a snapshot after each
    run = tmp_path / "b"
    assert main(tiny_args(standin, run, "--max-steps", "5", "--snapshot-every", "1",
                          "--warm-start", str(tmp_path / "a" / "model"))) == 0
    assert [json.loads(ln)["step"] for ln in (run / "stats.jsonl").read_text().splitlines()] == [4, 5]
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["step_000004", "step_000005"]
    assert load_model(run / "snapshots" / "step_000004").config["training"]["steps"] == 4
    assert "This model is that run at step 4 of its 5." in (run / "snapshots" / "step_000004" / "README.md").read_text()
    assert "of its" not in (run / "model" / "README.md").read_text()
    final = load_model(run / "model")
    assert final.config["training"]["options"]["warm_start"] == str(tmp_path / "a" / "model")
    assert not torch.equal(final.energy_of(torch.full((1, 1, 12, 12), 0.5)), source.energy_of(torch.full((1, 1, 12, 12), 0.5)))



def test_warm_started_models_record_every_command_back_to_the_first(standin, tmp_path):
    from febm.model import model_card_body

    assert main(tiny_args(standin, tmp_path / "a", "--max-steps", "2")) == 0
    first = str(tmp_path / "a" / "model")
    assert main(tiny_args(standin, tmp_path / "b", "--max-steps", "3", "--warm-start", first)) == 0
    run = tmp_path / "c"
    assert main(tiny_args(standin, run, "--max-steps", "4", "--warm-start", str(tmp_path / "b" / "model"))) == 0
    assert main(["--resume", str(run), "--max-steps", "5", "--no-progress"]) == 0  # a resumed run keeps its origin
    training = load_model(run / "model").config["training"]
    first = load_model(tmp_path / "a" / "model").config["training"]
    origin = training["warm_started_from"]
    assert origin["model"] == str(tmp_path / "b" / "model") and origin["steps"] == 3
    assert origin["warm_started_from"]["steps"] == 2
    assert origin["warm_started_from"]["command"] == first["command"]
    assert "warm_started_from" not in first
    card = model_card_body(load_model(run / "model").config)
    assert card.index(training["command"]) < card.index(origin["command"]) < card.index(first["command"])
    assert f"It continued `{tmp_path / 'b' / 'model'}` (3 steps, f-EBM (js))" in card

def test_fid_curve_takes_a_runs_snapshots_and_records_steps_and_hours(standin, tmp_path):
    sys.path.insert(0, str(REPO))  # bench/ is not installed
    from bench.fid_curve import curve_label, curve_points, model_folders, reused_reports

    run = tmp_path / "run"
    assert main(tiny_args(standin, run, "--max-steps", "3", "--snapshot-every", "1")) == 0
    everything = model_folders([str(run), str(run / "model")], None)
    assert [Path(f).name for f in everything] == ["step_000001", "step_000002", "step_000003", "model"]
    chosen = model_folders([str(run)], {2, 3})
    assert [Path(f).name for f in chosen] == ["step_000002", "step_000003"]
    results = [{"model": f, "divergence": "js", "fid": 10.0 - i, "pca_fd": 1.0, "samples": 8, "split": "val"}
               for i, f in enumerate(reversed(chosen))]
    rows = curve_points(results)
    assert [r["steps"] for r in rows] == [2, 3] and [r["fid"] for r in rows] == [9.0, 10.0]
    assert all(r["training_hours"] >= 0 for r in rows)
    # the same weights sampled with their own generation noise are a curve of their own
    colder = tmp_path / "colder"
    shutil.copytree(chosen[1], colder)
    config = json.loads((colder / "config.json").read_text())
    config["sampler"]["generation_noise"] = 0.0
    (colder / "config.json").write_text(json.dumps(config))
    rows = curve_points([{**results[0], "model": str(colder), "fid": 5.0}, *results])
    assert [curve_label(r) for r in rows] == ["js, uniform start"] * 2 + ["js, uniform start, generation noise 0"]
    # reports of an earlier evaluation are taken only for the same folder, training step and protocol
    report = {"divergence": "js", "fid": 7.0, "pca_fd": 1.0, "samples": 8, "split": "val", "seed": 0}
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{**report, "model": str(run / "model"), "training_steps": 3},
                                   {**report, "model": chosen[0], "training_steps": 3},  # that folder is at step 2
                                   {**report, "model": chosen[1], "training_steps": 3, "samples": 9},
                                   {**report, "model": str(tmp_path / "gone"), "training_steps": 3}]))
    reused = reused_reports([str(results)], [*chosen, str(run / "model")], {"samples": 8, "split": "val", "seed": 0})
    assert list(reused) == [str(run / "model")] and reused[str(run / "model")]["fid"] == 7.0
    # a checkpoint name in a results file means the checkpoints folder beside it (an earlier commit's, extracted)
    (tmp_path / "old" / "docs").mkdir(parents=True)
    shutil.copytree(chosen[0], tmp_path / "old" / "checkpoints" / "fmnist-js")
    (tmp_path / "old" / "docs" / "results.json").write_text(
        json.dumps([{**report, "model": "fmnist-js", "training_steps": 2}]))
    old = str(tmp_path / "old" / "checkpoints" / "fmnist-js")
    reused = reused_reports([str(results), str(tmp_path / "old" / "docs" / "results.json")], [old],
                            {"samples": 8, "split": "val", "seed": 0})
    assert list(reused) == [old]


def test_warm_start_from_other_networks_or_nothing_fails_before_writing_but_a_new_start_is_fine(standin, tmp_path):
    assert main(tiny_args(standin, tmp_path / "a", "--max-steps", "1")) == 0
    with pytest.raises(ValueError, match="networks differ"):
        main(tiny_args(standin, tmp_path / "wide", "--width", "4", "--warm-start", str(tmp_path / "a" / "model")))
    with pytest.raises(FileNotFoundError):
        main(tiny_args(standin, tmp_path / "none", "--warm-start", str(tmp_path / "missing")))
    # another start distribution is fine: the networks continue, the start is this run's own
    assert main(tiny_args(standin, tmp_path / "mix", "--max-steps", "1", "--start", "pca-mixture", "--start-clusters",
                          "2", "--start-components", "2", "--warm-start", str(tmp_path / "a" / "model"))) == 0
    assert load_model(tmp_path / "mix" / "model").config["start"]["kind"] == "pca-mixture"
    assert not (tmp_path / "wide").exists() and not (tmp_path / "none").exists()


def test_the_shipped_recipes_second_stage_can_continue_its_first():
    """fmnist-cpu-mixture warm-starts fmnist-cpu models: the same networks, only the chains' start differs."""
    from training.loop import build_model
    from training.run import build_parser, config_from_args

    def model_of(preset):
        argv = ["--preset", preset, "--div", "js"]
        cfg, _ = config_from_args(build_parser().parse_args(argv), argv)
        return cfg, build_model(cfg, {"channels": 1, "image_size": 28})

    (first_cfg, first), (second_cfg, second) = model_of("fmnist-cpu"), model_of("fmnist-cpu-mixture")
    assert first.config["energy"] == second.config["energy"] and first.config["critic"] == second.config["critic"]
    assert (first.config["start"]["kind"], second.config["start"]["kind"]) == ("pca", "pca-mixture")
    assert second_cfg.max_steps > first_cfg.max_steps  # it continues past the first stage's steps


def _state_step(path: Path) -> int:
    try:
        return load_state(path)["step"]
    except Exception:  # not written yet
        return -1


def _run_cli(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "training.run", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(standin, tmp_path):
    extra = ["--max-steps", "9", "--checkpoint-every", "3"]
    ref = _run_cli(tiny_args(standin, tmp_path / "ref", *extra))
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()

    killed = _run_cli(tiny_args(standin, tmp_path / "killed", *extra))
    deadline = time.time() + 300
    while _state_step(tmp_path / "killed" / "state.safetensors") < 3 and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert _state_step(tmp_path / "killed" / "state.safetensors") < 9, "the run finished before it was killed"

    resumed = _run_cli(["--resume", str(tmp_path / "killed"), "--no-progress"])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    a, b = load_state(tmp_path / "ref" / "state.safetensors"), load_state(tmp_path / "killed" / "state.safetensors")
    assert a["step"] == b["step"] == 9
    for part in ("model", "ema", "buffer"):
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), f"{part}.{k} differs after resume"
    steps = [json.loads(ln).get("step") for ln in (tmp_path / "killed" / "stats.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 10)), "stats.jsonl must have each step once after resume"
    command = json.loads((tmp_path / "killed" / "model" / "config.json").read_text())["training"]["command"]
    first, then = command.splitlines()  # the model card lists the first command, then the resume
    assert first.startswith("python -m training.run --preset") and then.endswith("--resume " + str(tmp_path / "killed")
                                                                                  + " --no-progress")


def test_stability_guard_rolls_back_with_lower_lr(standin, tmp_path):
    run = tmp_path / "blowup"
    assert main(tiny_args(standin, run, "--inject-nan-at", "5", "--checkpoint-every", "3")) == 0
    records = [json.loads(ln) for ln in (run / "stats.jsonl").read_text().splitlines()]
    events = [r for r in records if r.get("event") == "rollback"]
    assert len(events) == 1 and events[0]["to_step"] == 3 and events[0]["lr_scale"] == 0.5
    state = load_state(run / "state.safetensors")
    assert state["step"] == 6 and state["lr_scale"] == 0.5
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_non_finite_checkpoint_is_never_written(standin, tmp_path):
    from training.loop import Trainer, TrainConfig
    from training.run import PRESETS

    cfg = TrainConfig(**{**PRESETS["tiny"], "dataset": standin, "run_dir": str(tmp_path)})
    trainer = Trainer(cfg, tmp_path, progress=False)
    with torch.no_grad():
        next(trainer.model.energy.parameters()).fill_(float("nan"))
    with pytest.raises(RuntimeError, match="non-finite"):
        trainer.save_checkpoint()
    assert not (tmp_path / "state.safetensors").exists()


def test_state_file_round_trip(tmp_path):
    state = {"step": 3, "x": torch.arange(4.0), "nested": {0: {"m": torch.ones(2)}, "lr": 1e-3}, "l": [1, torch.zeros(1)],
             "none": None, "inf": float("inf")}
    save_state(tmp_path / "s.safetensors", state)
    back = load_state(tmp_path / "s.safetensors")
    assert back["step"] == 3 and torch.equal(back["x"], state["x"]) and list(back["nested"]) == [0, "lr"]
    assert torch.equal(back["nested"][0]["m"], torch.ones(2)) and back["none"] is None and back["inf"] == float("inf")
    assert not list(tmp_path.glob(".*tmp")), "no temporary file left behind"


@pytest.mark.parametrize("args, message", [
    (["--div", "nope"], "valid names"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--preset", "huge"], "invalid choice"),
    (["--data-restarts", "1.5"], "--data-restarts must be in [0, 1]"),
])
def test_bad_arguments_give_clear_errors(args, message, capsys):
    with pytest.raises(SystemExit):
        main([*args, "--no-progress"])
    assert message in capsys.readouterr().err


def test_resume_needs_a_run_folder(tmp_path):
    with pytest.raises(SystemExit, match="options.json"):
        main(["--resume", str(tmp_path / "nothing")])


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    from training.data import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError):
        main(["--preset", "tiny", "--dataset", "cifar10", "--data-root", str(tmp_path), "--no-progress",
              "--run-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists(), "a failed start leaves no half-written run folder"


from hub_server import hub_server  # noqa: E402,F401  (pytest fixture)


def test_push_to_hub_then_load_back(standin, tmp_path, hub_server):  # noqa: F811
    run = tmp_path / "pushed"
    assert main(tiny_args(standin, run, "--max-steps", "2", "--push-to-hub", "someone/tiny-js")) == 0
    assert "model.safetensors" in hub_server.files("someone/tiny-js")
    card = hub_server.files("someone/tiny-js")["README.md"].decode()
    assert "js" in card and "python -m training.run" in card
    local, remote = load_model(run / "model"), load_model("someone/tiny-js")
    for (k, a), (k2, b) in zip(local.state_dict().items(), remote.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def test_evaluate_reports_metrics_and_sampler(standin, tmp_path):
    from training.evaluate import evaluate

    run = tmp_path / "ev"
    assert main(tiny_args(standin, run, "--max-steps", "2")) == 0
    res = evaluate(str(run / "model"), fid_samples=12, steps=3, fid=False, progress=False)
    assert res["samples"] == 12 and res["sampler"]["steps"] == 3 and res["sampler"]["method"] == "authors"
    for key in ("pca_fd", "energy_test", "energy_samples"):
        assert np.isfinite(res[key])


def test_pca_start_is_fitted_on_the_training_data_and_exported(standin, tmp_path):
    run = tmp_path / "pca"
    assert main(tiny_args(standin, run, "--start", "pca", "--start-components", "4", "--max-steps", "2")) == 0
    model = load_model(run / "model")
    assert model.config["start"] == {"kind": "pca", "components": 4}
    data = datasets.to_float(datasets.load_dataset(standin, "train").images)
    assert torch.allclose(model.start.mean, data.mean(0), atol=1e-6)
    assert (model.start.scale > 0).all()
    x = model.initial_samples(3, torch.Generator().manual_seed(0))
    assert x.shape == (3, *data.shape[1:])


def test_pca_mixture_start_is_fitted_and_exported(standin, tmp_path):
    run = tmp_path / "mixture"
    assert main(tiny_args(standin, run, "--start", "pca-mixture", "--start-clusters", "3", "--start-components", "2",
                          "--max-steps", "2")) == 0
    model = load_model(run / "model")
    assert model.config["start"] == {"kind": "pca-mixture", "clusters": 3, "components": 2}
    data = datasets.to_float(datasets.load_dataset(standin, "train").images)
    weights = model.start.log_weight.exp()
    assert weights.sum().item() == pytest.approx(1.0) and (weights > 0).all()
    mixed = sum(w * part.mean for w, part in zip(weights, model.start.parts))
    assert torch.allclose(mixed, data.mean(0), atol=1e-5)  # the clusters' means average to the data's


@pytest.mark.parametrize("residual", [0.0, 1.0])
def test_restarts_take_the_asked_share_of_the_start_residual(standin, tmp_path, residual):
    from training.loop import Trainer, TrainConfig
    from training.run import PRESETS

    cfg = TrainConfig(**{**PRESETS["tiny"], "dataset": standin, "run_dir": str(tmp_path), "start": "pca",
                         "start_components": 3, "restart_residual": residual})
    trainer = Trainer(cfg, tmp_path, progress=False)
    # the buffer is filled from the start distribution, drawn with the trainer's generator (seed 0)
    want = trainer.model.start.sample(cfg.buffer_size, torch.Generator().manual_seed(0), residual_scale=residual)
    assert torch.equal(trainer.buffer.samples, want)
    if residual == 0:
        assert trainer.model.config["sampler"]["start_residual"] == 0.0  # generation starts there too
    else:
        assert "start_residual" not in trainer.model.config["sampler"]


@pytest.fixture
def shipped_pair(standin, tmp_path, monkeypatch):
    """A checkpoints folder holding tiny-js and tiny-cd (2 training steps each); an empty evaluation cache."""
    root = tmp_path / "checkpoints"
    root.mkdir()
    for div in ("js", "cd"):
        run = tmp_path / f"run-{div}"
        assert main(tiny_args(standin, run, "--div", div, "--max-steps", "2")) == 0
        (run / "model").rename(root / f"tiny-{div}")
    monkeypatch.setenv("FEBM_CHECKPOINTS", str(root))
    monkeypatch.setenv("FEBM_EVAL_CACHE", str(tmp_path / "cache"))
    return root


def test_evaluate_all_writes_one_table_for_every_shipped_model(shipped_pair, tmp_path):
    from training.evaluate import main as evaluate_main

    root = shipped_pair
    out, md, grids = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "grids"
    args = ["--all", "--no-fid", "--fid-samples", "8", "--steps", "2", "--rejection", "--restoration", "4",
            "--out", str(out), "--markdown", str(md), "--grids", str(grids), "--write-cards", "--no-progress"]
    assert evaluate_main(args) == 0
    results = json.loads(out.read_text())
    assert [Path(r["model"]).name for r in results] == ["tiny-cd", "tiny-js"]
    js = results[1]
    assert 0 < js["rejection"]["acceptance_rate"] <= 1 and "rejection" not in results[0]  # cd has no critic
    kept = js["rejection"]["samples"]
    assert kept == round(8 * js["rejection"]["acceptance_rate"])
    if kept >= 2:  # the accepted samples and a random subset of the same size, scored alike
        assert np.isfinite(js["rejection"]["pca_fd"]) and np.isfinite(js["rejection"]["same_size_random"]["pca_fd"])
    assert np.isfinite(js["denoise_psnr_0.2"]) and np.isfinite(js["inpaint_psnr_center"])
    table = md.read_text()
    assert "| tiny-js | js |" in table and "| tiny-cd | cd |" in table
    assert sorted(p.name for p in grids.iterdir()) == ["tiny-cd.png", "tiny-js.png"]
    card = load_model(root / "tiny-js")
    assert card.config["metrics"]["pca_fd"] == pytest.approx(js["pca_fd"])
    assert "pca_fd" in (root / "tiny-js" / "README.md").read_text()


def test_evaluate_all_resumes_from_cached_reports(shipped_pair, tmp_path, monkeypatch):
    from training import evaluate as ev

    root = shipped_pair
    common = ["--no-fid", "--fid-samples", "6", "--steps", "2", "--no-progress"]
    assert ev.main(["tiny-js", "tiny-cd", *common, "--out", str(tmp_path / "first.json")]) == 0  # fills the cache
    first = json.loads((tmp_path / "first.json").read_text())
    (tmp_path / "cache").rename(tmp_path / "cache-of-both")
    for name in ("tiny-js", "tiny-cd"):  # one model at a time (two processes sharing the work) fills it too
        assert ev.main([name, *common, "--samples-png", str(tmp_path / f"{name}.png")]) == 0
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        ev.main(["tiny-js", "tiny-cd", *common, "--samples-png", str(tmp_path / "x.png")])

    def must_not_run(*args, **kwargs):
        raise AssertionError("a cached report was evaluated again")

    real_evaluate = ev.evaluate
    monkeypatch.setattr(ev, "evaluate", must_not_run)
    grids = tmp_path / "grids"
    assert ev.main(["--all", *common, "--out", str(tmp_path / "again.json"), "--grids", str(grids)]) == 0
    again = {r["model"]: r for r in json.loads((tmp_path / "again.json").read_text())}
    assert again["tiny-js"]["pca_fd"] == next(r for r in first if r["model"] == "tiny-js")["pca_fd"]
    assert sorted(p.name for p in grids.iterdir()) == ["tiny-cd.png", "tiny-js.png"]
    with pytest.raises(AssertionError, match="evaluated again"):  # another protocol is not a cache hit
        ev.main(["--all", *common[:-3], "--steps", "3", "--no-progress", "--out", str(tmp_path / "x.json")])

    model = load_model(root / "tiny-js")  # new weights: evaluated again, the other model still reused
    with torch.no_grad():
        next(model.energy.parameters()).add_(0.01)
    model.save_pretrained(root / "tiny-js")
    evaluated = []
    monkeypatch.setattr(ev, "evaluate", lambda name, **kw: evaluated.append(name) or real_evaluate(name, **kw))
    assert ev.main(["--all", *common]) == 0
    assert evaluated == ["tiny-js"]
    assert ev.main(["--all", *common, "--no-cache"]) == 0
    assert evaluated == ["tiny-js", "tiny-cd", "tiny-js"]


def test_tune_picks_the_best_validation_setting_and_writes_it(standin, tmp_path):
    from training import tune

    run = tmp_path / "tune"
    assert main(tiny_args(standin, run, "--max-steps", "2")) == 0
    result = tune.tune(str(run / "model"), n=4, chains=2, denoise_steps=(1,), temperature_scales=(1.0, 1e4),
                       inpaint_steps=(1, 2), log=lambda line: None)
    grid = result["denoise"]["grid"]
    assert len(grid) == 2 and result["denoise"]["val_psnr"] == max(r["psnr"] for r in grid)
    assert result["inpaint"]["steps"] in (1, 2) and "val split" in result["inpaint"]["tuned_on"]
    config_file = run / "model" / "config.json"  # settings of another task, tuned elsewhere, must survive
    config = json.loads(config_file.read_text())
    config["restoration"] = {"deblur": {"steps": 3}}
    config_file.write_text(json.dumps(config))
    assert tune.main([str(run / "model"), "--n", "2", "--chains", "1", "--write"]) == 0
    tuned = load_model(run / "model").config["restoration"]
    assert tuned["denoise"]["chains"] == 1 and tuned["denoise"]["steps"] in (0, 10, 30, 60, 100)
    assert tuned["deblur"] == {"steps": 3}



def test_tune_chooses_generation_steps_by_validation_distance_and_writes_them(standin, tmp_path, capsys):
    from training import tune

    run = tmp_path / "gen"
    assert main(tiny_args(standin, run, "--max-steps", "2", "--start", "pca", "--start-components", "3")) == 0
    folder = str(run / "model")
    result = tune.tune_generation(folder, (0, 3), n=16, metric="pca_fd", log=lambda line: None)
    assert [row["steps"] for row in result["grid"]] == [0, 3]
    assert result["val_pca_fd"] == min(row["pca_fd"] for row in result["grid"])
    assert result["steps"] == min(result["grid"], key=lambda row: row["pca_fd"])["steps"]
    before = load_model(folder).config
    assert tune.main([folder, "--generation-steps", "0", "3", "--generation-samples", "16",
                      "--generation-metric", "pca_fd", "--no-restoration", "--write"]) == 0
    after = load_model(folder).config
    assert after["generation"]["grid"] == result["grid"]  # seeded: the same scores again
    assert after["sampler"] == {**before["sampler"], "steps": result["steps"]}
    assert "restoration" not in after  # not asked for
    assert '"generation"' in capsys.readouterr().out


def test_tune_chooses_generation_noise_and_stores_it_for_generation_only(standin, tmp_path):
    from febm.restore import generation_sampler, model_sampler
    from training import tune

    run = tmp_path / "gen"
    assert main(tiny_args(standin, run, "--max-steps", "2", "--start", "pca", "--start-components", "3")) == 0
    folder = str(run / "model")
    before = load_model(folder).config["sampler"]
    assert tune.main([folder, "--generation-steps", "2", "--generation-noise", "0", "0.5", "--generation-samples",
                      "16", "--generation-metric", "pca_fd", "--no-restoration", "--write"]) == 0
    tuned = load_model(folder)
    grid = tuned.config["generation"]["grid"]
    assert [(row["noise"], row["steps"]) for row in grid] == [(0.0, 2), (0.5, 2)]
    best = min(grid, key=lambda row: row["pca_fd"])
    assert tuned.config["generation"]["noise"] == best["noise"] == tuned.config["sampler"]["generation_noise"]
    assert generation_sampler(tuned).noise == best["noise"]
    assert model_sampler(tuned).noise == before["noise"]  # restoration keeps its temperature
    assert grid[0]["pca_fd"] != grid[1]["pca_fd"]  # the noise reached the chains
    card = (run / "model" / "README.md").read_text()
    assert f'"generation_noise": {best["noise"]}' in card and "restoration keeps `noise`" in card


@pytest.mark.parametrize("args, message", [
    (["--no-restoration"], "nothing to tune"),
    (["--generation-steps", "-1"], "must be >= 0"),
    (["--generation-samples", "1", "--generation-steps", "0"], "--generation-samples >= 2"),
    (["--generation-noise", "0"], "needs --generation-steps"),
    (["--generation-steps", "0", "--generation-noise", "-0.1"], "finite and >= 0"),
])
def test_tune_rejects_bad_generation_arguments(args, message, capsys):
    from training import tune

    with pytest.raises(SystemExit):
        tune.main(["tiny-js", *args])
    assert message in capsys.readouterr().err

def test_results_table_summarises_each_objective_over_its_seeds_of_one_recipe():
    from training.evaluate import results_table

    def row(name, div, fid, steps=200, trained=3000):
        return {"model": name, "divergence": div, "fid": fid, "pca_fd": fid / 100, "samples": 10, "split": "test",
                "training_steps": trained, "sampler": {"method": "authors", "steps": steps, "noise": 0.005}}

    one_each = results_table([row("a-js", "js", 50.0), row("a-cd", "cd", 60.0)])
    assert "Per objective" not in one_each and "| a-js | js | 3000 | 200 (0.005) |" in one_each
    assert 'sampler (each model\'s own Langevin steps and noise): `{"method": "authors"}`' in one_each
    table = results_table([row("js0", "js", 50.0), row("js1", "js", 70.0), row("cd0", "cd", 55.0)])
    summary = table.split("Per objective")[1]
    assert "| cd | 3000 | 200 (0.005) | 1 | 55.0 | 0.550 |" in summary
    assert "| js | 3000 | 200 (0.005) | 2 | 60.0 [50.0, 70.0] | 0.600 [0.500, 0.700] |" in summary
    assert summary.index("| cd |") < summary.index("| js |")  # best (lowest FID) first
    # a model of another recipe (longer training, other sampler) is its own group, never averaged with the seeds
    mixed = results_table([row("js0", "js", 50.0), row("js1", "js", 70.0), row("js-long", "js", 20.0, 10, 3500)])
    assert "| js | 3500 | 10 (0.005) | 1 | 20.0 |" in mixed
    assert "| js | 3000 | 200 (0.005) | 2 | 60.0 [50.0, 70.0]" in mixed
    # colder generation chains are another recipe too, and the table says which noise each model ran
    colder = {**row("js-cold", "js", 30.0), "sampler": {"method": "authors", "steps": 200, "noise": 0.0}}
    noises = results_table([row("js0", "js", 50.0), row("js1", "js", 70.0), colder])
    assert "| js-cold | js | 3000 | 200 (0) |" in noises and "| js | 3000 | 200 (0) | 1 | 30.0 |" in noises
    assert 'own Langevin steps and noise): `{"method": "authors"}`' in noises
    other = results_table([row("a", "js", 1.0), {**row("b", "js", 2.0), "sampler": {"method": "mala", "steps": 9}}])
    assert "each model's own sampler" in other


def test_a_killed_evaluation_resumes_after_its_last_finished_stage(shipped_pair, tmp_path, monkeypatch):
    from training import evaluate as ev

    args = ["tiny-js", "tiny-cd", "--no-fid", "--fid-samples", "6", "--steps", "2", "--restoration", "2",
            "--no-progress", "--out", str(tmp_path / "r.json")]

    def killed(*a, **kw):
        raise KeyboardInterrupt("killed during restoration")

    monkeypatch.setattr(ev, "restoration_psnr", killed)
    with pytest.raises(KeyboardInterrupt):
        ev.main(args)
    stages = list((tmp_path / "cache").glob("*.stages.safetensors"))
    assert len(stages) == 1 and not list((tmp_path / "cache").glob("*.json"))  # tiny-js's samples and features
    monkeypatch.undo()
    monkeypatch.setenv("FEBM_CHECKPOINTS", str(shipped_pair))
    monkeypatch.setenv("FEBM_EVAL_CACHE", str(tmp_path / "cache"))
    generated = []
    real_generate = ev.generate
    monkeypatch.setattr(ev, "generate", lambda model, *a, **kw: generated.append(model) or real_generate(model, *a, **kw))
    assert ev.main(args) == 0
    assert len(generated) == 1  # tiny-cd only: tiny-js resumed from its stored samples
    assert not list((tmp_path / "cache").glob("*.stages.safetensors"))  # removed once the report is written
    resumed = json.loads((tmp_path / "r.json").read_text())[0]
    assert ev.main([*args[:-2], "--no-cache", "--out", str(tmp_path / "fresh.json")]) == 0
    fresh = json.loads((tmp_path / "fresh.json").read_text())[0]
    assert resumed["model"] == "tiny-js" and resumed["pca_fd"] == pytest.approx(fresh["pca_fd"])


def test_a_stages_file_of_another_format_is_ignored_not_fatal(tmp_path, capsys):
    from safetensors.torch import save_file

    from training import evaluate as ev

    stages = tmp_path / "old.stages.safetensors"
    save_file({"samples": torch.zeros(2, 1, 4, 4)}, str(stages))  # plain tensors, no state tree
    assert ev._load_stages(stages) == {} and "ignoring" in capsys.readouterr().err
    ev._save_stages(stages, {"samples": torch.ones(2, 1, 4, 4), "sampling_seconds": 1.5})
    back = ev._load_stages(stages)
    assert back["sampling_seconds"] == 1.5 and torch.equal(back["samples"], torch.ones(2, 1, 4, 4))


def test_evaluate_merge_adds_models_to_an_earlier_table(shipped_pair, tmp_path):
    from training.evaluate import main as evaluate_main

    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps([{"model": "old-model", "divergence": "kl", "samples": 6, "split": "test",
                                    "pca_fd": 1.5, "training_steps": 3}]))
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    common = ["--no-fid", "--fid-samples", "6", "--steps", "2", "--no-progress", "--out", str(out), "--markdown", str(md)]
    assert evaluate_main(["tiny-js", "--merge", str(earlier), *common]) == 0
    assert [Path(r["model"]).name for r in json.loads(out.read_text())] == ["old-model", "tiny-js"]
    assert "| old-model | kl |" in md.read_text() and "| tiny-js | js |" in md.read_text()
    with pytest.raises(SystemExit):  # another protocol cannot be merged
        evaluate_main(["tiny-js", "--merge", str(earlier), *common[:2], "--fid-samples", "8", "--no-progress"])


def test_free_offset_leaves_the_energys_constant_to_the_critic():
    """With free_offset the energy update has no component along a common shift of all energies (the constant
    cancels in p_theta); without it the f-EBM update moves it, and the critic moves it back: E and H drift apart."""
    from febm.objectives import Objective
    from training.step import febm_step

    class Shifted(torch.nn.Module):  # a toy energy with an explicit additive constant
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([0.7, -0.3]))
            self.c = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, x):
            return x @ self.w + self.c

    torch.manual_seed(0)
    x_pos, x_neg = torch.randn(16, 2) + 1.0, torch.randn(16, 2)
    moved = {}
    for free in (False, True):
        energy, critic = Shifted(), Shifted()
        opt_e = torch.optim.SGD(energy.parameters(), lr=0.1)
        opt_h = torch.optim.SGD(critic.parameters(), lr=0.0)  # keep the critic fixed: look at E's update only
        stats = febm_step(energy, critic, Objective("js"), x_pos, x_neg, opt_e, opt_h, free_offset=free)
        moved[free] = (energy.c.item() - 2.0, energy.w.grad.clone(), stats["loss_energy"])
    assert abs(moved[False][0]) > 1e-3 and moved[True][0] == 0.0
    assert moved[True][1].abs().sum() > 1e-3  # the rest of the energy still learns
    assert moved[True][2] == pytest.approx(moved[False][2])  # the loss value is unchanged
    cd = {}
    for free in (False, True):
        energy = Shifted()
        opt = torch.optim.SGD(energy.parameters(), lr=0.1)
        febm_step(energy, None, Objective("cd"), x_pos, x_neg, opt, None, free_offset=free)
        cd[free] = torch.cat([p.detach().flatten() for p in energy.parameters()])
    torch.testing.assert_close(cd[True], cd[False])  # CD's update has no offset component anyway



@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_instance_noise_blurs_what_the_networks_see_but_not_the_chains(standin, tmp_path, monkeypatch, sigma):
    from training import loop
    from training.loop import Trainer, TrainConfig
    from training.run import PRESETS

    seen = {}
    monkeypatch.setattr(loop, "febm_step", lambda energy, critic, objective, x_pos, x_neg, *a, **kw:
                        seen.update(pos=x_pos, neg=x_neg) or {"energy_pos": 0.0, "energy_neg": 0.0})
    cfg = TrainConfig(**{**PRESETS["tiny"], "dataset": standin, "run_dir": str(tmp_path), "instance_noise": sigma})
    trainer = Trainer(cfg, tmp_path, progress=False)
    update = trainer.buffer.update
    monkeypatch.setattr(trainer.buffer, "update", lambda idx, x: seen.update(chains=x.clone()) or update(idx, x))
    trainer.train_step()
    added = seen["neg"] - seen["chains"]
    if sigma == 0:
        assert torch.equal(added, torch.zeros_like(added))
        assert seen["pos"].min() >= 0 and seen["pos"].max() <= 1
    else:
        assert abs(added.std().item() - sigma) < 0.05 and abs(added.mean().item()) < 0.05
        assert seen["pos"].min() < -0.3 and seen["pos"].max() > 1.3  # data in [0, 1] plus the noise
    assert seen["chains"].min() >= 0 and seen["chains"].max() <= 1  # the buffer keeps clean chain states
