"""Command line: `minimodels-train` (or `python -m minimodels train`) trains a profile's baseline from the shell.

Same loop, data and budgets as the lessons (train.py, profiles.py); writes a checkpoint that
`load_model` / `baseline_model` can read, and resumes from it with --resume.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from .data import load_data
from .model import MiniModel, count_parameters
from .profiles import get_profile, pick_device
from .train import TrainConfig, train


def main(argv: list[str] | None = None) -> dict:
    """Train the baseline of a profile and write a checkpoint; returns the history."""
    p = argparse.ArgumentParser(prog="minimodels-train",
                                description="train the MiniSeek baseline GPT of a compute profile")
    p.add_argument("--profile", help="smoke, cpu or gpu (default: MINIMODELS_PROFILE or from the hardware)")
    p.add_argument("--steps", type=int, help="override the profile's number of steps")
    p.add_argument("--out", default="checkpoints/baseline.pt", help="checkpoint path")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--resume", action="store_true", help="continue from --out")
    p.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    profile = get_profile(args.profile)
    device = pick_device(args.device)
    data = load_data(profile.model.vocab_size)
    torch.manual_seed(args.seed)
    model = MiniModel(replace(profile.model, vocab_size=data.tokenizer.vocab_size)).to(device)
    overrides = {k: v for k, v in dict(steps=args.steps).items() if v is not None}
    cfg = TrainConfig.from_profile(profile, checkpoint_path=args.out, checkpoint_every=args.checkpoint_every,
                                   seed=args.seed, progress=not args.no_progress, **overrides)
    print(f"profile {profile.name} on {device}: {count_parameters(model):,} parameters, "
          f"{cfg.steps} steps of {cfg.batch_size}x{cfg.seq_len} tokens")
    history = train(model, data, cfg, resume=args.resume)
    print(f"final train loss {history['loss'][-1]:.3f}, validation loss {history['val_loss'][-1]:.3f}, "
          f"{history['tokens_per_s']:,.0f} tokens/s; checkpoint {args.out}")
    return history


if __name__ == "__main__":
    main()
