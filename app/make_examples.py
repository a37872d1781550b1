"""Write the app's example images: ``python -m app.make_examples`` (run once; the PNGs ship in app/examples).

Six Fashion-MNIST TEST images (never training data), the first of each chosen class, as 28x28 grayscale
PNGs named by their index in the test split and their class; and three crops of scikit-image's photos for the
photo models (``--photos``, needs scikit-image, the ``bench`` extra) in app/examples/photos: astronaut (public
domain, NASA), coffee and chelsea (CC0), per the licence notes in ``skimage.data``'s docstrings. These photos are
test photos of the benchmarks (bench/photos.py): app examples only, never for training or tuning.
"""

from pathlib import Path

from PIL import Image

from app import EXAMPLES_DIR, PHOTO_EXAMPLES_DIR

CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
CHOSEN_CLASSES = (9, 1, 2, 5, 8, 0)  # boot, trouser, pullover, sandal, bag, t-shirt


def make_examples(out: Path = EXAMPLES_DIR) -> list[Path]:
    from training.data import load_dataset  # here: the app itself never imports training

    data = load_dataset("fashion-mnist", "test")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for label in CHOSEN_CLASSES:
        index = int((data.labels == label).nonzero()[0])
        path = out / f"test-{index:04d}-{CLASS_NAMES[label]}.png"
        Image.fromarray(data.images[index, 0].numpy()).save(path)
        paths.append(path)
    return paths


# name: (left, upper, right, lower) of the crop, in the photo as skimage.data returns it
PHOTO_CROPS = {"astronaut": (96, 16, 352, 272), "coffee": (150, 60, 470, 300), "chelsea": (70, 20, 390, 260)}


def make_photo_examples(out: Path = PHOTO_EXAMPLES_DIR) -> list[Path]:
    import skimage.data  # the bench extra; the app itself never imports it

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, box in PHOTO_CROPS.items():
        crop = Image.fromarray(getattr(skimage.data, name)()).crop(box)
        path = out / f"{name}-{crop.width}x{crop.height}.png"
        crop.save(path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    import sys

    for p in make_photo_examples() if "--photos" in sys.argv[1:] else make_examples():
        print(p)
