"""Pictures: image grids as PNG."""
import os

import numpy as np
import torch
from PIL import Image


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 1) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> an HxWx3 uint8 grid with `nrow` images per row."""
    images = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    N, C, H, W = images.shape
    ncol = min(nrow, N)
    nrows = (N + ncol - 1) // ncol
    grid = torch.full((C, nrows * (H + pad) + pad, ncol * (W + pad) + pad), 255, dtype=torch.uint8)
    for i in range(N):
        r, c = divmod(i, ncol)
        grid[:, pad + r * (H + pad): pad + r * (H + pad) + H, pad + c * (W + pad): pad + c * (W + pad) + W] = images[i]
    return grid.permute(1, 2, 0).numpy()


def save_image_grid(images: torch.Tensor, path: str, nrow: int = 8, scale: int = 1) -> str:
    """Write a PNG grid of images in [-1, 1]; `scale` enlarges small images (nearest neighbour)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    img = Image.fromarray(image_grid(images, nrow))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)
    return path
