"""bench.photos: the test-photo loader, the cases' degradations, the tuner, the report writers, the model wiring.

Fast: tiny crops (--max-side 48) and cheap methods; the real run is the benchmark itself (docs/photos_benchmark.md).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("skimage")
photos_bench = pytest.importorskip("bench.photos")

from febm.classical import local_wiener, smooth_fill  # noqa: E402

CASES = photos_bench.CASES
EXPECTED_SHAPES = {
    "astronaut": (512, 512, 3), "camera": (512, 512), "chelsea": (300, 451, 3), "coffee": (400, 600, 3),
    "rocket": (427, 640, 3), "motorcycle_left": (500, 741, 3), "china": (427, 640, 3), "flower": (427, 640, 3),
    "grace_hopper": (600, 512, 3), "aero": (512, 512),
}
PACKAGE_MODULES = {"scikit-image": "skimage", "scikit-learn": "sklearn", "matplotlib": "matplotlib",
                   "PyWavelets": "pywt"}


@pytest.fixture(scope="module")
def small_photos():
    pytest.importorskip("pywt")
    return photos_bench.load_test_photos(["camera", "chelsea"], max_side=48)


def test_loader_returns_the_ten_test_photos():
    for module in PACKAGE_MODULES.values():
        pytest.importorskip(module)
    photos = photos_bench.load_test_photos()
    assert list(photos) == list(EXPECTED_SHAPES)
    for name, image in photos.items():
        assert image.dtype == np.uint8 and image.shape == EXPECTED_SHAPES[name], name
        assert image.std() > 20, name  # a photograph, not a blank
    small = photos_bench.load_test_photo("chelsea", max_side=100)
    assert small.shape == (67, 100, 3)


def test_a_missing_wheel_is_reported_not_fatal(monkeypatch):
    def broken():
        raise ImportError("no module named sklearn")

    monkeypatch.setitem(photos_bench.PHOTOS, "china", ("scikit-learn", broken))
    with pytest.raises(photos_bench.PhotoUnavailable, match="scikit-learn"):
        photos_bench.load_test_photo("china")
    missing = []
    assert photos_bench.load_test_photos(["china"], missing=missing) == {}
    assert missing and "china" in missing[0]
    with pytest.raises(ValueError, match="unknown test photo"):
        photos_bench.load_test_photo("lena")


def test_cases_take_the_right_photos(small_photos):
    grey = photos_bench.case_photos(CASES["grey-25"], small_photos)
    colour = photos_bench.case_photos(CASES["colour-25"], small_photos)
    assert list(grey) == ["camera", "chelsea"] and list(colour) == ["chelsea"]  # camera is grey only
    assert grey["chelsea"].ndim == 2 and colour["chelsea"].ndim == 3
    assert np.array_equal(grey["camera"], small_photos["camera"])
    rgb = small_photos["chelsea"].astype(np.float64)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.abs(grey["chelsea"] - luma).max() <= 1.0  # BT.601 luma, stored as uint8
    assert set(CASES) == {"grey-15", "grey-25", "grey-50", "colour-15", "colour-25", "colour-50", "scribbles",
                          "text"}


def test_denoising_cases_add_clipped_noise_of_sigma():
    clean = np.full((64, 64), 128, dtype=np.uint8)
    for sigma in (15, 25, 50):
        obs = photos_bench.degrade(CASES[f"grey-{sigma}"], clean, 3)
        assert obs.sigma == pytest.approx(sigma / 255) and obs.known is None
        assert obs.observed.min() >= 0 and obs.observed.max() <= 1
        assert np.std(obs.observed - obs.clean) == pytest.approx(sigma / 255, rel=0.05)
        assert np.array_equal(obs.observed, photos_bench.degrade(CASES[f"grey-{sigma}"], clean, 3).observed)
        assert torch.equal(obs.tensor, photos_bench.as_tensor(obs.observed).float())
    black = photos_bench.degrade(CASES["colour-50"], np.zeros((32, 32, 3), np.uint8), 0)
    assert black.observed.shape == (32, 32, 3) and black.observed.min() == 0  # clipped like a stored image
    assert photos_bench.case_seed(0, "grey-25", "camera") != photos_bench.case_seed(0, "grey-25", "aero")


def test_inpainting_cases_hide_strokes_and_text(small_photos):
    clean = small_photos["chelsea"]
    for name in ("scribbles", "text"):
        obs = photos_bench.degrade(CASES[name], clean, 1)
        known = obs.known
        assert known.shape == clean.shape[:2] and known.dtype == bool
        assert 0.03 <= 1 - known.mean() <= 0.3, name
        assert np.array_equal(obs.observed[known], obs.clean[known])  # observed pixels untouched
        assert np.all(obs.observed[~known] == 1.0)  # hidden pixels drawn white
        assert obs.known_tensor.shape == (1, 1, *clean.shape[:2])


def test_gaussian_start_beats_the_input(small_photos):
    for name in ("grey-25", "colour-50", "scribbles", "text"):
        case = CASES[name]
        for photo, clean in photos_bench.case_photos(case, small_photos).items():
            obs = photos_bench.degrade(case, clean, 0)
            start = photos_bench._to_numpy(photos_bench.run_start(obs, {}))
            noisy = photos_bench.score(obs.observed, obs.clean)["psnr"]
            assert photos_bench.score(start, obs.clean)["psnr"] > noisy + 3, (name, photo)


def test_tiny_run_writes_json_markdown_and_figure(tmp_path, small_photos):
    out, md, png = tmp_path / "p.json", tmp_path / "p.md", tmp_path / "p.png"
    report = photos_bench.main(["--photos", "camera", "chelsea", "--max-side", "48", "--cases", "grey-25",
                                "colour-25", "text", "--methods", "input", "start", "tv", "--out", str(out),
                                "--markdown", str(md), "--figure", str(png), "--no-progress",
                                "--no-shipped-models"])
    stored = json.loads(out.read_text())
    assert stored["cases"].keys() == {"grey-25", "colour-25", "text"}
    assert stored["machine"]["torch_threads"] >= 1 and stored["max_side"] == 48
    grey = stored["cases"]["grey-25"]
    assert grey["photos"] == ["camera", "chelsea"] and set(grey["methods"]) == {"input", "start", "tv"}
    assert set(stored["cases"]["text"]["methods"]) == {"input", "start"}  # TV does not inpaint
    for case in stored["cases"].values():
        for m, row in case["methods"].items():
            assert row["s_per_mpx"] >= 0 and 0 <= row["ssim"] <= 1 and row["n"] == len(case["photos"])
            assert set(row["per_photo"]) == set(case["photos"])
        assert case["methods"]["start"]["psnr"] > case["methods"]["input"]["psnr"]
    assert stored["cases"]["grey-25"]["methods"]["tv"]["psnr"] > stored["cases"]["grey-25"]["methods"]["input"]["psnr"]
    assert any("no photo model" in n for n in stored["notes"])
    text = md.read_text()
    assert "| method | PSNR | SSIM | s/Mpx | CPU s/Mpx |" in text and "grey denoising, σ = 25/255 (2 photos)" in text
    assert "<details>" in text and "TV (Chambolle)" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["cases"] == stored["cases"]
    again = tmp_path / "again.md"
    photos_bench.main(["--from-json", str(out), "--markdown", str(again)])  # re-rendered without running
    assert again.read_text() == text


def test_bm3d_runs_only_where_asked(small_photos):
    pytest.importorskip("bm3d")
    cases = [CASES["grey-25"], CASES["grey-50"]]
    results, _ = photos_bench.run_benchmark({"camera": small_photos["camera"]}, cases, ["input", "bm3d"], {},
                                            bm3d_cases={"grey-25"}, progress=False)
    assert set(results["grey-25"]["methods"]) == {"input", "bm3d"} and set(results["grey-50"]["methods"]) == {"input"}
    row = results["grey-25"]["methods"]
    assert row["bm3d"]["psnr"] > row["input"]["psnr"] + 3


def test_tune_picks_from_the_grids():
    yy, xx = np.mgrid[0:32, 0:32]
    smooth = np.stack([128 + 60 * np.sin(xx / 5 + k) * np.cos(yy / 7) for k in range(3)])
    crops = torch.from_numpy(np.stack([smooth, smooth[::-1].copy()]).clip(0, 255).astype(np.uint8))
    grids = {"tv": {"weight": [0.001, 0.05, 0.1]}, "wavelet": {"wavelet": ["db1"], "ycbcr": [False, True]}}
    record = photos_bench.tune(crops, sigmas=(25,), grids=grids, progress=False)
    assert set(record["params"]) == {"grey-25", "colour-25"}
    assert record["params"]["grey-25"]["tv"]["weight"] in (0.05, 0.1)  # a weight of ~0 leaves the noise
    assert "ycbcr" not in record["params"]["grey-25"]["wavelet"] or not record["params"]["grey-25"]["wavelet"]["ycbcr"]
    psnr = record["validation_psnr"]["colour-25"]
    assert psnr["tv"] > psnr["input"] and psnr["wavelet"] > psnr["input"]


def test_params_file_and_fallback(tmp_path):
    params, note = photos_bench.load_params(tmp_path / "missing.json")
    assert params == {} and "--tune" in note
    assert photos_bench.params_for({}, CASES["grey-15"], "tv") == photos_bench.DEFAULT_PARAMS["tv"]
    assert "ycbcr" not in photos_bench.params_for({}, CASES["grey-15"], "wavelet")
    shipped = photos_bench.PARAMS_FILE
    if shipped.exists():  # the tuned file covers every denoising case and tuned method
        params, note = photos_bench.load_params(shipped)
        assert note is None
        for case in (c for c in CASES.values() if c.task == "denoise"):
            assert set(params[case.name]) >= set(photos_bench.TUNED)


# --- photo models: a stand-in for the full-resolution febm.denoise / febm.inpaint --------------------------------
class FakePhotoModel:
    def __init__(self, channels):
        self.channels = channels


def test_the_start_row_takes_the_wiener_window_of_the_chains():
    obs = photos_bench.degrade(CASES["grey-50"], np.full((40, 40), 120, np.uint8) + np.eye(40, dtype=np.uint8) * 60, 1)
    torch.testing.assert_close(photos_bench.run_start(obs, {"window": 3}), local_wiener(obs.tensor, obs.sigma))


def test_photo_models_found_and_restored_through_the_public_api(tmp_path, monkeypatch, small_photos):
    photo, fmnist = tmp_path / "photo-x", tmp_path / "fmnist-x"
    for folder, config in ((photo, {"image_channels": 3}), (fmnist, {"image_shape": [1, 28, 28]})):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
    mono = tmp_path / "runs" / "mono" / "model"
    monkeypatch.setattr(photos_bench, "list_models",
                        lambda: [{"name": "photo-x", "path": str(photo)}, {"name": "fmnist-x", "path": str(fmnist)}])
    found = photos_bench.photo_models([str(mono)])
    assert found == [("photo-x", str(photo)), ("mono-model", str(mono))]  # the Fashion-MNIST model is left out
    assert photos_bench.photo_models([], shipped=False) == []

    calls = []

    def fake_load(location, device="cpu"):
        return FakePhotoModel(1 if location == str(mono) else 3)

    def fake_denoise(model, noisy, sigma=None, *, seed=0, progress=True):
        calls.append(("denoise", model.channels, tuple(noisy.shape), seed))
        return local_wiener(noisy, sigma)

    def fake_inpaint(model, image, known_mask, *, seed=0, progress=True):
        calls.append(("inpaint", model.channels, tuple(image.shape), seed))
        assert known_mask.dtype == torch.bool
        return smooth_fill(image, known_mask)

    monkeypatch.setattr(photos_bench, "load_model", fake_load)
    monkeypatch.setattr(photos_bench, "denoise", fake_denoise)
    monkeypatch.setattr(photos_bench, "inpaint", fake_inpaint)
    loaded = photos_bench.load_models(found)
    cases = [CASES["grey-25"], CASES["colour-25"], CASES["scribbles"]]
    results, figures = photos_bench.run_benchmark(small_photos, cases, ["input", "start"], {}, models=loaded,
                                                  figure_cases=("colour-25",), progress=False)
    h, w = small_photos["chelsea"].shape[:2]
    # every photo reaches the library in its own channels: the grey path is the library's, not the benchmark's
    assert ("denoise", 3, (1, 1, h, w), 0) in calls and ("denoise", 3, (1, 3, h, w), 0) in calls
    assert ("denoise", 1, (1, 3, h, w), 0) in calls  # colour chelsea for the grey model: the library splits it
    assert ("inpaint", 3, (1, 3, h, w), 0) in calls and ("inpaint", 1, (1, 3, h, w), 0) in calls
    for name in ("grey-25", "colour-25", "scribbles"):
        rows = results[name]["methods"]
        assert {"model:photo-x", "model:mono-model"} <= set(rows)
        # the stand-in restores like the start, so it must score the same: the channel plumbing is exact
        assert rows["model:photo-x"]["psnr"] == pytest.approx(rows["start"]["psnr"], abs=1e-9)
    assert "model:photo-x" in figures["colour-25"]["outputs"]
    report = {"cases": results}
    png = photos_bench.figure(report, figures)
    assert png[:4] == b"\x89PNG"


def test_febm_never_imports_bm3d():
    root = Path(photos_bench.__file__).resolve().parents[1] / "febm"
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "import bm3d" not in text and "from bm3d" not in text, path


def _identity_reference(run: Path) -> Path:
    """A bench.photo_supervised run folder whose denoiser returns its input (a zero head): D(y) = y."""
    import safetensors.torch

    from bench.photo_supervised import SIDECAR, WEIGHTS, ResidualDenoiser

    spec = {"width": 4, "kernel_size": 3, "dilations": [1], "activation": "silu", "noise_conditional": True,
            "in_channels": 3}
    net = ResidualDenoiser(spec)
    torch.nn.init.zeros_(net.out.weight)
    torch.nn.init.zeros_(net.out.bias)
    run.mkdir()
    safetensors.torch.save_file(net.state_dict(), run / WEIGHTS)
    (run / SIDECAR).write_text(json.dumps({"net": spec, "steps": 0}))
    return run


def test_supervised_reference_denoises_every_photo_in_its_channels_and_skips_inpainting(tmp_path, small_photos):
    run = _identity_reference(tmp_path / "ref")
    md = tmp_path / "p.md"
    report = photos_bench.main(["--photos", "camera", "chelsea", "--max-side", "48", "--cases", "grey-25",
                                "colour-25", "text", "--methods", "input", "--reference", str(run),
                                "--markdown", str(md), "--no-progress", "--no-shipped-models"])
    for name in ("grey-25", "colour-25"):
        rows = report["cases"][name]["methods"]
        # the identity reference returns the noisy photo (to float32 rounding): grey went in as three equal channels
        assert rows["reference:ref"]["psnr"] == pytest.approx(rows["input"]["psnr"], abs=1e-6), name
        assert rows["reference:ref"]["n"] == len(report["cases"][name]["photos"])
    assert "reference:ref" not in report["cases"]["text"]["methods"]
    assert report["references"] == [str(run)]
    assert "ref (supervised reference: a direct residual denoiser, not an EBM)" in md.read_text()


def test_a_missing_reference_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        photos_bench.main(["--reference", str(tmp_path / "none"), "--no-shipped-models"])
    assert "no exported reference there" in capsys.readouterr().err
