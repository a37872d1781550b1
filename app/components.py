"""Inputs that hand the handlers file paths, unopened.

gr.Image and gr.ImageEditor decode uploads before the handler runs, so a corrupt or huge file would fail inside
gradio with no useful message. These pass paths instead: the handlers decode them with febm.imageio (pixel count
checked before decoding) and answer bad files with gr.Error. ``is_template`` keeps the built-in frontend.

Gradio writes a type stub (components.pyi) beside any module that defines components: it belongs to this file.
"""

from __future__ import annotations

import gradio as gr
from gradio.data_classes import FileData
from gradio.processing_utils import save_base64_to_cache, save_bytes_to_cache

from .handlers import UserError


def cached_path(payload: FileData | bytes, cache_dir: str, name: str) -> str:
    if isinstance(payload, (bytes, bytearray, memoryview)):  # the editor's canvas layers arrive as blobs
        return save_bytes_to_cache(bytes(payload), f"{name}.png", cache_dir)
    if payload.url and payload.url.startswith("data:"):
        return save_base64_to_cache(payload.url, cache_dir)
    if payload.path is None:
        raise UserError(f"the {name} upload has no file")
    return payload.path


class ImageFile(gr.Image):
    """gr.Image whose value, as an input, is the uploaded file's path."""

    is_template = True

    def preprocess(self, payload: FileData | None) -> str | None:
        return None if payload is None else cached_path(payload, self.GRADIO_CACHE, "image")


class MaskEditor(gr.ImageEditor):
    """gr.ImageEditor whose value, as an input, is {"background": path, "layers": [paths], "composite": path}."""

    is_template = True

    def convert_and_format_image(self, file, flatten_on_white: bool = False) -> str | None:
        return None if file is None else cached_path(file, self.GRADIO_CACHE, "layer")
