"""The Gradio app: ``python -m app`` (see ``python -m app --help``).

    models.py    the shipped checkpoints and --model additions, loaded once and cached
    handlers.py  generate / denoise / inpaint / deblur / upscale: UI values -> febm's public API -> PNG images; bad
                 input -> gr.Error
    ui.py        the layout (model picker, five tabs) and the /generate, /denoise, /inpaint, /deblur, /upscale
                 endpoints
"""

from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
PHOTO_EXAMPLES_DIR = EXAMPLES_DIR / "photos"


def example_paths() -> list[Path]:
    """The example images: Fashion-MNIST test images (made by ``python -m app.make_examples``)."""
    return sorted(EXAMPLES_DIR.glob("*.png"))


def photo_example_paths() -> list[Path]:
    """The photo models' examples: small crops of CC0 / public-domain photos (``python -m app.make_examples
    --photos``; sources and licences in app/examples/photos/README.md)."""
    return sorted(PHOTO_EXAMPLES_DIR.glob("*.png"))
