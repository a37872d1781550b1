"""The layout: a model picker and three tabs (Generate, Denoise, Inpaint), each wired to a handler and exposed as
an API endpoint with a stable name (/generate, /denoise, /inpaint). The work is in handlers.py."""

from __future__ import annotations

import gradio as gr

from febm.imageio import PRESET_MASKS

from . import example_paths
from .components import ImageFile, MaskEditor
from .handlers import PAINTED, Handlers, Limits
from .models import ModelRegistry, no_models_message

TITLE = "f-EBM Restore"
INTRO = (f"# {TITLE}\nGenerate, denoise and inpaint images with energy-based models trained by f-divergence "
         "minimisation ([Yu, Song, Song & Ermon, ICML 2020](https://arxiv.org/abs/2003.03463)). "
         "Results are at the model's resolution, as PNG.")
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
def steps_input(limits: Limits) -> gr.Number:
    return gr.Number(0, precision=0, label=f"Langevin steps (up to {limits.max_steps})", info=DEFAULT_INFO)


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


def denoise_tab(handlers: Handlers, model: gr.Dropdown) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            image = ImageFile(label="Image", type="filepath", image_mode=None, sources=["upload", "clipboard"],
                              height=240, elem_id="denoise-input", elem_classes=["pixelated"])
            gr.Examples([[str(p)] for p in example_paths()], inputs=[image], label="Fashion-MNIST test images",
                        elem_id="denoise-examples")
            mode = gr.Radio([("add synthetic noise of σ", "add"), ("image is already noisy", "noisy")], value="add",
                            label="Noise")
            sigma = gr.Number(0.2, label="σ", info="noise std in [0, 1] pixel units; for an already noisy image "
                                                  "0 = estimate it from the image")
            steps, chains, seed = sampling_inputs(handlers.limits)
            run = gr.Button("Denoise", variant="primary", elem_id="denoise-run")
        with gr.Column(scale=2):
            with gr.Row():
                noisy = output_image("Noisy input", "denoise-noisy")
                result = output_image("Denoised", "denoise-output")
            info = gr.Markdown(label="summary", elem_id="denoise-info")
    run.click(handlers.denoise, [model, image, mode, sigma, steps, chains, seed], [noisy, result, info],
              api_name="denoise")


def inpaint_tab(handlers: Handlers, model: gr.Dropdown) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            editor = MaskEditor(label="Image: paint the pixels to fill", type="filepath", image_mode=None,
                                sources=["upload", "clipboard"], layers=False, transforms=(),
                                brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed", default_size=2),
                                eraser=gr.Eraser(default_size=2), height=320, elem_id="inpaint-input",
                                elem_classes=["pixelated"])
            gr.Examples([[str(p)] for p in example_paths()], inputs=[editor], label="Fashion-MNIST test images",
                        elem_id="inpaint-examples")
            mask = gr.Dropdown([("painted pixels", PAINTED)] + [(m, m) for m in PRESET_MASKS], value=PAINTED,
                               label="Mask", info="the painted pixels, or a preset region to fill")
            steps, chains, seed = sampling_inputs(handlers.limits)
            run = gr.Button("Inpaint", variant="primary", elem_id="inpaint-run")
        with gr.Column(scale=2):
            with gr.Row():
                masked = output_image("Input (gray: to fill)", "inpaint-masked")
                result = output_image("Inpainted", "inpaint-output")
            info = gr.Markdown(label="summary", elem_id="inpaint-info")
    run.click(handlers.inpaint, [model, editor, mask, steps, chains, seed], [masked, result, info],
              api_name="inpaint")


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
                denoise_tab(handlers, model)
            with gr.Tab("Inpaint", id="inpaint"):
                inpaint_tab(handlers, model)
        model.change(lambda key: model_changed(registry, key), model, [card, rejection], api_visibility="private")
    return demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)


def model_changed(registry: ModelRegistry, key: str):
    entry = registry.entries.get(key)
    if entry is None:
        return "", gr.Checkbox(**rejection_state(False))
    return entry.card_summary(), gr.Checkbox(**rejection_state(entry.has_critic))


def launch(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
           block: bool = True, quiet: bool = False) -> str:
    """Serve the app; returns its local URL (at once when ``block=False``, else when the server stops)."""
    _, url, _ = demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                            quiet=quiet, css=CSS, allowed_paths=[str(p) for p in example_paths()])
    return url
