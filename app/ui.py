"""The layout: a model picker and five tabs (Generate, Denoise, Inpaint, and for photo models Deblur and Upscale),
each wired to a handler and exposed as an API endpoint with a stable name (/generate, /denoise, /inpaint, /deblur,
/upscale). The work is in handlers.py."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from febm.imageio import PRESET_MASKS

from . import example_paths, photo_example_paths
from .components import ImageFile, MaskEditor
from .handlers import KERNEL_IMAGE, PAINTED, Handlers, Limits
from .models import ModelEntry, ModelRegistry, no_models_message

TITLE = "f-EBM Restore"
INTRO = (f"# {TITLE}\nGenerate, denoise and inpaint images, deblur and upscale photos, with energy-based models "
         "trained by f-divergence minimisation ([Yu, Song, Song & Ermon, ICML 2020](https://arxiv.org/abs/2003.03463)). "
         "Fashion-MNIST models work at their own 28×28; photo models restore photos at the photo's own "
         "resolution. Results are PNG.")
# Model-sized images (28x28) are shown enlarged, with sharp pixels.
CSS = """
.pixelated img, .pixelated canvas { image-rendering: pixelated; }
.pixelated .image-frame img, .pixelated .image-container img { width: 100%; height: 100%; object-fit: contain; }
"""
CONCURRENCY_LIMIT = 2  # requests run at once; the others wait in the queue
QUEUE_SIZE = 64
DEFAULT_INFO = "0 = the model's default"


def output_image(label: str, elem_id: str | None = None) -> gr.Image:
    return gr.Image(label=label, type="pil", format="png", interactive=False, height=240, elem_id=elem_id,
                    elem_classes=["pixelated"])


# Numbers without minimum/maximum: the handlers check the range and name the field in their message.
def steps_input(limits: Limits, kind: str = "Langevin") -> gr.Number:
    return gr.Number(0, precision=0, label=f"{kind} steps (up to {limits.max_steps})", info=DEFAULT_INFO)


def seed_input() -> gr.Number:
    return gr.Number(-1, precision=0, label="Seed", info="-1 = random")


def sampling_inputs(limits: Limits) -> tuple[gr.Number, gr.Slider, gr.Number]:
    steps = steps_input(limits)
    chains = gr.Slider(0, limits.max_chains, value=0, step=1, label="Chains averaged (posterior mean)",
                       info=DEFAULT_INFO)
    return steps, chains, seed_input()


# --- the tabs ----------------------------------------------------------------------------------------------------
def generate_tab(handlers: Handlers, model: gr.Dropdown, critic: bool) -> gr.Checkbox:
    limits = handlers.limits
    with gr.Row():
        with gr.Column(scale=1):
            n = gr.Slider(1, limits.max_images, value=16, step=1, label="Number of images")
            steps, seed = steps_input(limits), seed_input()
            rejection = gr.Checkbox(**rejection_state(critic))
            run = gr.Button("Generate", variant="primary", elem_id="generate-run")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="Samples", format="png", columns=8, height="auto", elem_classes=["pixelated"])
            chain = gr.Image(label="Langevin chain", type="pil", format="png", interactive=False,
                             elem_classes=["pixelated"])
            gr.Markdown("The chain: one row per sample (up to 8), from its start (left) to the sample (right).")
            info = gr.Markdown(label="summary")
    run.click(handlers.generate, [model, n, steps, seed, rejection], [gallery, chain, info], api_name="generate")
    return rejection


def rejection_state(critic: bool) -> dict:
    if critic:
        return {"value": False, "interactive": True, "label": "Rejection sampling",
                "info": "keep samples with probability ∝ the learned density ratio exp(H + E); "
                        "the acceptance rate is reported"}
    return {"value": False, "interactive": False, "label": "Rejection sampling (unavailable)",
            "info": "needs the critic's density ratio: this model has no critic (e.g. contrastive divergence)"}


SIGMA_LABELS = {"0-1": "σ (noise std) in [0, 1] units: a fraction of the pixel range",
                "0-255": "σ (noise std) in 0–255 levels of an 8-bit image"}
SIGMA_UNIT_CHOICES = [("0–255 levels", "0-255"), ("[0, 1] units", "0-1")]
SIGMA_DEFAULTS = {"0-1": 0.2, "0-255": 25.0}  # Fashion-MNIST models: 0.2 in [0, 1] units; photo models: 25/255
SIGMA_INFO = "σ_[0,1] = σ_255 / 255; for an already noisy image 0 = estimate it from the image"
BRUSH_COLOURS = ["#ff00ff"]


def sigma_unit_of(entry: ModelEntry | None) -> str:
    """The unit the σ field shows for a model: 0-255 levels for photo models (what people quote), else [0, 1]."""
    return "0-255" if entry is not None and entry.fully_convolutional else "0-1"


def sigma_field(unit: str, value: float | None = None) -> gr.Number:
    return gr.Number(SIGMA_DEFAULTS[unit] if value is None else value, label=SIGMA_LABELS[unit], info=SIGMA_INFO)


def convert_sigma(unit: str, sigma):
    """The σ field after the user switched its unit: the same noise level in the new unit, relabelled."""
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        return sigma_field(unit)
    value = round(value * 255, 2) if unit == "0-255" else round(value / 255, 5)
    return sigma_field(unit, value)


def show_view(view: dict | None):
    """After a restoration: the before/after slider and the download for a photo, the "Downscale to fit" button
    when the photo was above the pixel limit."""
    view = view or {}
    if view.get("after"):
        return ((view["before"], view["after"]), gr.DownloadButton(value=view["after"], visible=True),
                gr.Button(visible=False))
    return None, gr.DownloadButton(value=None, visible=False), gr.Button(visible=bool(view.get("over_limit")))


@dataclass
class RestoreTab:
    """The parts of the Denoise or Inpaint tab that change with the kind of model (Fashion-MNIST or photo)."""

    small_examples: gr.Column
    photo_examples: gr.Column
    small_outputs: gr.Row
    photo_outputs: gr.Column
    slider: gr.ImageSlider
    download: gr.DownloadButton
    fit: gr.Button
    downscale: gr.Checkbox

    def switch(self, photo: bool) -> dict:
        return {self.small_examples: gr.Column(visible=not photo), self.photo_examples: gr.Column(visible=photo),
                self.small_outputs: gr.Row(visible=not photo), self.photo_outputs: gr.Column(visible=photo),
                self.slider: None, self.download: gr.DownloadButton(value=None, visible=False),
                self.fit: gr.Button(visible=False), self.downscale: gr.Checkbox(visible=photo)}


def examples(image, photo: bool, prefix: str) -> tuple[gr.Column, gr.Column]:
    with gr.Column(visible=not photo) as small:
        gr.Examples([[str(p)] for p in example_paths()], inputs=[image], label="Fashion-MNIST test images",
                    elem_id=f"{prefix}-examples")
    with gr.Column(visible=photo) as photos:
        gr.Examples([[str(p)] for p in photo_example_paths()], inputs=[image],
                    label="Photos (crops of CC0 / public-domain photos from scikit-image)",
                    elem_id=f"{prefix}-photo-examples")
    return small, photos


def downscale_input(handlers: Handlers, photo: bool) -> gr.Checkbox:
    limit = handlers.limits.max_restore_pixels
    rule = (f"{limit:,} pixels (--max-restore-pixels)" if limit is not None else
            f"automatic, what the CPU restores in about {handlers.limits.restore_seconds:.0f} s with the steps asked "
            "for")
    return gr.Checkbox(False, label="Downscale a photo above the pixel limit to fit", visible=photo,
                       info=f"the limit: {rule}; without this, a larger photo is answered with the limit and a "
                            "Downscale to fit button")


def photo_outputs(prefix: str, photo: bool) -> tuple[gr.Column, gr.ImageSlider, gr.DownloadButton]:
    with gr.Column(visible=photo) as column:
        slider = gr.ImageSlider(label="Before / after (drag the handle)", type="filepath", format="png",
                                interactive=False, max_height=640, elem_id=f"{prefix}-slider")
        download = gr.DownloadButton("Download the full-resolution PNG", visible=False, elem_id=f"{prefix}-download")
    return column, slider, download


def run_buttons(prefix: str, label: str) -> tuple[gr.Button, gr.Button, gr.Button]:
    with gr.Row():
        run = gr.Button(label, variant="primary", elem_id=f"{prefix}-run")
        stop = gr.Button("Stop", variant="stop", elem_id=f"{prefix}-stop")
    fit = gr.Button("Downscale to fit", variant="secondary", visible=False, elem_id=f"{prefix}-fit")
    return run, stop, fit


API_RESULTS = ("Fashion-MNIST models return images at the model's size (28×28); photo models return PNG files at the "
               "photo's own size, with its alpha channel. A photo above the pixel limit is not restored: the summary "
               "says so and the images are empty, unless downscale=True (restore it downscaled to fit).")
API_DESCRIPTIONS = {
    "denoise": ("Denoise an image -> (the noisy input, the denoised image, a summary). sigma is the noise std in the "
                "unit sigma_unit names: '0-1' (the default: a fraction of the [0, 1] pixel range, e.g. 0.1) or "
                "'0-255' (levels of an 8-bit image, e.g. 25.5 = 0.1 x 255); with noise_mode 'noisy', sigma 0 = "
                "estimate it. " + API_RESULTS),
    "inpaint": ("Fill the painted pixels (or a preset mask) -> (the input with the pixels to fill in grey, the "
                "inpainted image, a summary). " + API_RESULTS),
    "deblur": ("Deblur a photo (photo models only) -> (the blurred input, the deblurred photo, a summary), PNG files at "
               "the photo's size. kernel: 'gaussian' (kernel_size = its σ in px), 'box' (its side), 'motion' (its "
               "length, at kernel_angle degrees) or 'image' (kernel_image: grey values normalised to sum 1). sigma: "
               "the noise std in 0-255 levels (0 = estimate it). blur_first (default True): blur the photo and add "
               "noise of sigma first, to try it; the summary then gives PSNR. " + API_RESULTS),
    "upscale": ("Enlarge a photo ×2, ×3 or ×4 (photo models only) -> (the small input, the upscaled photo, a summary), "
                "PNG files. sigma: the noise std in 0-255 levels (0 = the model's tuned value, else estimated). "
                "shrink_first (default True): shrink the photo by the factor first (antialiased bicubic, as PIL does; "
                "noise of sigma added if > 0), to try it; the summary then gives PSNR. The pixel limit counts the "
                "result. " + API_RESULTS),
}
def photo_only_note(registry: ModelRegistry) -> str:
    names = " or ".join(f"`{k}`" for k in registry.photo_keys())
    return f"**Photo models only:** pick {names} in the model menu." if names else "**Photo models only** (none here)."


def wire(handler, api_name: str, inputs: list, outputs: list, run: gr.Button, stop: gr.Button, fit: gr.Button,
         tab: RestoreTab | PhotoTab, view: gr.State) -> None:
    """Run (the public endpoint), Downscale to fit (the same with downscale=True), Stop (cancels either)."""
    shown = [tab.slider, tab.download, tab.fit]
    running = run.click(handler, inputs, outputs, api_name=api_name, api_description=API_DESCRIPTIONS[api_name])
    running.success(show_view, view, shown, api_visibility="private")
    fitting = fit.click(handler, [*inputs[:-1], gr.State(True)], outputs, api_visibility="private")
    fitting.success(show_view, view, shown, api_visibility="private")
    stop.click(None, None, None, cancels=[running, fitting], api_visibility="private")


def denoise_tab(handlers: Handlers, model: gr.Dropdown, first: ModelEntry | None) -> tuple[RestoreTab, gr.Number,
                                                                                            gr.Radio, ImageFile]:
    photo = first is not None and first.fully_convolutional
    with gr.Row():
        with gr.Column(scale=1):
            image = ImageFile(label="Image", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                              height=240, elem_id="denoise-input", elem_classes=[] if photo else ["pixelated"])
            small_examples, photo_examples = examples(image, photo, "denoise")
            mode = gr.Radio([("add synthetic noise of σ", "add"), ("image is already noisy", "noisy")], value="add",
                            label="Noise")
            # the API's defaults are the components' initial values: σ in [0, 1] units, as before the unit existed
            # (a photo model as the first model switches the page to 0-255 levels on load)
            sigma = sigma_field("0-1")
            unit = gr.Radio(SIGMA_UNIT_CHOICES, value="0-1", label="σ unit", elem_id="denoise-sigma-unit")
            steps, chains, seed = sampling_inputs(handlers.limits)
            downscale = downscale_input(handlers, photo)
            run, stop, fit = run_buttons("denoise", "Denoise")
        with gr.Column(scale=2):
            with gr.Row(visible=not photo) as small:
                noisy = output_image("Noisy input", "denoise-noisy")
                result = output_image("Denoised", "denoise-output")
            large, slider, download = photo_outputs("denoise", photo)
            info = gr.Markdown(label="summary", elem_id="denoise-info")
            view = gr.State()
    tab = RestoreTab(small_examples, photo_examples, small, large, slider, download, fit, downscale)
    unit.input(convert_sigma, [unit, sigma], sigma, api_visibility="private")
    wire(handlers.denoise, "denoise", [model, image, mode, sigma, steps, chains, seed, unit, downscale],
         [noisy, result, info, view], run, stop, fit, tab, view)
    return tab, sigma, unit, image


@dataclass
class PhotoTab:
    """The parts of the Deblur or Upscale tab that change with the kind of model (photo models only)."""

    note: gr.Markdown
    slider: gr.ImageSlider
    download: gr.DownloadButton
    fit: gr.Button

    def switch(self, photo: bool) -> dict:
        return {self.note: gr.Markdown(visible=not photo), self.slider: None,
                self.download: gr.DownloadButton(value=None, visible=False), self.fit: gr.Button(visible=False)}


def photo_task_tab(handlers: Handlers, model: gr.Dropdown, first: ModelEntry | None, task: str, label: str,
                   shown: tuple[str, str], options) -> PhotoTab:
    """A photo models' tab, run by ``handlers.<task>`` as the endpoint /<task>: the photo and its examples, the task's
    own inputs (``options()`` makes them and returns them in the endpoint's order), steps, seed, downscale and the
    buttons; the slider, the download, the summary and (hidden: the API's return values) the ``shown`` before and
    after files."""
    photo = first is not None and first.fully_convolutional
    with gr.Row():
        with gr.Column(scale=1):
            note = gr.Markdown(photo_only_note(handlers.registry), visible=not photo, elem_id=f"{task}-photo-only")
            image = ImageFile(label="Photo", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                              height=240, elem_id=f"{task}-input")
            gr.Examples([[str(p)] for p in photo_example_paths()], inputs=[image],
                        label="Photos (crops of CC0 / public-domain photos from scikit-image)",
                        elem_id=f"{task}-examples")
            inputs = options()
            steps, seed = steps_input(handlers.limits, "Restoration"), seed_input()
            downscale = downscale_input(handlers, True)
            run, stop, fit = run_buttons(task, label)
        with gr.Column(scale=2):
            _, slider, download = photo_outputs(task, True)
            files = [gr.Image(label=name, type="filepath", format="png", visible=False) for name in shown]
            info = gr.Markdown(label="summary", elem_id=f"{task}-info")
            view = gr.State()
    tab = PhotoTab(note, slider, download, fit)
    wire(getattr(handlers, task), task, [model, image, *inputs, steps, seed, downscale], [*files, info, view], run,
         stop, fit, tab, view)
    return tab


def deblur_inputs() -> list:
    """-> [kernel, kernel_size, kernel_angle, kernel_image, blur_first, sigma]."""
    blur_first = gr.Checkbox(True, label="Blur the photo first (to try it: the summary then gives PSNR)")
    kernel = gr.Dropdown([("Gaussian: size = its σ in px", "gaussian"), ("box: size = its side", "box"),
                          ("motion: size = its length, at the angle", "motion"),
                          ("a kernel image (upload below)", KERNEL_IMAGE)], value="gaussian", label="Blur kernel",
                         elem_id="deblur-kernel")
    with gr.Row():
        size = gr.Number(1.6, label="Kernel size (px)", elem_id="deblur-kernel-size")
        angle = gr.Number(0, label="Motion angle (degrees)", info="counter-clockwise from horizontal")
    kernel_image = ImageFile(label="Kernel image (grey values, normalised to sum 1)", type="filepath",
                             image_mode=None, sources=["upload", "clipboard"], height=120,
                             elem_id="deblur-kernel-image")
    sigma = gr.Number(2.0, label="σ (noise std) in 0–255 levels of an 8-bit image",
                      info="blur first adds noise of this σ; for a blurred photo 0 = estimate it")
    return [kernel, size, angle, kernel_image, blur_first, sigma]


def upscale_inputs() -> list:
    """-> [factor, shrink_first, sigma]."""
    factor = gr.Radio([2, 3, 4], value=2, label="Factor", elem_id="upscale-factor")
    shrink_first = gr.Checkbox(True, label="Shrink the photo first (to try it: the summary then gives PSNR)")
    sigma = gr.Number(0, label="σ (noise std) in 0–255 levels of an 8-bit image",
                      info="0 = the model's tuned value, else estimated; shrink first adds noise of σ > 0")
    return [factor, shrink_first, sigma]


def brush(photo: bool) -> gr.Brush:
    return gr.Brush(colors=BRUSH_COLOURS, color_mode="fixed", default_size="auto" if photo else 2)


def eraser(photo: bool) -> gr.Eraser:
    return gr.Eraser(default_size="auto" if photo else 2)


def inpaint_tab(handlers: Handlers, model: gr.Dropdown, first: ModelEntry | None) -> tuple[RestoreTab, MaskEditor]:
    photo = first is not None and first.fully_convolutional
    with gr.Row():
        with gr.Column(scale=1):
            editor = MaskEditor(label="Image: paint the pixels to fill", type="filepath", image_mode=None,
                                sources=["upload", "clipboard"], layers=False, transforms=(), brush=brush(photo),
                                eraser=eraser(photo), height=320, elem_id="inpaint-input",
                                elem_classes=[] if photo else ["pixelated"])
            small_examples, photo_examples = examples(editor, photo, "inpaint")
            mask = gr.Dropdown([("painted pixels", PAINTED)] + [(m, m) for m in PRESET_MASKS], value=PAINTED,
                               label="Mask", info="the painted pixels, or a preset region to fill")
            steps, chains, seed = sampling_inputs(handlers.limits)
            downscale = downscale_input(handlers, photo)
            run, stop, fit = run_buttons("inpaint", "Inpaint")
        with gr.Column(scale=2):
            with gr.Row(visible=not photo) as small:
                masked = output_image("Input (gray: to fill)", "inpaint-masked")
                result = output_image("Inpainted", "inpaint-output")
            large, slider, download = photo_outputs("inpaint", photo)
            info = gr.Markdown(label="summary", elem_id="inpaint-info")
            view = gr.State()
    tab = RestoreTab(small_examples, photo_examples, small, large, slider, download, fit, downscale)
    wire(handlers.inpaint, "inpaint", [model, editor, mask, steps, chains, seed, downscale],
         [masked, result, info, view], run, stop, fit, tab, view)
    return tab, editor


# --- the app -----------------------------------------------------------------------------------------------------
def build_app(registry: ModelRegistry, limits: Limits = Limits()) -> gr.Blocks:
    """The queued Blocks app: start it with :func:`launch`."""
    handlers = Handlers(registry, limits)
    first = next(iter(registry.entries.values()), None)
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(INTRO)
        if first is None:
            gr.Markdown(f"**{no_models_message()}**", elem_id="no-models")
        model = gr.Dropdown(registry.choices(), value=first.key if first else None, label="Model",
                            interactive=True)
        card = gr.Markdown(first.card_summary() if first else "")
        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                rejection = generate_tab(handlers, model, first is not None and first.has_critic)
            with gr.Tab("Denoise", id="denoise"):
                denoise, sigma, unit, image = denoise_tab(handlers, model, first)
            with gr.Tab("Inpaint", id="inpaint"):
                inpaint, editor = inpaint_tab(handlers, model, first)
            with gr.Tab("Deblur", id="deblur"):
                deblur = photo_task_tab(handlers, model, first, "deblur", "Deblur", ("Blurred input", "Deblurred"),
                                        deblur_inputs)
            with gr.Tab("Upscale", id="upscale"):
                upscale = photo_task_tab(handlers, model, first, "upscale", "Upscale", ("Small input", "Upscaled"),
                                         upscale_inputs)
        parts = ModelParts(card, rejection, denoise, inpaint, sigma, unit, image, editor, deblur, upscale)
        model.change(lambda key, current: model_changed(registry, key, current, parts), [model, unit],
                     parts.outputs(), api_visibility="private")
        if first is not None and first.fully_convolutional:  # the page shows a photo model's units and layout
            demo.load(lambda key, current: model_changed(registry, key, current, parts), [model, unit],
                      parts.outputs(), api_visibility="private")
    return demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)


@dataclass
class ModelParts:
    """Everything the model picker changes."""

    card: gr.Markdown
    rejection: gr.Checkbox
    denoise: RestoreTab
    inpaint: RestoreTab
    sigma: gr.Number
    unit: gr.Radio
    image: ImageFile
    editor: MaskEditor
    deblur: PhotoTab
    upscale: PhotoTab

    def outputs(self) -> list:
        return [self.card, self.rejection, self.sigma, self.unit, self.image, self.editor,
                *self.denoise.switch(False), *self.inpaint.switch(False), *self.deblur.switch(False),
                *self.upscale.switch(False)]


def model_changed(registry: ModelRegistry, key: str, current_unit: str | None, parts: ModelParts) -> dict:
    """The card, rejection sampling, and for a photo model (or back) the σ unit, the examples, the outputs (slider
    and download, or the model-sized images), the brush and the pixelated display."""
    entry = registry.entries.get(key)
    photo = entry is not None and entry.fully_convolutional
    unit = sigma_unit_of(entry)
    classes = [] if photo else ["pixelated"]
    updates = {
        parts.card: entry.card_summary() if entry is not None else "",
        parts.rejection: gr.Checkbox(**rejection_state(entry is not None and entry.has_critic)),
        parts.unit: gr.Radio(value=unit),
        parts.image: ImageFile(elem_classes=classes),
        parts.editor: MaskEditor(brush=brush(photo), eraser=eraser(photo), elem_classes=classes),
        **parts.denoise.switch(photo),
        **parts.inpaint.switch(photo),
        **parts.deblur.switch(photo),
        **parts.upscale.switch(photo),
    }
    if unit != current_unit:  # keep a σ the user typed in the same unit
        updates[parts.sigma] = sigma_field(unit)
    else:
        updates[parts.sigma] = gr.Number(label=SIGMA_LABELS[unit])
    return updates


def launch(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
           block: bool = True, quiet: bool = False) -> str:
    """Serve the app; returns its local URL (at once when ``block=False``, else when the server stops)."""
    _, url, _ = demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                            quiet=quiet, css=CSS,
                            allowed_paths=[str(p) for p in (*example_paths(), *photo_example_paths())])
    return url
