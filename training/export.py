"""Export a run's latest checkpoint as a model folder, while the run goes on or after it stopped.

    python -m training.export runs/photo-dsm --out runs/photo-dsm/snapshots/latest

The folder is what the run itself would export at that step (EMA energy, critic, config with the training
record): a warm start or an evaluation can use it without stopping the run. The checkpoint is read once (it is
written atomically, so a run that saves at the same moment leaves either the old or the new one).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.checkpoint import load_state
from training.loop import STATE_FILE, TrainConfig, Trainer


def export_checkpoint(run_dir: str | Path, out: str | Path, weights: str = "ema") -> Path:
    """The folder the run would export now; ``weights="raw"`` exports the training weights instead of their EMA
    (early in a run, with a slow EMA, the raw weights are the better warm start)."""
    run_dir = Path(run_dir)
    if not (run_dir / STATE_FILE).exists():
        raise FileNotFoundError(f"{run_dir} has no {STATE_FILE}: not a training run folder, or it saved nothing yet")
    cfg = TrainConfig.from_dict(json.loads((run_dir / "options.json").read_text()))
    trainer = Trainer(cfg, run_dir, progress=False)
    trainer.load_state_dict(load_state(run_dir / STATE_FILE))
    if weights == "raw":
        trainer.ema.load_state_dict(trainer.model.energy.state_dict())
    elif weights != "ema":
        raise ValueError(f"weights must be ema or raw, got {weights!r}")
    folder = trainer.export(Path(out))
    if weights == "raw":  # say so in the card's record
        from febm.model import load_model

        model = load_model(folder)
        model.update_config({"training": {**model.config["training"], "exported_weights": "raw (not the EMA)"}})
        model.save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", required=True, help="the model folder to write")
    parser.add_argument("--weights", choices=("ema", "raw"), default="ema",
                        help="the energy's EMA (what the run exports) or its raw training weights")
    args = parser.parse_args(argv)
    try:
        folder = export_checkpoint(args.run_dir, args.out, args.weights)
    except FileNotFoundError as err:
        parser.error(str(err))
    print(f"step {json.loads((folder / 'config.json').read_text())['training']['steps']} exported to {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
