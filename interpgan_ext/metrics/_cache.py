"""Train-once helpers: a small model trained on SynthFaces, cached with its held-out scores in a run directory."""
import os
import time
from typing import Callable, Optional

import torch


def load_or_train(path: Optional[str], steps: int, build: Callable[[dict], torch.nn.Module],
                  train: Callable[[], torch.nn.Module], evaluate: Callable[[torch.nn.Module], dict], device="cpu",
                  extra: Optional[dict] = None):
    """(model, scores). Loads `path` when it holds a model trained for `steps` steps; else trains, evaluates and
    saves it there atomically (`path=None`: no cache). `build(saved)` makes an empty model from what was saved."""
    if path and os.path.exists(path):
        state = torch.load(path, map_location=device, weights_only=False)
        if state.get("steps") == steps:
            model = build(state).to(device)
            model.load_state_dict(state["model"])
            return model.eval(), state["scores"]
    t0 = time.perf_counter()
    model = train()
    scores = evaluate(model)
    scores["train_seconds"] = time.perf_counter() - t0
    if path:
        from ..trainer import atomic_save

        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        atomic_save({"model": model.state_dict(), "steps": steps, "scores": scores, **(extra or {})}, path)
    return model, scores
