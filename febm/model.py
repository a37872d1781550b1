"""The saved/loaded unit: energy network + critic network + config, in the layout of a Hub model repo.

A model folder (``checkpoints/<name>``, any local folder, or a Hub model repo) holds

    model.safetensors   weights of ``energy.*`` and ``critic.*`` (spectral-norm u, v buffers included)
    config.json         EBM.config: divergence, data, network specs, sampler defaults, training record, metrics
    README.md           model card generated from config.json

Weights are only ever read from safetensors: a folder or repo that has only a pickled checkpoint
(``pytorch_model.bin``, ``*.pt``) is refused, since unpickling runs code that a user could supply.

    model = load_model("fashion-js")          # checkpoints/fashion-js
    model = load_model("path/to/folder")      # a local folder
    model = load_model("user/febm-js")        # a Hub repo (same code path: EBM.from_pretrained)
"""

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError
from torch import Tensor, nn

from .nets import build_net, count_parameters, is_field
from .objectives import NO_CRITIC
from .sampling import PCAGaussian, PCAMixture

FORMAT_VERSION = 1
WEIGHTS_NAME = constants.SAFETENSORS_SINGLE_FILE  # "model.safetensors"
CONFIG_NAME = constants.CONFIG_NAME  # "config.json"
PICKLE_NAMES = ("pytorch_model.bin", "model.pt", "model.pth", "checkpoint.pt")
ARCHITECTURE_KEYS = ("energy", "critic", "image_shape", "image_channels", "start")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PAPER_URL = "https://arxiv.org/abs/2003.03463"
F_EBM_CITATION = f"f-EBM (Yu, Song, Song & Ermon, ICML 2020, [paper]({PAPER_URL}))"  # model cards


class ModelNotFoundError(FileNotFoundError):
    """A model name, folder or repo id that does not resolve to a loadable safetensors model."""


