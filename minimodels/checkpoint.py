"""Checkpoints: saved atomically with a checksum, loaded with `weights_only=True`, with clear errors.

A checkpoint holds only tensors and plain Python values (config as a dict, optimizer state, the data
sampler's RNG state, the loss history), so loading it never runs pickled code. Beside them it stores
"sha256": a digest of every tensor's bytes and every value, taken when it was saved. Loading recomputes it,
so a flipped bit on disk or a half-copied file raises `CheckpointError` (naming the file and what to do)
instead of loading wrong weights. A flip that torch's reader does not even see (padding, zip timestamps)
loads the very values that were saved. `check_resume` and `check_model_config` refuse a checkpoint of another
run or another model with the differing fields named. Taught in lessons/01_baseline_gpt.ipynb.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor, nn

from .config import ModelConfig

# Fields that may change between a run and its resume: they steer saving, display and how often the validation
# loss is measured, never a weight update or a batch, so the resumed run still continues the same loss curve.
# eval_batches is not among them: it changes what the validation loss measures, and one curve would mix two.
RESUME_MAY_DIFFER = frozenset({"checkpoint_path", "checkpoint_every", "progress", "eval_every"})

CHECKSUM_KEY = "sha256"
_ZIP_MAGIC = b"PK\x03\x04"  # every file torch.save writes is a zip archive
_WHAT_TO_DO = ("delete it and train again, or resume from an earlier copy of the checkpoint "
               "(train(..., resume=True) / `minimodels-train --resume`)")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: corrupt, truncated, not a checkpoint, or not this run's."""


def content_sha256(obj) -> str:
    """sha256 over a checkpoint's values: each tensor's dtype, shape and bytes, each plain value's type and repr.

    Raises TypeError for anything `torch.load(weights_only=True)` could not read back (a Path, a numpy value).
    """
    digest = hashlib.sha256()
    _feed(digest, obj, "checkpoint")
    return digest.hexdigest()


def _feed(digest, obj, where: str) -> None:
    if isinstance(obj, Tensor):
        t = obj.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, any dtype
    elif isinstance(obj, dict):
        digest.update(f"D{len(obj)}:".encode())
        for key, value in obj.items():
            _feed(digest, key, where)
            _feed(digest, value, f"{where}[{key!r}]")
    elif isinstance(obj, (list, tuple)):
        digest.update(f"{type(obj).__name__}{len(obj)}:".encode())
        for i, value in enumerate(obj):
            _feed(digest, value, f"{where}[{i}]")
    elif obj is None or type(obj) in (bool, int, float, str, bytes):
        text = repr(obj)  # exact: repr(float) round-trips
        digest.update(f"{type(obj).__name__}{len(text)}:{text}".encode())
    else:
        raise TypeError(f"{where} is a {type(obj).__name__}: a checkpoint may hold only tensors, dicts, lists, "
                        f"tuples and plain values (str, int, float, bool, None); convert it (e.g. str(path))")


