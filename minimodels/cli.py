"""Command line: `minimodels-train` (or `python -m minimodels train`) trains a profile's baseline from the shell.

Same loop, data and budgets as the lessons (train.py, profiles.py); writes a checkpoint that
`load_model` / `baseline_model` can read, and resumes from it with --resume. `main()` returns the exit code
(0 done, 1 error, 2 bad options, 130 interrupted and saved); `run()` returns the history, for tests and
benchmarks.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace

import torch

from .checkpoint import CheckpointError, check_resume, ensure_writable
from .data import load_data
from .model import MiniModel, count_parameters
from .profiles import get_profile, pick_device
from .stopping import TrainingDivergedError, TrainingInterrupted
from .train import TrainConfig, train

PROG = "minimodels-train"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="train the MiniSeek baseline GPT of a compute profile")
    p.add_argument("--profile", help="smoke, cpu or gpu (default: MINIMODELS_PROFILE or from the hardware)")
    p.add_argument("--steps", type=int, help="override the profile's number of steps")
    p.add_argument("--out", default="checkpoints/baseline.pt", help="checkpoint path")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--resume", action="store_true", help="continue from --out (with the same options)")
    p.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p


def run(argv: list[str] | None = None) -> dict:
    """Train the baseline of a profile and write a checkpoint; returns the history (errors raise)."""
    p = _parser()
    args = p.parse_args(argv)
    try:
        profile = get_profile(args.profile)
        overrides = {k: v for k, v in dict(steps=args.steps).items() if v is not None}
        cfg = TrainConfig.from_profile(profile, checkpoint_path=args.out, checkpoint_every=args.checkpoint_every,
                                       seed=args.seed, progress=not args.no_progress, **overrides)
    except ValueError as err:
        p.error(str(err))  # exits with code 2
    ensure_writable(cfg.checkpoint_path)  # before the corpus loads and the model trains
    if args.resume:
        check_resume(cfg)  # a missing or mismatched checkpoint fails now, not after the corpus loads
    device = pick_device(args.device)
    data = load_data(profile.model.vocab_size)
    torch.manual_seed(args.seed)
    model = MiniModel(replace(profile.model, vocab_size=data.tokenizer.vocab_size)).to(device)
    print(f"profile {profile.name} on {device}: {count_parameters(model):,} parameters, "
          f"{cfg.steps} steps of {cfg.batch_size}x{cfg.seq_len} tokens")
    history = train(model, data, cfg, resume=args.resume)
    print(f"final train loss {history['loss'][-1]:.3f}, validation loss {history['val_loss'][-1]:.3f}, "
          f"{history['tokens_per_s']:,.0f} tokens/s; checkpoint {cfg.checkpoint_path}")
    return history


def main(argv: list[str] | None = None) -> int:
    """The console script: run(), with errors as one readable line on stderr and an exit code, no traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        run(argv)
    except TrainingInterrupted as stop:
        if stop.saved_step is None:
            print(f"{PROG}: interrupted; nothing was saved", file=sys.stderr)
        else:
            again = argv if "--resume" in argv else [*argv, "--resume"]
            print(f"{PROG}: interrupted; {stop.path} holds the first {stop.saved_step} steps. Resume the same run "
                  f"with: {shlex.join([PROG, *again])}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted before training started; nothing to save", file=sys.stderr)
        return 130
    except (CheckpointError, TrainingDivergedError, FileNotFoundError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
