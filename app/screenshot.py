"""``python -m app.screenshot docs/app.png``: the README's screenshot, made by the code the browser test runs.

Starts the app on the shipped checkpoints (plus any --model), opens it in headless Chromium (Debian's
``chromium`` and ``chromium-driver`` through selenium, the system chromedriver: nothing is downloaded), goes to
the Denoise tab, picks the first example, runs it, and saves a screenshot once the result is shown.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")
WINDOW = (1400, 1200)


def browser_missing() -> str | None:
    """Why the browser cannot run here, or None."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    return f"{' and '.join(missing)} missing (apt-get install chromium chromium-driver)" if missing else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def chromium(window: tuple[int, int] = WINDOW):
    """A headless Chromium driven by the system chromedriver, with a fresh profile that is removed after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Both paths given: selenium skips selenium-manager, which would otherwise download a driver or browser.
    profile = tempfile.mkdtemp(prefix="febm-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def denoise_in_browser(driver, url: str, screenshot: str | Path, timeout: float = 120) -> str:
    """Denoise the first example in the page at ``url`` as a person would; save a screenshot; return the
    result's summary text. Raises TimeoutError (with any error the page shows) if no result appears."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout)
    driver.get(url)
    tab = wait.until(lambda d: next((t for t in d.find_elements(By.CSS_SELECTOR, "button[role=tab]")
                                     if t.text.strip() == "Denoise"), None))
    tab.click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#denoise-examples button.gallery-item"))[0].click()
    wait.until(lambda d: _image_shown(d, "#denoise-input img"))
    driver.find_element(By.ID, "denoise-run").click()
    try:
        wait.until(lambda d: _image_shown(d, "#denoise-output img")
                   and "σ" in d.find_element(By.ID, "denoise-info").text)
    except TimeoutException:
        errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".toast-body")]
        raise TimeoutError(f"no denoised image after {timeout} s; the page shows: {errors or 'no error'}") from None
    driver.execute_script("window.scrollTo(0, 0);")
    Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(screenshot))
    return driver.find_element(By.ID, "denoise-info").text


def _image_shown(driver, selector: str) -> bool:
    """An <img> matching ``selector`` has loaded and decoded its picture."""
    return bool(driver.execute_script(
        "const i = document.querySelector(arguments[0]); return !!i && i.complete && i.naturalWidth > 0;", selector))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.screenshot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="the screenshot, a .png file (e.g. docs/app.png)")
    parser.add_argument("--model", action="append", default=[], metavar="PATH_OR_REPO",
                        help="add a model folder or Hub repo id, as for python -m app")
    args = parser.parse_args(argv)
    if reason := browser_missing():
        sys.exit(f"error: {reason}")
    from .models import ModelRegistry, no_models_message
    from .ui import build_app, launch

    registry = ModelRegistry.discover(args.model)
    if not len(registry):
        sys.exit(f"error: {no_models_message()}")
    demo = build_app(registry)
    url = launch(demo, port=free_port(), block=False, quiet=True)
    try:
        with chromium() as driver:
            print(denoise_in_browser(driver, url, args.out))
        print(f"wrote {args.out}")
    finally:
        demo.close()


if __name__ == "__main__":
    main()
