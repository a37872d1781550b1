"""The app in a real browser: headless Chromium (Debian's, through the system chromedriver).

The denoise test's screenshot goes to $FEBM_SCREENSHOT (default: the test's temporary folder);
``python -m app.screenshot`` makes the README's screenshot with the same code.
"""

import os
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from app.handlers import Limits  # noqa: E402
from app.models import ModelRegistry  # noqa: E402
from app.screenshot import _image_shown, browser_missing, chromium, denoise_in_browser, free_port  # noqa: E402
from app.ui import build_app, launch  # noqa: E402
from febm.model import EBM  # noqa: E402

# gradio's queue uses pandas options that pandas 3 deprecates: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")

NET = {"kind": "conv", "in_channels": 1, "width": 4, "downsamples": 2}
SAMPLER = {"method": "authors", "steps": 3, "step_size": 10.0, "noise": 0.005, "grad_clip": 0.01}
TIMEOUT = 120


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    if reason := browser_missing():  # only reason to skip: no browser on this machine
        pytest.skip(reason)
    checkpoints = tmp_path_factory.mktemp("checkpoints")
    EBM("js", energy=NET, critic=NET, dataset="fashion-mnist", image_shape=[1, 28, 28],
        sampler=SAMPLER).save_pretrained(checkpoints / "tiny-js")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEBM_CHECKPOINTS", str(checkpoints))
        demo = build_app(ModelRegistry.discover())
    yield launch(demo, port=free_port(), block=False, quiet=True)
    demo.close()


def test_denoise_an_example_in_chromium(app_url, tmp_path):
    screenshot = Path(os.environ.get("FEBM_SCREENSHOT") or tmp_path / "app.png")
    with chromium() as driver:
        summary = denoise_in_browser(driver, app_url, screenshot, timeout=TIMEOUT)
    assert "σ = 0.200 (given)" in summary and "PSNR" in summary
    with Image.open(screenshot) as shot:
        assert shot.format == "PNG" and shot.width >= 800 and shot.height >= 600


def test_inpaint_painted_pixels_in_chromium(app_url, tmp_path):
    """The editor's own upload path (canvas layers as blobs) with a stroke drawn by the mouse."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium() as driver:
        wait = WebDriverWait(driver, TIMEOUT)
        driver.get(app_url)
        wait.until(lambda d: [t for t in d.find_elements(By.CSS_SELECTOR, "button[role=tab]")
                              if t.text.strip() == "Inpaint"])[0].click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#inpaint-examples button.gallery-item"))[1].click()
        editor = wait.until(lambda d: d.find_element(By.ID, "inpaint-input"))  # slow under load: wait for it
        wait.until(lambda d: "Upload an image" not in editor.text)  # the example is on the canvas
        editor.find_element(By.CSS_SELECTOR, "button[aria-label=Brush]").click()
        canvas = max(editor.find_elements(By.TAG_NAME, "canvas"), key=lambda c: c.size["width"])
        stroke = ActionChains(driver, duration=20).move_to_element_with_offset(canvas, -40, -40).click_and_hold()
        for _ in range(10):
            stroke = stroke.move_by_offset(8, 8)
        stroke.release().perform()
        driver.find_element(By.ID, "inpaint-run").click()
        try:
            wait.until(lambda d: "filled" in d.find_element(By.ID, "inpaint-info").text)
        finally:
            driver.save_screenshot(str(tmp_path / "inpaint.png"))
        summary = driver.find_element(By.ID, "inpaint-info").text
        errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".toast-body")]
    assert not errors
    fraction = int(summary.split("filled ")[1].split("%")[0])
    assert 0 < fraction < 50, summary  # a diagonal stroke, not the whole image


FIELD = {"kind": "field", "width": 8, "kernel_size": 3, "dilations": [1, 2, 1], "activation": "softplus"}


@pytest.fixture(scope="module")
def photo_app_url(tmp_path_factory):
    """A Fashion-MNIST model first, then a tiny photo model; photos above 50,000 pixels need "Downscale to fit"."""
    if reason := browser_missing():
        pytest.skip(reason)
    checkpoints = tmp_path_factory.mktemp("photo-checkpoints")
    EBM("js", energy=NET, critic=NET, dataset="fashion-mnist", image_shape=[1, 28, 28],
        sampler=SAMPLER).save_pretrained(checkpoints / "tiny-js")
    EBM("js", FIELD, FIELD, dataset="photos", image_channels=3, crop_size=16,
        sampler={**SAMPLER, "steps": 1}).save_pretrained(checkpoints / "tiny-photo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEBM_CHECKPOINTS", str(checkpoints))
        demo = build_app(ModelRegistry.discover(), Limits(max_restore_pixels=50_000))
    yield launch(demo, port=free_port(), block=False, quiet=True)
    demo.close()


def pick_the_photo_model_and_tab(driver, wait, tab: str) -> None:
    from selenium.webdriver.common.by import By

    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "input[role=combobox][aria-label=Model]")).click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "li[role=option][aria-label*='tiny-photo']"))[0].click()
    wait.until(lambda d: [t for t in d.find_elements(By.CSS_SELECTOR, "button[role=tab]")
                          if t.text.strip() == tab])[0].click()


def test_a_photo_model_switches_to_native_resolution_in_chromium(photo_app_url, tmp_path):
    """Pick the photo model: σ in 0-255 levels; an example photo above the pixel limit is answered with the limit,
    "Downscale to fit" restores it; before/after in the slider and a download of the PNG."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium() as driver:
        wait = WebDriverWait(driver, TIMEOUT)
        driver.get(photo_app_url)
        pick_the_photo_model_and_tab(driver, wait, "Denoise")
        assert wait.until(lambda d: d.find_elements(By.CSS_SELECTOR,
                                                    "#denoise-sigma-unit input[value='0-255']:checked"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#denoise-photo-examples button.gallery-item"))[0].click()
        wait.until(lambda d: _image_shown(d, "#denoise-input img"))
        driver.find_element(By.ID, "denoise-run").click()
        try:
            fit = wait.until(lambda d: (b := d.find_element(By.ID, "denoise-fit")).is_displayed() and b)
            assert "This photo is 256×256 = 65,536 pixels" in driver.find_element(By.ID, "denoise-info").text
            fit.click()
            wait.until(lambda d: "downscaled" in d.find_element(By.ID, "denoise-info").text)
            wait.until(lambda d: d.find_element(By.ID, "denoise-download").is_displayed())
            wait.until(lambda d: _image_shown(d, "#denoise-slider img"))
        finally:
            driver.save_screenshot(str(tmp_path / "photo.png"))
        summary = driver.find_element(By.ID, "denoise-info").text
        errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".toast-body")]
    assert not errors
    assert summary.startswith("223×223 · σ = 0.098 (given) = 25.0/255") and "downscaled from 256×256" in summary


