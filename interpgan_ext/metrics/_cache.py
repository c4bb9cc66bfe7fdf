"""Train-once helpers: a small model trained on SynthFaces, cached with its held-out scores in a run directory."""
import hashlib
import os
import time
from typing import Callable, Optional

import torch


def load_or_train(path: Optional[str], steps: int, build: Callable[[dict], torch.nn.Module],
                  train: Callable[[], torch.nn.Module], evaluate: Callable[[torch.nn.Module], dict], device="cpu",
                  extra: Optional[dict] = None):
    """(model, scores). Loads `path` when it holds a model trained for `steps` steps with the same `extra`
    (architecture and the like: a cache from an older layout is retrained, not mis-loaded) and the same SynthFaces
    renderer (one trained on images drawn otherwise is retrained too); else trains, evaluates and saves it there
    atomically (`path=None`: no cache). `build(saved)` makes an empty model from what was saved."""
    from ..data import SynthFaces

    extra = {**(extra or {}), "synthfaces_renderer": SynthFaces.renderer_version}
    if path and os.path.exists(path):
        state = torch.load(path, map_location=device, weights_only=False)
        if state.get("steps") == steps and all(state.get(k) == v for k, v in extra.items()):
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
        atomic_save({"model": model.state_dict(), "steps": steps, "scores": scores, **extra}, path)
    return model, scores


def state_fingerprint(model: torch.nn.Module) -> str:
    """A short digest of a model's weights: two runs' metrics say whether the same segmenter measured them."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        # as raw bytes, so that any dtype (bf16 has no numpy type) hashes
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def train_on_synthfaces(model: torch.nn.Module, size: int, steps: int, loss_fn: Callable, batch_size: int = 32,
                        lr: float = 3e-3, data_seed: int = 1000, device="cpu", progress: bool = True,
                        desc: str = "train") -> torch.nn.Module:
    """AdamW with a one-cycle schedule on freshly rendered SynthFaces batches (every batch new, so the model
    cannot overfit). loss_fn(outputs, labels, attributes) -> loss."""
    from .._progress import progress_bar
    from ..data import SynthFaces

    data = SynthFaces(size, n=max(steps * batch_size, 1), seed=data_seed)
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=max(steps, 1), pct_start=0.15)
    with progress_bar(steps, desc, progress) as bar:
        for t in range(steps):
            idx = torch.arange(t * batch_size, (t + 1) * batch_size) % data.n
            x, labels = data.render(idx, device=device)
            loss = loss_fn(model(x), labels, data.attributes(idx).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()
