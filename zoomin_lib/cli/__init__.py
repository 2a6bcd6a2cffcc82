"""The command line: `zoomin train`, `zoomin predict` and `zoomin stand-in` (also `python -m zoomin_lib ...`).

- `zoomin train --data-dir DIR --config camelyon16 --out RUN_DIR [--profile smoke|cpu|gpu|paper] [--resume]`
  trains Zoom-In on a Camelyon16-layout folder with chapter 04's protocol (`cli.train`);
- `zoomin predict --checkpoint CKPT --out OUT SLIDE_OR_DIR...` predicts slides and writes GeoJSON,
  attention thumbnails, predictions.csv and report.json (`cli.predict`);
- `zoomin stand-in OUT [--profile smoke|cpu]` writes the generated Camelyon16 stand-in (`data_prep.synthetic_slides`).

Both run on CUDA when it is available, on the CPU otherwise (`--device`). Under
`torchrun --nproc_per_node K -m zoomin_lib ...` they use torch.distributed (`cli.distributed`).
Errors a user can fix (a missing file, an unreadable checkpoint, a checkpoint made with other
settings) print one message and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from zoomin_lib.train.checkpoints import CheckpointMismatchError

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The argument parser of `zoomin` and its sub-commands."""
    from zoomin_lib.cli.settings import PROFILES

    top = argparse.ArgumentParser(prog="zoomin", description="Zoom-In (Kong & Henao) on whole-slide images.")
    sub = top.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train Zoom-In on a Camelyon16-layout folder (chapter 04's protocol)")
    train.add_argument("--data-dir", required=True, type=Path, help="a Camelyon16 folder (training/, testing/)")
    train.add_argument("--config", default="camelyon16", choices=["camelyon16"], help="the data set's protocol")
    train.add_argument("--out", required=True, type=Path, help="the run folder (checkpoint.pt, metrics.jsonl, ...)")
    train.add_argument("--profile", default="smoke", choices=list(PROFILES), help="settings (default: smoke)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one setting of the profile (repeatable), e.g. --set epochs=3")
    train.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    train.add_argument("--mpp", type=float, default=None,
                       help="microns per level-0 pixel, overriding the slides' own (for settings in microns)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")

    predict = sub.add_parser("predict", help="predict slides: GeoJSON, attention thumbnails, predictions.csv, report.json")
    predict.add_argument("inputs", nargs="+", type=Path, metavar="SLIDE_OR_DIR")
    predict.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint written by `zoomin train`")
    predict.add_argument("--out", required=True, type=Path, help="the output folder")
    predict.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    predict.add_argument("--mpp", type=float, default=None,
                         help="microns per level-0 pixel of the slides, overriding their own (reported, compared with training)")
    predict.add_argument("--overlay", action="store_true",
                         help="also draw each GeoJSON over its thumbnail: OUT/<slide>_overlay.png")
    predict.add_argument("--top", type=int, default=10, help="tiles of highest alpha listed in the GeoJSON besides the drawn ones")

    stand_in = sub.add_parser("stand-in", help="write the generated Camelyon16 stand-in (not Camelyon16)")
    stand_in.add_argument("out", type=Path)
    stand_in.add_argument("--profile", default="smoke", choices=["smoke", "cpu", "gpu"])
    stand_in.add_argument("--seed", type=int, default=0)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run `zoomin` with `argv` (default: sys.argv[1:]); the exit status."""
    args = parser().parse_args(argv)
    try:
        if args.command == "train":
            from zoomin_lib.cli.train import run_train_command

            return run_train_command(args)
        if args.command == "predict":
            from zoomin_lib.cli.predict import predict_command

            return predict_command(args)
        from data_prep.synthetic_slides import generate
        from data_prep.synthetic_slides import PROFILES as STAND_INS

        path = generate(args.out, seed=args.seed, progress=True, **STAND_INS[args.profile])
        print(f"wrote the {args.profile} stand-in (synthetic, not Camelyon16) to {path}")
        return 0
    except (CheckpointMismatchError, ValueError, FileNotFoundError) as err:
        message = str(err).replace("pass resume=False to start afresh", "run without --resume to start afresh")
        print(f"zoomin {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"zoomin {args.command}: interrupted; every file written is whole; run again to go on", file=sys.stderr)
        return 130