@pytest.mark.parametrize("tab,expected", [
    ("Deblur", "223×223 · kernel 15×15 · σ = 0.008 (added) = 2.0/255"),  # blur first, Gaussian 1.6: the defaults
    ("Upscale", "111×111 → 222×222 (×2) · σ = "),  # shrink first (the defaults): 223 cut to 222, then halved
])
def test_deblur_and_upscale_tabs_in_chromium(photo_app_url, tmp_path, tab, expected):
    """Pick the photo model and the tab, an example photo (above the pixel limit: "Downscale to fit"), run it with the
    defaults: the summary gives PSNR, the slider shows before/after and the download is offered."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    prefix = tab.lower()
    with chromium() as driver:
        wait = WebDriverWait(driver, TIMEOUT)
        driver.get(photo_app_url)
        pick_the_photo_model_and_tab(driver, wait, tab)
        wait.until(lambda d: not [e for e in d.find_elements(By.ID, f"{prefix}-photo-only") if e.is_displayed()])
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#{prefix}-examples button.gallery-item"))[0].click()
        wait.until(lambda d: _image_shown(d, f"#{prefix}-input img"))
        driver.find_element(By.ID, f"{prefix}-run").click()
        try:
            fit = wait.until(lambda d: (b := d.find_element(By.ID, f"{prefix}-fit")).is_displayed() and b)
            assert "This photo is 256×256" in driver.find_element(By.ID, f"{prefix}-info").text
            fit.click()
            wait.until(lambda d: "PSNR" in d.find_element(By.ID, f"{prefix}-info").text)
            wait.until(lambda d: d.find_element(By.ID, f"{prefix}-download").is_displayed())
            wait.until(lambda d: _image_shown(d, f"#{prefix}-slider img"))
        finally:
            driver.save_screenshot(str(tmp_path / f"{prefix}.png"))
        summary = driver.find_element(By.ID, f"{prefix}-info").text
        errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".toast-body")]
    assert not errors
    assert summary.startswith(expected) and "downscaled from 256×256" in summary, summary