def _jsonable(value: Any, what: str) -> Any:
    """A deep, JSON-normalised copy (tuples become lists); fails early rather than at save time."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must be JSON-serialisable: {e}") from None


class EBM(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="febm-restore",
    license="mit",
    pipeline_tag="unconditional-image-generation",
    tags=["energy-based-model", "f-divergence", "image-restoration"],
    paper_url=PAPER_URL,
):
    """Energy E_theta(x) (low = likely) and, for f-EBMs, the critic H_omega(x), plus their config.

    Args:
        divergence: the training objective, e.g. "js", "kl", "alpha:0.5", or "cd" (contrastive divergence,
            which has no critic).
        energy, critic: network specs for ``febm.nets.build_net`` (``critic=None``: no critic). The stored
            config holds the full spec (``net.spec``, defaults included), so later default changes never
            alter a saved model.
        dataset, image_shape [C, H, W], data_range [lo, hi]: the data the model was trained on.
            Fully convolutional models (a "field" energy) take images of any size: instead of image_shape
            they record image_channels and the crop_size they were trained on.
        sampler: default Langevin settings (method, steps, step_size, noise, grad_clip, clamp...).
        start: where chains start: {"kind": "uniform"} (noise over the data range, the default) or
            {"kind": "pca", "components": k} (``febm.sampling.PCAGaussian``) or {"kind": "pca-mixture",
            "clusters": K, "components": k} (``febm.sampling.PCAMixture``), fitted by the trainer; their
            parameters are buffers saved with the weights.
        training: the training record (command, steps, wall_time, machine...).
        metrics: evaluation results, e.g. {"fid": 42.0, "samples": 5000, "split": "test"}.
        **extra: further JSON-able config entries, kept and saved as they are.

    ``model.config`` is the plain dict written to config.json. After ``from_pretrained`` the model is in
    eval mode (spectral norm then uses the stored u, v without power iterations: loading is bit-exact).
    """

    def __init__(
        self,
        divergence: str,
        energy: dict,
        critic: dict | None = None,
        *,
        dataset: str | None = None,
        image_shape: list[int] | None = None,
        image_channels: int | None = None,
        crop_size: int | None = None,
        data_range: list[float] = (0.0, 1.0),
        sampler: dict | None = None,
        start: dict | None = None,
        training: dict | None = None,
        metrics: dict | None = None,
        format_version: int = FORMAT_VERSION,
        **extra: Any,
    ):
        super().__init__()
        if not isinstance(divergence, str) or not divergence:
            raise ValueError(f"divergence must be a non-empty string, got {divergence!r}")
        if format_version > FORMAT_VERSION:
            raise ValueError(f"model format {format_version} is newer than this febm ({FORMAT_VERSION}): upgrade febm")
        if divergence in NO_CRITIC and critic is not None:
            raise ValueError(f"{divergence!r} trains no critic: pass critic=None")
        self.energy = build_net(energy)
        self.critic = build_net(critic) if critic is not None else None
        start = dict(start or {"kind": "uniform"})
        self.start = None
        if start["kind"] in ("pca", "pca-mixture"):
            if image_shape is None:
                raise ValueError(f"a {start['kind']!r} start distribution needs image_shape")
            self.start = (PCAGaussian(tuple(image_shape), int(start["components"]), tuple(data_range))
                          if start["kind"] == "pca" else
                          PCAMixture(tuple(image_shape), int(start["clusters"]), int(start["components"]),
                                     tuple(data_range)))
        elif start["kind"] != "uniform":
            raise ValueError(f"unknown start distribution {start['kind']!r}; valid: uniform, pca, pca-mixture")
        if is_field(self.energy):
            if image_shape is not None or image_channels is None or crop_size is None:
                raise ValueError("a fully convolutional model takes image_channels and crop_size, not image_shape")
            if self.critic is not None and not is_field(self.critic):
                raise ValueError("a fully convolutional energy needs a fully convolutional critic")
            if self.start is not None:
                raise ValueError("a fully convolutional model has no fixed image shape for a 'pca' start")
        elif image_channels is not None or crop_size is not None:
            raise ValueError("image_channels and crop_size are for fully convolutional ('field') energies")
        if image_shape is not None:
            image_shape = [int(s) for s in image_shape]
            for name, net in (("energy", self.energy), ("critic", self.critic)):
                spec = getattr(net, "spec", {})
                if spec.get("kind") == "resnet" and spec["in_channels"] != image_shape[0]:
                    raise ValueError(f"{name} has in_channels={spec['in_channels']} but image_shape={image_shape}")
        self.config: dict = {
            "format_version": FORMAT_VERSION,
            "divergence": divergence,
            "dataset": dataset,
            "image_shape": image_shape,
            **({"image_channels": int(image_channels), "crop_size": crop_size,
                "receptive_radius": self.energy.receptive_radius} if is_field(self.energy) else {}),
            "data_range": [float(v) for v in data_range],
            "energy": self.energy.spec,
            "critic": self.critic.spec if self.critic is not None else None,
            "sampler": _jsonable(sampler or {}, "sampler"),
            "start": _jsonable(start, "start"),
            "training": _jsonable(training or {}, "training"),
            "metrics": _jsonable(metrics or {}, "metrics"),
            **_jsonable(extra, "extra config entries"),
        }
        self._hub_mixin_config = self.config  # one dict: the mixin passes it back into save_pretrained(config=)

    # --- the model --------------------------------------------------------------------------------------
    @property
    def divergence(self) -> str:
        return self.config["divergence"]

    @property
    def has_critic(self) -> bool:
        return self.critic is not None

    def forward(self, x: Tensor) -> Tensor:
        """Energy E(x), shape (B,): what Langevin samplers differentiate."""
        return self.energy(x)

    @property
    def fully_convolutional(self) -> bool:
        """True when the energy is a sum of local energies: the model takes images of any size."""
        return is_field(self.energy)

    @property
    def noise_conditional(self) -> bool:
        """True for an energy E(x, sigma) of photos seen through Gaussian noise of std sigma (score matching or
        the posterior f-EBM, febm.posterior): it restores through its gradient step, not from a classical start."""
        return getattr(self.energy, "noise_bias", None) is not None

    @property
    def channels(self) -> int:
        return self.config["image_channels"] if self.fully_convolutional else self.config["image_shape"][0]

    def initial_samples(self, n: int, generator: torch.Generator | None = None, residual_scale: float = 1.0,
                        size: tuple[int, int] | None = None) -> Tensor:
        """n starting points for Langevin chains, (n, C, H, W) on the model's device (see ``start``);
        ``residual_scale`` scales a Gaussian start's residual noise (PCAGaussian.sample); ``size`` (H, W) for
        fully convolutional models (default: their training crop)."""
        if self.start is not None:
            return self.start.sample(n, generator, residual_scale)
        lo, hi = self.config["data_range"]
        device = next(self.parameters()).device
        if self.fully_convolutional:
            size = tuple(size or (self.config["crop_size"],) * 2)
            shape = (self.channels, *size)
        else:
            shape = tuple(self.config["image_shape"])
        return lo + (hi - lo) * torch.rand((n, *shape), generator=generator, device=device)

    def energy_of(self, x: Tensor) -> Tensor:
        return self.energy(x)

    def log_ratio(self, x: Tensor) -> Tensor:
        """r(x) = H(x) + E(x), the critic's estimate of log p(x)/q(x) (Eq. 16), shape (B,)."""
        if self.critic is None:
            raise RuntimeError(
                f"this model (divergence {self.divergence!r}) has no critic, so no density-ratio estimate: "
                "log_ratio and rejection sampling need an f-EBM trained with a critic"
            )
        return self.critic(x) + self.energy(x)

    @classmethod
    def from_config(cls, config: dict) -> "EBM":
        """A freshly initialised model from a config dict (e.g. another model's ``config``)."""
        return cls(**copy.deepcopy(config))

    def extra_repr(self) -> str:
        n_e = count_parameters(self.energy)
        n_c = count_parameters(self.critic) if self.critic is not None else 0
        return f"divergence={self.divergence!r}, energy_params={n_e}, critic_params={n_c}"

    # --- saving -------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory, *, config: dict | None = None, model_card_kwargs=None, **kwargs):
        """Write model.safetensors, config.json and README.md (always regenerated) into ``save_directory``.

        ``config``: optional entries merged into ``self.config`` first (e.g. fresh ``metrics``); the
        architecture entries (energy, critic, image_shape) cannot change. ``model_card_kwargs``: see
        ``generate_model_card``. Other keyword arguments go to the mixin (``push_to_hub=True``, ``repo_id``).
        """
        if config:
            self.update_config(config)
        save_directory = Path(save_directory)
        (save_directory / "README.md").unlink(missing_ok=True)  # the mixin never overwrites a card
        name = (kwargs.get("repo_id") or save_directory.name) if kwargs.get("push_to_hub") else save_directory.name
        model_card_kwargs = {"name": name, **(model_card_kwargs or {})}
        return super().save_pretrained(save_directory, model_card_kwargs=model_card_kwargs, **kwargs)

    def push_to_hub(self, repo_id: str, *, model_card_kwargs=None, **kwargs) -> str:
        """Create the repo if needed and upload the model folder in one commit (see the mixin's docs)."""
        model_card_kwargs = {"name": repo_id, **(model_card_kwargs or {})}
        return super().push_to_hub(repo_id, model_card_kwargs=model_card_kwargs, **kwargs)

    def update_config(self, entries: dict) -> None:
        """Merge metadata entries (metrics, training, sampler...) into the config."""
        entries = _jsonable(entries, "config")
        changed = [k for k in ARCHITECTURE_KEYS if k in entries and entries[k] != self.config.get(k)]
        if changed:
            raise ValueError(f"cannot change the architecture entries {changed} of an existing model")
        self.config.update(entries)

    def _save_pretrained(self, save_directory: Path) -> None:
        safetensors.torch.save_model(self, str(save_directory / WEIGHTS_NAME), metadata={"format": "pt"})
        (save_directory / CONFIG_NAME).write_text(json.dumps(self.config, indent=2) + "\n", encoding="utf-8")

    def generate_model_card(self, *, name: str | None = None, text: str | None = None, notes: str | None = None,
                            **_: Any) -> ModelCard:
        """The README.md: YAML metadata + a body built from the config.

        ``text`` replaces the generated body; ``notes`` (markdown) is added as a section; ``name`` is the
        checkpoint name or repo id used in the loading snippet.
        """
        meta = copy.deepcopy(self._hub_mixin_info.model_card_data)
        if self.noise_conditional:  # restores, does not generate
            meta.pipeline_tag = "image-to-image"
        tag = {"dsm": "score-matching", "unrolled": "unrolled-restoration"}.get(self.config.get("divergence"))
        if tag:  # trained by a regression, not an f-divergence
            meta.tags = [t if t != "f-divergence" else tag for t in meta.tags]
        meta = meta.to_yaml()
        if text is None:
            n_critic = count_parameters(self.critic) if self.critic is not None else None
            text = model_card_body(self.config, name=name, notes=notes, n_energy=count_parameters(self.energy),
                                   n_critic=n_critic)
        return ModelCard(f"---\n{meta}\n---\n\n{text.strip()}\n")

    # --- loading ------------------------------------------------------------------------------------------
    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir,
        force_download: bool,
        local_files_only: bool,
        token,
        map_location: str | torch.device = "cpu",
        strict: bool = True,
        **model_kwargs,
    ) -> "EBM":
        """Build the model from config.json, then load model.safetensors (never a pickle)."""
        if not model_kwargs:
            if not os.path.isdir(model_id):
                # The mixin swallows Hub errors on config.json (missing repo, no access...): surface the real one.
                hf_hub_download(repo_id=model_id, filename=CONFIG_NAME, revision=revision, cache_dir=cache_dir,
                                token=token, local_files_only=local_files_only)
            raise ModelNotFoundError(f"{model_id}: no {CONFIG_NAME}, so this is not a febm model folder")
        model = cls(**model_kwargs)
        if os.path.isdir(model_id):
            weights = Path(model_id) / WEIGHTS_NAME
            if not weights.is_file():
                pickles = [p for p in PICKLE_NAMES if (Path(model_id) / p).exists()]
                raise ModelNotFoundError(_no_safetensors_message(model_id, pickles))
        else:
            try:
                weights = hf_hub_download(
                    repo_id=model_id, filename=WEIGHTS_NAME, revision=revision, cache_dir=cache_dir,
                    force_download=force_download, token=token, local_files_only=local_files_only,
                )
            except EntryNotFoundError as e:
                raise ModelNotFoundError(_no_safetensors_message(model_id, [])) from e
        safetensors.torch.load_model(model, str(weights), strict=strict)
        # safetensors' device= only changes where the state dict is read to; move the model itself.
        return model.to(map_location).eval()


