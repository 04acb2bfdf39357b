"""How a training run stops: on Ctrl-C at a step boundary, with its state saved, or on a nan with a hint.

train() (train.py) uses these. The messages fit a notebook (train(..., resume=True)) and a shell
(`minimodels-train --resume`). Taught in lessons/01_baseline_gpt.ipynb (checkpoints and resuming).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or the notebook's stop button) during train().

    A KeyboardInterrupt, so Run All stops and `except KeyboardInterrupt` still catches it. `.history` holds the
    loss curve so far, `.saved_step` the step count that `.path` holds now (None: nothing saved).
    """

    def __init__(self, message: str, *, path: str | None, saved_step: int | None, history: dict):
        super().__init__(message)
        self.path, self.saved_step, self.history = path, saved_step, history


class TrainingDivergedError(FloatingPointError):
    """The loss or the gradient norm became nan or inf; `.history` holds the curve up to the bad step."""

    def __init__(self, message: str, *, history: dict):
        super().__init__(message)
        self.history = history


class DeferInterrupt:
    """Within its `with`, the first Ctrl-C only sets `requested`: the step in flight finishes and train() stops
    at the step boundary, in a state it can save. A second Ctrl-C raises KeyboardInterrupt at once."""

    def __init__(self, then: str = "stopping"):
        self.then = then  # what the note printed on the first Ctrl-C says happens after the step

    def __enter__(self) -> DeferInterrupt:
        self.requested, self._previous = False, None
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach the main thread only
        previous = signal.getsignal(signal.SIGINT)
        if previous is not signal.SIG_IGN:  # a process started to ignore Ctrl-C keeps ignoring it
            self._previous = signal.SIG_DFL if previous is None else previous
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        with contextlib.suppress(Exception):
            print(f"\ninterrupt: finishing this step, then {self.then} (interrupt again to stop at once, unsaved)",
                  file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def diverged_message(what: str, cfg, saved_step: int | None) -> str:
    """What broke, that the last checkpoint is intact, and what to try (cfg is the run's TrainConfig)."""
    kept = (f"{cfg.checkpoint_path} still holds the last good state (after {saved_step} steps)"
            if saved_step is not None else "no checkpoint of this run was written")
    clip = f"grad_clip={cfg.grad_clip} now" if cfg.grad_clip else "grad_clip=1.0; it is off now"
    return (f"training stopped: {what}. The model in memory is no longer usable; {kept}. Try a lower lr "
            f"(lr={cfg.lr:g} now), gradient clipping ({clip}), or check the data (token ids, batches). "
            f"The curve so far is in this error's .history")


def interrupted(cfg, steps_done: int | None, saved_step: int | None, history: dict) -> TrainingInterrupted:
    """The exception train() raises on Ctrl-C, with a message that works in a notebook and in a shell.

    steps_done: the steps finished (None if a step was cut off); saved_step: the steps the checkpoint holds.
    """
    path, total = cfg.checkpoint_path, cfg.steps
    how = (f"Continue the same loss curve with train(model, data, cfg, resume=True) in Python, or "
           f"`minimodels-train --resume --out {path}` (same options) in a shell")
    if saved_step is not None and saved_step == steps_done:
        text = f"training interrupted after {steps_done} of {total} steps, saved to {path}. {how}"
    elif saved_step is not None:
        text = (f"training interrupted in the middle of a step, which was not saved; {path} holds the state "
                f"after {saved_step} of {total} steps. {how}")
    else:
        text = (f"training interrupted after {len(history['step'])} of {total} steps; nothing was saved"
                + ("" if path else " (set TrainConfig(checkpoint_path=...) to be able to resume)"))
    return TrainingInterrupted(text, path=path, saved_step=saved_step, history=history)
