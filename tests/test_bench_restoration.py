"""The restoration benchmark's pieces that can silently be wrong: masks, tuning, fills, the table, the reference net."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not installed: import it from the repo

from bench import restoration as rb  # noqa: E402
from bench import supervised as sup  # noqa: E402

FRACTIONS = {"center": 0.25, "left-half": 0.5, "random-50": 0.5, "random-80": 0.8}


@pytest.mark.parametrize("kind", rb.MASK_KINDS)
@pytest.mark.parametrize("shape", [(28, 28), (17, 23)])
def test_masks_hide_the_right_fraction(kind, shape):
    m = rb.masks(kind, 3, shape, seed=0)
    assert m.shape == (3, 1, *shape)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    unknown = 1 - m.flatten(1).mean(1)
    tolerance = 1 / (shape[0] * shape[1]) if kind.startswith("random") else 0.05  # odd sizes round the box
    assert torch.allclose(unknown, torch.full((3,), FRACTIONS[kind]), atol=tolerance)
    if kind.startswith("random"):
        assert not torch.equal(m[0], m[1])  # a different mask per image
        assert torch.equal(m, rb.masks(kind, 3, shape, seed=0))  # seeded


def test_center_and_left_half_are_where_they_say():
    center, left = rb.masks("center", 1, (28, 28), 0)[0, 0], rb.masks("left-half", 1, (28, 28), 0)[0, 0]
    assert center[14, 14] == 0 and center[0, 0] == 1 and center[27, 27] == 1
    assert (left[:, :14] == 0).all() and (left[:, 14:] == 1).all()


def test_tune_picks_the_best_parameter():
    clean = 0.5 * torch.rand(4, 1, 9, 7, generator=torch.Generator().manual_seed(0))
    noisy = clean + 0.3

    def shift_back(y, sigma, shift):  # a fake denoiser: exact when shift == 0.3
        return y - shift

    best, score = rb.tune(shift_back, rb.grid({"shift": [0.0, 0.1, 0.3, 0.5]}), clean, noisy, sigma=0.3)
    assert best == {"shift": 0.3} and score > 100
    assert rb.at_edge({"shift": [0.0, 0.1, 0.3, 0.5]}, {"shift": 0.5}) == ["shift"]
    assert rb.at_edge({"shift": [0.0, 0.1, 0.3, 0.5]}, best) == []


def test_grid_is_the_product():
    assert rb.grid({"a": [1, 2], "b": ["x", "y", "z"]})[-1] == {"a": 2, "b": "z"}
    assert len(rb.grid({"a": [1, 2], "b": ["x", "y", "z"]})) == 6


def test_fills_keep_observed_pixels_and_fill_a_constant_image_exactly():
    image = torch.full((2, 1, 11, 13), 0.4)
    known = rb.masks("random-80", 2, (11, 13), seed=1)
    for fill in (rb.diffusion_fill, rb.mean_fill, rb.biharmonic):
        out = fill(image * known, known)
        assert out.shape == image.shape
        assert torch.allclose(out, image, atol=1e-4), fill.__name__


def test_markdown_has_a_row_per_method_and_dashes_where_not_run():
    cell = {"psnr": 20.0, "psnr_se": 0.1, "ssim": 0.5, "ssim_se": 0.01, "seconds": 1.0}
    report = {
        "command": "python -m bench.restoration --quick",
        "corruptions": ["sigma=0.1", "center"],
        "results": {"input": {"sigma=0.1": cell, "center": cell}, "tv-chambolle": {"sigma=0.1": cell},
                    "ebm-mean": {"sigma=0.1": cell, "center": cell}},
        "settings": {"model": "m", "n": 4, "dataset": "fashion-mnist", "split": "test", "seed": 0,
                     "tuning_split": "val", "val_n": 2, "model_training_steps": 10, "chains": 2,
                     "sampler": {"method": "authors", "steps": 5, "step_size": 10.0, "clamp": [0, 1]}},
        "notes": ["supervised row skipped"],
    }
    lines = rb.markdown(report).splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith(("| method", "| ---"))]
    assert [r.split(" | ")[0][2:] for r in rows] == ["input", "tv-chambolle", "ebm-mean"]
    assert "| tv-chambolle | 20.00 / 0.500 | — |" in lines
    assert "| method | σ=0.1 | center |" in lines
    assert any("supervised row skipped" in line for line in lines)


def test_sampler_text_names_what_restoration_runs():
    sampler = {"method": "authors", "steps": 50, "step_size": 10.0, "noise": 0.005, "clamp": [0, 1],
               "generation_noise": 0.0025}
    assert rb.sampler_text(sampler) == "authors, 50 steps, step_size 10, noise 0.005"
    assert rb.sampler_text(sampler, steps=False) == "authors, step_size 10, noise 0.005"  # tuned steps say it


@pytest.mark.parametrize("shape", [(1, 1, 28, 28), (2, 1, 17, 23), (1, 3, 9, 10)])
def test_supervised_net_keeps_shapes(shape):
    net = sup.Restorer(channels=shape[1], width=8)
    y = torch.rand(shape)
    out = net(y, torch.ones(shape[0], 1, *shape[2:]), torch.full((shape[0],), 0.2))
    assert out.shape == y.shape


def test_restore_keeps_observed_pixels_of_masked_images_only():
    net = sup.Restorer(width=4)
    x = torch.rand(2, 1, 17, 23)
    known = rb.masks("center", 2, (17, 23), 0)
    out = sup.restore(net, x * known, known, 0.0)
    assert torch.equal(out[known.expand_as(x) > 0], x[known.expand_as(x) > 0])
    assert not torch.equal(sup.restore(net, x, torch.ones_like(known), 0.2), x)  # noise: every pixel is estimated


def test_one_training_step_reduces_the_loss_on_its_batch():
    torch.manual_seed(0)
    net = sup.Restorer(width=8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(8, 1, 17, 23, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    state = gen.get_state()
    before = sup.train_step(net, opt, x, gen)
    gen.set_state(state)  # the same corruption again
    y, known, sigma = sup.random_corruption(x, gen)
    after = (net(y, known, sigma) - x).pow(2).mean().item()
    assert after < before


def test_random_corruption_families():
    x = torch.rand(64, 1, 28, 28)
    y, known, sigma = sup.random_corruption(x, torch.Generator().manual_seed(0))
    noisy = sigma > 0
    assert 0 < noisy.sum() < 64
    assert sigma[noisy].min() >= sup.SIGMA_RANGE[0] and sigma[noisy].max() <= sup.SIGMA_RANGE[1]
    assert (known[noisy] == 1).all() and (known[~noisy].flatten(1).mean(1) < 1).all()
    assert (y[~noisy] * (1 - known[~noisy]) == 0).all() and y.min() >= 0 and y.max() <= 1


def test_width_matches_a_parameter_count_and_weights_round_trip(tmp_path):
    width = sup.width_for(172_545)
    net = sup.Restorer(width=width)
    assert abs(sum(p.numel() for p in net.parameters()) / 172_545 - 1) < 0.02
    small = sup.Restorer(width=5)
    sup.save(small, tmp_path / "w.safetensors", {"steps": 0})
    loaded, meta = sup.load(tmp_path / "w.safetensors")
    assert meta["width"] == 5 and meta["steps"] == 0
    assert all(torch.equal(a, b) for a, b in zip(small.state_dict().values(), loaded.state_dict().values()))


def test_quick_run_on_the_shipped_model_writes_json_table_and_figure(tmp_path):
    from PIL import Image

    from training import data as datasets

    try:
        datasets.load_dataset("fashion-mnist", "test")
    except datasets.DatasetNotFoundError as err:
        pytest.skip(f"Fashion-MNIST not installed: {err}")
    out, md, png = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.png"
    report = rb.main(["--model", "fmnist-js", "--quick", "--out", str(out), "--markdown", str(md),
                      "--figure", str(png), "--supervised", str(tmp_path / "none.safetensors")])
    results = report["results"]
    assert set(report["corruptions"]) <= set(results["ebm-mean"]) and "ebm-blind" in results
    noisy = report["corruptions"][1]  # sigma=0.2: the EBM must improve on the noisy input
    assert results["ebm-mean"][noisy]["psnr"] > results["input"][noisy]["psnr"]
    assert out.exists() and "| ebm-mean |" in md.read_text()
    rows = 1 + 2 * len(rb.FIGURE_CORRUPTIONS)  # clean, then input and EBM per corruption
    zoom = rb.FIGURE_ZOOM
    assert Image.open(png).size == (zoom * (rb.FIGURE_IMAGES * 29 + 1), zoom * (rows * 29 + 1))
    assert "gaussian-posterior" in results


@pytest.fixture
def tiny_images(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(20):
        Image.fromarray((255 * torch.rand(10, 10, generator=gen)).byte().numpy(), "L").save(folder / f"{i}.png")
    return f"folder:{folder}"


def test_supervised_training_killed_then_rerun_resumes_and_a_larger_budget_continues(tiny_images, tmp_path,
                                                                                        monkeypatch):
    common = ["--dataset", tiny_images, "--width", "4", "--batch-size", "4", "--device", "cpu"]
    sup.main(["--out", str(tmp_path / "ref.safetensors"), "--steps", "270", *common])
    real_step, calls = sup.train_step, []

    def dies_at_step_255(*args):
        calls.append(1)
        if len(calls) == 255:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(sup, "train_step", dies_at_step_255)
    out = tmp_path / "run.safetensors"
    with pytest.raises(KeyboardInterrupt):
        sup.main(["--out", str(out), "--steps", "260", *common])
    assert not out.exists() and out.with_suffix(".state.safetensors").exists()  # the state of step 250
    monkeypatch.setattr(sup, "train_step", real_step)
    sup.main(["--out", str(out), "--steps", "260", *common])
    assert sup.load(out)[1]["steps"] == 260
    sup.main(["--out", str(out), "--steps", "270", *common])  # the finished run continues
    ref, _ = sup.load(tmp_path / "ref.safetensors")
    resumed, meta = sup.load(out)
    assert meta["steps"] == 270
    for (name, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_supervised_budget_is_wall_or_cpu_time_not_both(tiny_images, tmp_path):
    with pytest.raises(SystemExit):
        sup.main(["--out", str(tmp_path / "x.safetensors"), "--dataset", tiny_images, "--minutes", "1",
                  "--cpu-minutes", "1"])
