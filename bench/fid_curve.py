"""FID against training compute: model folders along training runs, one protocol, one figure.

    python -m bench.fid_curve checkpoints/fmnist-js runs/curve/fmnist-js checkpoints/fmnist-cd runs/curve/fmnist-cd \
        --steps 3000 5000 10000 --out docs/fid_curve.json --figure docs/fid_curve.png

Each argument is a model folder, or a run folder of ``training.run`` whose ``snapshots/step_N`` folders (written
with ``--snapshot-every``) are taken, only the steps named in ``--steps`` if given. Every model is evaluated by
``training.evaluate`` (FID of ``--fid-samples`` samples against the test split, its cache: adding a point costs
only that point) and grouped into one curve per objective and chain start (``pca``, ``pca-mixture``...). The figure
plots FID against training steps and against training hours; the hours are each model's recorded training time, on
one CPU thread for the ``fmnist-cpu`` runs, so they are CPU hours. ``--reuse docs/results.json`` takes the reports
of models already evaluated there (the same folder at the same training step, the same protocol) instead of
evaluating them again; an earlier commit's results file, extracted together with its checkpoints, brings the models
shipped then.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from febm.files import write_atomic
from febm.model import ModelNotFoundError, load_model, read_config, resolve_model
from training.evaluate import evaluate_all


def model_folders(paths: list[str], steps: set[int] | None) -> list[str]:
    """Model folders: run folders expand to their snapshots (those at ``steps`` when given)."""
    folders = []
    for path in paths:
        snapshots = sorted((Path(path) / "snapshots").glob("step_*"))
        if not snapshots:
            folders.append(path)
        folders += [str(s) for s in snapshots if steps is None or int(s.name[5:]) in steps]
    return folders


def model_config(name: str) -> dict:
    """A model's config.json, read alone for a local folder (no weights loaded), else through load_model."""
    kind, where = resolve_model(name)
    if kind == "hub":
        return load_model(name).config
    return read_config(where)


def reused_reports(results_files: list[str], folders: list[str], protocol: dict) -> dict[str, dict]:
    """Reports from ``training.evaluate`` results files for those of ``folders`` they hold: the same model folder
    at the same training step, evaluated with the same ``protocol`` (samples, split, seed). A checkpoint name in
    a results file means the checkpoints folder of its repository (``docs/results.json`` -> ``checkpoints/``),
    so an earlier commit's results, extracted with its checkpoints, name that commit's models."""
    def where(name: str, root: Path | None = None) -> Path:
        if root is not None and (root / name).is_dir():
            return (root / name).resolve()
        return Path(resolve_model(name)[1]).resolve()

    wanted = {(where(f), (model_config(f).get("training") or {}).get("steps")): f for f in folders}
    reused = {}
    for results_file in results_files:
        root = Path(results_file).resolve().parent.parent / "checkpoints"
        for report in json.loads(Path(results_file).read_text()):
            if any(report.get(k) != v for k, v in protocol.items()):
                continue
            try:
                folder = wanted.get((where(report["model"], root), report.get("training_steps")))
            except ModelNotFoundError:  # evaluated, then removed
                continue
            if folder:
                reused[folder] = {**report, "model": folder}
    return reused


def curve_points(results: list[dict]) -> list[dict]:
    """One row per model: objective, chain start, generation noise (None: the sampler's), training steps and hours,
    FID and pixel-PCA FD, sorted by those."""
    rows = []
    for r in results:
        config = model_config(r["model"])
        training = config.get("training") or {}
        rows.append({"model": r["model"], "divergence": r["divergence"],
                     "start": (config.get("start") or {}).get("kind", "uniform"),
                     "generation_noise": (config.get("sampler") or {}).get("generation_noise"),
                     "steps": training.get("steps"),
                     "training_hours": round(training.get("wall_time_minutes", 0) / 60, 2),
                     "fid": r.get("fid"), "pca_fd": r["pca_fd"], "samples": r["samples"], "split": r["split"]})
    return sorted(rows, key=lambda row: (curve_label(row), row["steps"] or 0))


def curve_label(row: dict) -> str:
    """The curve a point belongs to: its objective, chain start and, when it has its own, generation noise."""
    noise = row.get("generation_noise")
    return f"{row['divergence']}, {row['start']} start" + ("" if noise is None else f", generation noise {noise:g}")


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4), sharey=True)
    for label in sorted({curve_label(r) for r in rows}):  # one line per objective, start and generation noise
        mine = [r for r in rows if curve_label(r) == label and r["fid"] is not None]
        for ax, key in zip(axes, ("steps", "training_hours")):
            ax.plot([r[key] for r in mine], [r["fid"] for r in mine], "o-", label=label)
    axes[0].set(xlabel="training steps", ylabel=f"FID ({rows[0]['samples']} samples, {rows[0]['split']} split)")
    axes[1].set(xlabel="training hours (one CPU thread)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8)  # below: no line hidden
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fid_curve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="model folders or training.run folders with snapshots/")
    parser.add_argument("--steps", type=int, nargs="+", help="only the snapshots at these steps")
    parser.add_argument("--fid-samples", type=int, default=5000)
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--out", required=True, help="JSON list of the curve's points")
    parser.add_argument("--figure", help="PNG: FID against steps and training hours")
    parser.add_argument("--reuse", metavar="RESULTS_JSON", nargs="+",
                        help="results files of training.evaluate whose reports are taken, not redone")
    args = parser.parse_args(argv)
    folders = model_folders(args.paths, set(args.steps) if args.steps else None)
    if not folders:
        parser.error("no model folders found")
    reused = reused_reports(args.reuse, folders, {"samples": args.fid_samples, "split": args.split, "seed": 0}) \
        if args.reuse else {}
    evaluated = evaluate_all([f for f in folders if f not in reused], out=None, markdown=None, grids=None,
                             write_cards=False, progress=False, fid_samples=args.fid_samples, steps=None,
                             split=args.split, seed=0, fid=True, data_root=None, rejection=False,
                             restoration_images=0)
    rows = curve_points([*reused.values(), *evaluated])
    write_atomic(Path(args.out), json.dumps(rows, indent=2) + "\n")
    if args.figure:
        plot(rows, args.figure)
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
