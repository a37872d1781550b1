"""Write the app's example images: ``python -m app.make_examples`` (run once; the PNGs ship in app/examples).

Six Fashion-MNIST TEST images (never training data), the first of each chosen class, as 28x28 grayscale
PNGs named by their index in the test split and their class.
"""

from pathlib import Path

from PIL import Image

from app import EXAMPLES_DIR

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


if __name__ == "__main__":
    for p in make_examples():
        print(p)