def ensure_writable(path: str | Path) -> Path:
    """Check, before any training, that a checkpoint can be written at `path` (creates its folder)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise CheckpointError(f"checkpoint path {path} is a folder: give a file path inside it, e.g. {path / 'run.pt'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=".write-test-", suffix=".tmp")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        where = err.filename or path.parent
        raise CheckpointError(f"cannot write a checkpoint to {path}: {err.strerror or err} ({where}). Choose a "
                              f"writable location (TrainConfig(checkpoint_path=...) or --out)") from None
    return path


def save_atomic(obj: dict, path: str | Path) -> Path:
    """torch.save `obj` plus its checksum to a temporary file in the same folder, then rename: a crash never
    leaves half a file, and a later load notices any damage."""
    path = Path(path).expanduser()
    payload = {**obj, CHECKSUM_KEY: content_sha256(obj)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read and verify a checkpoint written by `train` / `save_atomic` (tensors and plain values only).

    Raises FileNotFoundError if there is none, CheckpointError if it is empty, damaged, or not a checkpoint.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        if path.is_dir():
            raise CheckpointError(f"{path} is a folder, not a checkpoint file: give the .pt file's path")
        raise FileNotFoundError(f"no checkpoint at {path}: train one first (train(..., TrainConfig("
                                f"checkpoint_path=...)) or `minimodels-train --out {path}`)")
    ckpt = _read(path, map_location)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a minimodels checkpoint (it holds a {type(ckpt).__name__}, "
                              f"not a dict): point to a file written by train() or minimodels-train")
    stored = ckpt.pop(CHECKSUM_KEY, None)
    if stored is not None and stored != content_sha256(ckpt):
        raise CheckpointError(f"{path} is corrupt: its contents no longer match the checksum written when it was "
                              f"saved (a flipped bit on disk or an incomplete copy). Do not use it: {_WHAT_TO_DO}")
    if "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path} is not a minimodels checkpoint (expected keys 'model' and 'config', found "
                              f"{sorted(map(str, ckpt))[:8]}): point to a file written by train() or minimodels-train")
    if stored is None:
        raise CheckpointError(f"{path} has no checksum (written by an older minimodels or by torch.save directly, "
                              f"or its checksum entry is damaged), so its weights cannot be verified: {_WHAT_TO_DO}")
    return ckpt


def _read(path: Path, map_location) -> object:
    """torch.load(weights_only=True), with every way a damaged or foreign file fails turned into one clear error."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): a save that was cut off (disk full?); {_WHAT_TO_DO}")
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if head != _ZIP_MAGIC:
        raise CheckpointError(f"{path} is not a checkpoint: it does not start like a torch.save file (a text "
                              f"file or another format?). Point to a .pt file written by train() or minimodels-train")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a damaged file can make torch warn before it fails
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged file fails in many ways (zip, pickle, unicode, ...)
        if "not an allowed global" in str(err):  # weights_only refused a class or function
            raise CheckpointError(f"{path} was not loaded: it holds Python objects other than tensors and plain "
                                  f"values, and weights_only=True never runs pickled code. It is not a minimodels "
                                  f"checkpoint (or it is damaged): {_WHAT_TO_DO}") from None
        raise CheckpointError(f"{path} is damaged or truncated ({size:,} bytes; torch.load failed with "
                              f"{type(err).__name__}: {_first_sentence(err)}); {_WHAT_TO_DO}") from None


def _first_sentence(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text.split(". ")[0][:100] or "-"


def config_differences(saved: dict, current: dict, ignore: frozenset[str] = frozenset()) -> list[str]:
    """'name: saved -> current' for every field that differs (a field missing on one side counts)."""
    missing = "(not set)"
    return [f"{name}: {saved.get(name, missing)!r} -> {current.get(name, missing)!r}"
            for name in sorted(set(saved) | set(current))
            if name not in ignore and saved.get(name, missing) != current.get(name, missing)]


def check_model_config(ckpt: dict, model: nn.Module, path: str | Path) -> None:
    """Raise CheckpointError if the checkpoint was trained with another ModelConfig than `model`'s."""
    diffs = config_differences(ckpt["config"], model.cfg.to_dict())
    if diffs:
        raise CheckpointError(f"{path} holds a model with another config than this one (checkpoint -> this model): "
                              f"{'; '.join(diffs)}. Build the model from the checkpoint (load_model({str(path)!r})) "
                              f"or train this one from scratch")


def check_resume(cfg, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint at cfg.checkpoint_path, if a run with cfg's training settings wrote it; else a clear error."""
    ckpt = load_checkpoint(cfg.checkpoint_path, map_location=map_location)
    diffs = resume_differences(ckpt, cfg)
    if diffs:
        raise CheckpointError(
            f"cannot resume from {cfg.checkpoint_path}: these training settings differ from the run that wrote it "
            f"(checkpoint -> requested): {'; '.join(diffs)}. Resuming with them would not continue the same run "
            f"(the learning-rate schedule, the batches or the optimizer depend on them). Either use the "
            f"checkpoint's values (in TrainConfig, or the matching minimodels-train options), or start a fresh "
            f"run (without resume, or with another checkpoint path)")
    return ckpt


def resume_differences(ckpt: dict, cfg) -> list[str]:
    """The training settings (other than RESUME_MAY_DIFFER) that differ between a checkpoint and `cfg`."""
    if "train_config" not in ckpt:
        return ["train_config: not saved (a checkpoint train() did not write) -> given"]
    return config_differences(ckpt["train_config"], asdict(cfg), ignore=RESUME_MAY_DIFFER)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model a checkpoint was trained with and load its weights."""
    from .model import MiniModel

    ckpt = load_checkpoint(path, map_location)
    model = MiniModel(ModelConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(map_location)
