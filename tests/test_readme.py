"""The README: a restored photo first, then the two set-up commands, a Python example that runs, links that resolve."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
MOVED = ["usage.md", "findings.md", "training.md", "method.md", "development.md"]  # the README's long sections


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_the_readme_leads_with_a_restored_photo_then_the_two_commands():
    first_image = re.search(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert first_image.group(1) == "docs/readme_photo.png" and (ROOT / first_image.group(1)).is_file()
    assert first_image.start() < README.index("```")
    assert code_blocks(README, "bash")[0].splitlines() == [
        "make app     # set up everything (venv, torch, data) and run the main job",
        "make test    # set up everything and run the whole test suite",
    ]


def test_the_readme_is_short():
    assert len(README.encode()) < 8000


def test_links_resolve():
    for page in [ROOT / "README.md", *(ROOT / "docs" / name for name in MOVED)]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), f"{page.name} links to a missing {target}"


def test_the_python_example_runs(tmp_path):
    """The README's API example, as written, on a small photo with the shipped photo model."""
    (example,) = code_blocks(README, "python")
    pixels = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.jpg")
    env = {k: v for k, v in os.environ.items() if k != "FEBM_CHECKPOINTS"}  # the shipped checkpoints, as written
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    for name, size in (("clean.png", (48, 40)), ("filled.png", (48, 40)), ("sharp.png", (48, 40)),
                       ("big.png", (96, 80))):
        with Image.open(tmp_path / name) as out:
            assert out.size == size and out.mode == "RGB"