def _shape_rows(config: dict) -> list[str]:
    if config.get("image_channels") is None:
        return [f"| image shape (C, H, W) | {config.get('image_shape')} |"]
    rho = config.get("receptive_radius")
    rows = [f"| images | any size, {config['image_channels']} channels (fully convolutional: E(x) is a sum of "
            "local energies) |", f"| training crops | {config.get('crop_size')} x {config.get('crop_size')} px |"]
    if rho is not None:
        rows.insert(1, f"| receptive field | {2 * rho + 1} x {2 * rho + 1} px (radius {rho}) |")
    return rows


def objective_label(div: str) -> str:
    """A training objective in prose: 'score matching (dsm)', 'contrastive divergence (cd)', 'f-EBM (js)'."""
    return {"dsm": "score matching (dsm)", "cd": "contrastive divergence (cd)",
            "unrolled": "unrolled restoration (unrolled)"}.get(div, f"f-EBM ({div})")


def model_card_body(config: dict, *, name: str | None = None, notes: str | None = None,
                    n_energy: int | None = None, n_critic: int | None = None) -> str:
    """Markdown body of the model card, from config.json alone."""
    training, metrics, sampler = config.get("training") or {}, config.get("metrics") or {}, config.get("sampler") or {}
    div, dataset = config.get("divergence"), config.get("dataset") or "unknown data"
    if div == "dsm":
        title, intro = (f"# Score-matching energy on {dataset}",
                        "An energy-based model trained by **denoising score matching** (a Fisher divergence, not an "
                        "f-divergence; no critic): its gradient step x - sigma^2 grad E is regressed on clean images. "
                        "Low energy means likely.")
    elif div == "unrolled":
        k = (training.get("options") or {}).get("unroll_steps", "?")
        title, intro = (f"# Unrolled restoration energy on {dataset}",
                        "An energy trained **through its own restoration** (the TNRD / TDV route; no critic): the "
                        f"gradient step x - sigma^2 grad E and {k} noise-free posterior step{'' if k == 1 else 's'} "
                        "after it are regressed on clean images. A regression on the restorer's output, not a "
                        "divergence: its energy is tuned to restore, not to be a density. Low energy means likely.")
    elif div == "cd":  # the paper's baseline, which is not an f-divergence
        title, intro = (f"# Contrastive-divergence energy (cd) on {dataset}",
                        "An energy-based model trained by **contrastive divergence** (no critic), the baseline of "
                        f"{F_EBM_CITATION}. Low energy means likely.")
    else:
        title, intro = (f"# f-EBM ({div}) on {dataset}",
                        f"An energy-based model trained by minimising the **{div}** f-divergence with "
                        f"{F_EBM_CITATION}. Low energy means likely.")
    lines = [
        title,
        "",
        intro,
        "",
        "| | |",
        "| --- | --- |",
        f"| divergence | `{div}` |",
        f"| dataset | {dataset} |",
        *_shape_rows(config),
        f"| data range | {config.get('data_range')} |",
        f"| energy network | `{json.dumps(config.get('energy'))}`{_n_params(n_energy)} |",
        f"| critic network | `{json.dumps(config.get('critic'))}`{_n_params(n_critic)} |",
        "",
        "## Training",
        "",
    ]
    command = training.get("command")
    lines += ["Command:", "", "```", str(command), "```", ""] if command else ["Training command: not recorded.", ""]
    planned = (training.get("options") or {}).get("max_steps")
    if command and planned and training.get("steps") and training["steps"] < planned:
        lines += [f"This model is that run at step {training['steps']} of its {planned}.", ""]
    origin = training.get("warm_started_from")
    while origin:  # a run that continued another model: how that one was trained, back to the first
        by = f", {objective_label(origin['divergence'])}" if origin.get("divergence") else ""
        lines += [f"It continued `{origin['model']}` ({origin.get('steps', '?')} steps{by}), trained with:", "",
                  "```", str(origin.get("command", "not recorded")), "```", ""]
        origin = origin.get("warm_started_from")
    rest = {k: v for k, v in training.items() if k not in ("command", "warm_started_from")}
    if rest:
        lines += ["| | |", "| --- | --- |"] + [f"| {k} | {_fmt(v)} |" for k, v in rest.items()] + [""]
    lines += ["## Metrics", ""]
    if metrics:
        lines += ["| metric | value |", "| --- | --- |"] + [f"| {k} | {_fmt(v)} |" for k, v in _flat(metrics)] + [""]
    else:
        lines += ["None recorded.", ""]
    if sampler:
        lines += ["## Default sampler", ""]
        generation = {k: v for k, v in (config.get("generation") or {}).items() if k != "grid"}
        if generation:
            lines += ["`steps` (and `generation_noise`, the per-step noise of generation's chains; restoration "
                      "keeps `noise`, whose temperature weighs the likelihood) set by `python -m training.tune` "
                      f"on the validation split: `{json.dumps(generation)}`.", ""]
        lines += ["```json", json.dumps(sampler, indent=2), "```", ""]
    restoration = {task: {k: v for k, v in cfg.items() if k != "grid"}
                   for task, cfg in (config.get("restoration") or {}).items()}
    if restoration:
        lines += ["## Restoration defaults", "", "Set by `python -m training.tune` on the validation split "
                  "(`denoise` and `inpaint` use them unless told otherwise):", "",
                  "```json", json.dumps(restoration, indent=2), "```", ""]
    data_card = config.get("data_card")
    if data_card:
        lines += ["## Training data", "", data_card.strip(), ""]
    if notes:
        lines += ["## Notes", "", notes.strip(), ""]
    lines += [
        "## How to load",
        "",
        "```python",
        "from febm.model import load_model",
        f'model = load_model("{name or "<checkpoint name, folder or user/repo>"}")',
        "energy = model.energy_of(x)          # x: (B, C, H, W) in [0, 1] -> (B,)",
        *(["log_ratio = model.log_ratio(x)      # estimate of log p(x)/q(x)"] if config.get("critic") else []),
        "```",
        "",
        "Weights are stored as safetensors; `config.json` holds everything above.",
    ]
    return "\n".join(lines)


