"""The models the app offers: the shipped checkpoints plus any added with --model, loaded once and cached."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from febm.model import EBM, checkpoints_dir, list_models, load_model, objective_label, read_config


def tuned_settings(config: dict, task: str) -> dict:
    """A restoration task's tuned defaults, ``config["restoration"][task]`` (steps, chains, val_psnr...; {} when not
    tuned): the app's one reader of them. febm.restore reads the same settings for the library; this one works from
    a config alone, before the model's weights are loaded."""
    return (config.get("restoration") or {}).get(task) or {}


@dataclass(frozen=True)
class ModelEntry:
    key: str  # the dropdown value and API parameter: a checkpoint name, or a folder or Hub repo id as given
    location: str  # what load_model() takes
    config: dict

    @property
    def divergence(self) -> str:
        return str(self.config.get("divergence"))

    @property
    def has_critic(self) -> bool:
        return self.config.get("critic") is not None

    @property
    def label(self) -> str:
        """e.g. "JS · fashion-mnist (fmnist-js)"; score matching says that it is not an f-divergence."""
        name = {"dsm": "DSM (score matching, a Fisher divergence)",
                "unrolled": "Unrolled (trained through its restoration, not a divergence)"}.get(
                    self.divergence, self.divergence.upper())
        return f"{name} · {self.config.get('dataset') or 'unknown data'} ({self.key})"

    @property
    def noise_conditional(self) -> bool:
        """An energy E(x, sigma) conditioned on the noise level: it restores from its gradient step, never generates."""
        return bool((self.config.get("energy") or {}).get("noise_conditional"))

    @property
    def fully_convolutional(self) -> bool:
        """A photo model: restores images of any size at their own resolution."""
        return self.config.get("image_channels") is not None and not self.config.get("image_shape")

    @property
    def image_summary(self) -> str:
        if not self.fully_convolutional:
            return f"image {'×'.join(map(str, self.config.get('image_shape') or []))}"
        rho = self.config.get("receptive_radius")
        colour = "colour (grey photos too)" if self.config.get("image_channels") == 3 else "grey"
        reach = f", receptive field {2 * rho + 1}×{2 * rho + 1} px" if isinstance(rho, int) else ""
        return f"photos of any size at their own resolution, {colour}{reach}"

    @property
    def default_steps(self) -> int | None:
        """The sampler's steps: what generation runs, and a restoration task that was not tuned."""
        return (self.config.get("sampler") or {}).get("steps")

    def steps_summary(self) -> str:
        """e.g. "sampler authors: generation 200 steps, denoising 10 steps, inpainting 0 steps": each task's
        default Langevin steps (and chains), restoration's from its tuned settings."""
        def task(name: str) -> str:
            tuned = tuned_settings(self.config, name)
            steps, chains = tuned.get("steps", self.default_steps), int(tuned.get("chains", 1))
            return f"{'?' if steps is None else steps} steps" + (f" × {chains} chains" if chains > 1 else "")

        if self.noise_conditional:
            tuned = tuned_settings(self.config, "denoise")
            steps, descent = tuned.get("steps", 0), tuned.get("descent", 1)
            return (f"no generation (an energy conditioned on the noise level): denoising = its gradient step + "
                    f"{steps} Langevin and {descent} noise-free posterior step{'s' * (descent != 1)} at σ = 25, tuned "
                    f"per noise level; inpainting {tuned_settings(self.config, 'inpaint').get('steps', '?')} "
                    "annealed steps")
        method = (self.config.get("sampler") or {}).get("method", "?")
        return (f"sampler {method}: generation {self.default_steps or '?'} steps, denoising {task('denoise')}, "
                f"inpainting {task('inpaint')}")

    def card_summary(self) -> str:
        """Markdown: the model card's key facts (FID, training steps, the exact training command)."""
        metrics, training = self.config.get("metrics") or {}, self.config.get("training") or {}
        fid = metrics.get("fid")
        facts = [
            f"FID {fid:.2f}" if isinstance(fid, (int, float)) else self._restoration_fact(),
            (f"trained {training['steps']:,} steps" if isinstance(training.get("steps"), int)
             else "training steps not recorded"),
            self.steps_summary(),
            "critic: yes (rejection sampling available)" if self.has_critic else "no critic (no rejection sampling)",
        ]
        command = training.get("command")
        lines = [f"**{self.label}** — {self.image_summary}",
                 " · ".join(facts)]
        if isinstance(fid, (int, float)) and metrics.get("samples") and metrics.get("split"):
            lines.append(f"FID of {metrics['samples']:,} samples against the {metrics['split']} split "
                         "(`python -m training.evaluate`)")
        lines.append(f"Training command: `{command}`" if command else "Training command: not recorded")
        origin = training.get("warm_started_from")
        if origin:  # a later stage: the card lists every earlier command
            steps = origin.get("steps")
            trained = f"trained {steps:,} steps" if isinstance(steps, int) else "trained"
            by = f" by {objective_label(origin['divergence'])}" if origin.get("divergence") else ""
            lines.append(f"It continued a model {trained}{by} with `{origin.get('command', 'not recorded')}` "
                         "(the model card has the whole lineage)")
        return "\n\n".join(lines)


    def _restoration_fact(self) -> str:
        """Models without an FID (photo models): their tuned denoising PSNR on validation data, if measured."""
        tuned = tuned_settings(self.config, "denoise")
        if not isinstance(tuned.get("val_psnr"), (int, float)):
            return "FID not measured"
        sigmas = "/".join(f"{s * 255:.0f}" for s in tuned.get("sigmas") or [])
        at = f" at σ = {sigmas} (0-255 levels)" if sigmas else ""
        return f"denoising {tuned['val_psnr']:.2f} dB on validation crops{at}"


