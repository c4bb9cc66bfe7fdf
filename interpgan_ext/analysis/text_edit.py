"""Text-driven editing (StyleCLIP's latent optimisation, Patashnik et al. 2021): move z so that an image-text
model finds G(z) closer to a text, with an L2 leash to the starting latent.

The image-text model is pluggable: any object with `encode_image(images) -> [B, D]` and
`encode_text(tokens) -> [T, D]`, plus a tokenizer (str list -> tokens). `load_image_text_model` loads
open_clip with the user's local weights, a loader function of the user's (any model: Hugging Face's CLIP, say), or a
TorchScript file of such a model (torch 2.14+ warns that TorchScript is deprecated). Weights cannot be downloaded
here, so the tests use small, randomly initialised models: they check the loading paths and that the optimisation
lowers the text loss, not that the edits mean anything.
"""
import importlib
import importlib.util
import os
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..edit import deterministic


def byte_tokens(texts: Sequence[str], length: int = 32) -> torch.Tensor:
    """A tokenizer for small models: UTF-8 bytes, truncated or zero-padded to `length` [T, length]."""
    out = torch.zeros(len(texts), length, dtype=torch.long)
    for i, t in enumerate(texts):
        b = list(t.encode("utf-8"))[:length]
        if b:
            out[i, :len(b)] = torch.tensor(b, dtype=torch.long) + 1  # 0 is padding
    return out


def load_image_text_model(spec: str, device="cpu"):
    """(model, tokenizer, image size). `spec` is one of
    - "open_clip:ARCH:/path/to/weights.pt" (needs open_clip);
    - "python:/path/to/loader.py:FUNCTION" or "python:package.module:FUNCTION": FUNCTION(device) returns
      (model, tokenizer, image size), for any model with encode_image and encode_text;
    - a path to a TorchScript file whose module has encode_image, encode_text and an `image_size` attribute (tokens
      from `byte_tokens`)."""
    if spec.startswith("python:"):
        return _call_loader(spec, device)
    if spec.startswith("open_clip:"):
        _, arch, path = spec.split(":", 2)
        try:
            import open_clip
        except ImportError as e:
            raise ImportError("load_image_text_model: open_clip is not installed (pip install open_clip_torch)") from e
        model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=path, device=device)
        size = model.visual.image_size
        return model.eval(), open_clip.get_tokenizer(arch), size[0] if isinstance(size, (tuple, list)) else size
    model = torch.jit.load(spec, map_location=device).eval()
    for name in ("encode_image", "encode_text"):
        if not hasattr(model, name):
            raise ValueError(f"load_image_text_model: {spec} has no {name}()")
    return model, byte_tokens, int(model.image_size)


def _call_loader(spec: str, device):
    where, sep, name = spec[len("python:"):].rpartition(":")
    if not sep or not where or not name:
        raise ValueError(f"load_image_text_model: {spec!r} is not python:FILE.py:FUNCTION or python:MODULE:FUNCTION")
    if where.endswith(".py"):
        if not os.path.isfile(where):
            raise FileNotFoundError(f"load_image_text_model: no loader file {where}")
        stem = os.path.splitext(os.path.basename(where))[0]
        module_spec = importlib.util.spec_from_file_location(f"interpgan_loader.{stem}", where)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    loader = getattr(module, name, None)
    if not callable(loader):
        raise ValueError(f"load_image_text_model: {where} has no function {name}")
    loaded = loader(device)
    if not (isinstance(loaded, tuple) and len(loaded) == 3):
        raise ValueError(f"load_image_text_model: {name}(device) must return (model, tokenizer, image size), "
                         f"not {type(loaded).__name__}")
    model, tokenizer, size = loaded
    for method in ("encode_image", "encode_text"):
        if not callable(getattr(model, method, None)):
            raise ValueError(f"load_image_text_model: the model from {name} has no {method}()")
    if not callable(tokenizer):
        raise ValueError(f"load_image_text_model: the tokenizer from {name} is not callable")
    if isinstance(model, torch.nn.Module):
        model.eval()  # as the other loaders do: no dropout while the latents are optimised
    return model, tokenizer, int(size)


def text_edit(G, z: torch.Tensor, model, tokens: torch.Tensor, image_size: int, steps: int = 100, lr: float = 0.05,
              l2_weight: float = 0.01, normalize: Callable = None):
    """(edited z, images, text loss per step). Minimises 1 - cos(E_img(G(z)), E_txt(text)) + l2 ||z - z0||^2."""
    with torch.no_grad():
        target = F.normalize(model.encode_text(tokens.to(z.device)).float().mean(0, keepdim=True), dim=-1)
    z0 = z.detach()
    w = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    history = []
    with deterministic(G):
        G.requires_grad_(False)
        for _ in range(steps):
            x = F.interpolate(G(w), size=(image_size, image_size), mode="bilinear", align_corners=False)
            if normalize is not None:
                x = normalize(x)
            emb = F.normalize(model.encode_image(x).float(), dim=-1)
            text_loss = (1 - emb @ target.T).mean()
            loss = text_loss + l2_weight * (w - z0).pow(2).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(text_loss.item())
        with torch.no_grad():
            x = G(w)
    return w.detach(), x, history