def _flat(metrics: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested metric groups (e.g. rejection) as dotted rows; the sampler settings stay one JSON cell."""
    rows = []
    for key, value in metrics.items():
        if isinstance(value, dict) and key != "sampler":
            rows += _flat(value, f"{prefix}{key}.")
        else:
            rows.append((prefix + key, value))
    return rows


def _n_params(n: int | None) -> str:
    return f" ({n:,} parameters)" if n else ""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return f"`{json.dumps(value)}`"
    return str(value)


def _no_safetensors_message(where: str, pickles: list[str]) -> str:
    msg = f"{where}: no {WEIGHTS_NAME}. febm loads weights only from safetensors"
    if pickles:
        msg += f"; found {pickles}, which is refused: unpickling a checkpoint can run arbitrary code"
    return msg + "."


# --- the checkpoints folder and load_model -----------------------------------------------------------------
def checkpoints_dir() -> Path:
    """The folder of shipped models: $FEBM_CHECKPOINTS, else <repository>/checkpoints."""
    env = os.environ.get("FEBM_CHECKPOINTS")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "checkpoints"


def _model_folders() -> list[Path]:
    root = checkpoints_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file())


def read_config(folder: str | os.PathLike) -> dict:
    """A local model folder's config.json alone (no weights read)."""
    return json.loads((Path(folder) / CONFIG_NAME).read_text(encoding="utf-8"))


def list_models() -> list[dict]:
    """The models in the checkpoints folder, from their config.json only (no weights are read)."""
    out = []
    for folder in _model_folders():
        try:
            config = read_config(folder)
        except (OSError, ValueError):
            continue  # a broken folder must not hide the others from the app
        out.append({
            "name": folder.name,
            "path": str(folder),
            "divergence": config.get("divergence"),
            "dataset": config.get("dataset"),
            "image_shape": config.get("image_shape"),
            "has_critic": config.get("critic") is not None,
            "metrics": config.get("metrics") or {},
        })
    return out


def resolve_model(name_or_path_or_repo_id: str | os.PathLike) -> tuple[str, str]:
    """("checkpoint" | "folder" | "hub", location), in the order checkpoints name, local folder, Hub repo id."""
    name = str(name_or_path_or_repo_id)
    if name and not Path(name).is_absolute() and (checkpoints_dir() / name).is_dir():
        return "checkpoint", str(checkpoints_dir() / name)
    if Path(name).expanduser().is_dir():
        return "folder", str(Path(name).expanduser())
    if _REPO_ID.match(name):
        return "hub", name
    raise ModelNotFoundError(f"no model {name!r}: {_available()}")


def _available() -> str:
    names = [p.name for p in _model_folders()]
    where = checkpoints_dir()
    if not names:
        return f"the checkpoints folder {where} has no models (set FEBM_CHECKPOINTS to use another one)"
    return f"available checkpoints in {where}: {', '.join(names)}"


def load_model(name_or_path_or_repo_id: str | os.PathLike, revision: str | None = None,
               device: str | torch.device = "cpu", **hub_kwargs: Any) -> EBM:
    """Load a model by checkpoints name, local folder, or Hub repo id ("user/repo"), in that order.

    ``revision`` applies to Hub repos only. ``hub_kwargs`` go to ``EBM.from_pretrained`` (cache_dir, token,
    local_files_only, force_download). The model is returned in eval mode on ``device``.
    """
    kind, location = resolve_model(name_or_path_or_repo_id)
    if kind != "hub":
        return EBM.from_pretrained(location, map_location=device, **hub_kwargs)
    try:
        return EBM.from_pretrained(location, revision=revision, map_location=device, **hub_kwargs)
    except ModelNotFoundError:
        raise
    except (LocalEntryNotFoundError, HfHubHTTPError) as e:
        offline = " (HF_HUB_OFFLINE is set)" if constants.is_offline_mode() else ""
        detail = " ".join(line.strip() for line in str(e).splitlines() if line.strip())[:300]
        raise ModelNotFoundError(
            f"no model {location!r} in the checkpoints folder, as a local folder, or on the Hub{offline} "
            f"[{type(e).__name__}: {detail}]; {_available()}"
        ) from e