class ModelRegistry:
    """Model entries by key, and a thread-safe cache of the loaded models."""

    def __init__(self, entries: list[ModelEntry]):
        self.entries = {e.key: e for e in entries}
        self._loaded: dict[str, EBM] = {}
        self._lock = threading.Lock()

    @classmethod
    def discover(cls, extra: list[str] = ()) -> "ModelRegistry":
        """The shipped checkpoints (config only, no weights read), then each ``extra`` folder or repo id,
        loaded now so that a bad --model fails at start-up rather than on the first request."""
        entries = [ModelEntry(m["name"], m["path"], read_config(m["path"])) for m in list_models()]
        registry = cls(entries)
        for name in extra:
            if name in registry.entries:  # a shipped checkpoint, named: already offered
                continue
            model = load_model(name)
            registry.entries[name] = ModelEntry(name, name, model.config)
            registry._loaded[name] = model
        return registry

    def __len__(self) -> int:
        return len(self.entries)

    def photo_keys(self) -> list[str]:
        """The photo models' keys (fully convolutional energies: the models that deblur and upscale)."""
        return [e.key for e in self.entries.values() if e.fully_convolutional]

    def choices(self) -> list[tuple[str, str]]:
        return [(e.label, e.key) for e in self.entries.values()]

    def entry(self, key: str | None) -> ModelEntry:
        if not self.entries:
            raise LookupError(no_models_message())
        if key not in self.entries:
            raise LookupError(f"unknown model {key!r}; available: {', '.join(self.entries)}")
        return self.entries[key]

    def get(self, key: str | None) -> EBM:
        """The loaded model (loaded on first use, then cached; one load even under concurrent requests)."""
        entry = self.entry(key)
        with self._lock:
            if entry.key not in self._loaded:
                self._loaded[entry.key] = load_model(entry.location)
            return self._loaded[entry.key]


def no_models_message() -> str:
    return (f"No models: the checkpoints folder {checkpoints_dir()} has none. Start the app with "
            "`python -m app --model PATH_OR_HUB_REPO` (repeatable), or set FEBM_CHECKPOINTS to a folder of models.")
