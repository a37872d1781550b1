"""Serve the f-EBM Restore web app on the shipped checkpoints, plus any --model: python -m app [options]."""

from __future__ import annotations

import argparse
import sys

from febm.imageio import MAX_PIXELS

from .handlers import RESTORE_SECONDS, Limits


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; "
                                                            "0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument("--model", action="append", default=[], metavar="PATH_OR_REPO",
                        help="add a model folder or Hub repo id (repeatable); the shipped checkpoints are always "
                             "offered")
    parser.add_argument("--max-pixels", type=float, default=MAX_PIXELS,
                        help=f"largest upload accepted, in pixels (default {MAX_PIXELS:.0e}; checked before decoding)")
    parser.add_argument("--max-restore-pixels", type=float, default=None, metavar="N",
                        help="photo models: the largest photo restored at its own resolution, in pixels (e.g. 1e6); a "
                             "larger one is answered with the limit and a 'Downscale to fit' button. Default: "
                             f"automatic, what this CPU restores in about {RESTORE_SECONDS:.0f} s with the request's "
                             "steps and chains (see docs/performance.md)")
    parser.add_argument("--max-steps", type=int, default=Limits.max_steps,
                        help=f"most Langevin steps a request may ask for (default {Limits.max_steps})")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if min(args.max_pixels, args.max_steps, args.max_restore_pixels or 1) < 1:
        sys.exit("error: --max-pixels, --max-restore-pixels and --max-steps must be at least 1")
    from .models import ModelRegistry, no_models_message  # here: gradio and torch take seconds to import
    from .ui import build_app, launch

    try:
        registry = ModelRegistry.discover(args.model)
    except (OSError, ValueError) as e:  # ModelNotFoundError is a FileNotFoundError
        sys.exit(f"error: {e}")
    if not len(registry):
        print(no_models_message(), file=sys.stderr)
    restore_pixels = None if args.max_restore_pixels is None else int(args.max_restore_pixels)
    demo = build_app(registry, Limits(max_pixels=int(args.max_pixels), max_steps=args.max_steps,
                                      max_restore_pixels=restore_pixels))
    launch(demo, host=args.host, port=args.port, share=args.share)


if __name__ == "__main__":
    main()
