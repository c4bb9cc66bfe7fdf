"""Real images: any folder of JPG/PNG files, and scikit-image's bundled LFW faces."""
import os
import warnings

import numpy as np
import torch
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _to_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """Centre crop to a square, resize to size x size, scale to [-1, 1]: [3, size, size]."""
    img = img.convert("RGB")
    w, h = img.size
    side = min(w, h)
    img = img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    img = img.resize((size, size), Image.BICUBIC)
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1)
    return arr / 127.5 - 1


class ImageFolder(torch.utils.data.Dataset):
    """All images under `path` (recursively), centre-cropped and resized; items are [3, size, size] in [-1, 1].

    Files that cannot be decoded are skipped with one warning that counts them (`n_skipped`); an empty
    folder, or one with no readable image, is an error. Images are decoded once and kept in memory as uint8.
    """

    def __init__(self, path: str, size: int = 64, max_images: int = None):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"ImageFolder: no such folder: {path}")
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
                       if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise ValueError(f"ImageFolder: no images ({', '.join(IMAGE_EXTENSIONS)}) found under {path}")
        if max_images:
            files = files[:max_images]
        images, skipped = [], []
        for fn in files:
            try:
                with Image.open(fn) as im:
                    images.append(((_to_tensor(im, size) + 1) * 127.5).round().to(torch.uint8))
            except Exception as exc:  # truncated, corrupt, or not really an image
                skipped.append(f"{os.path.basename(fn)} ({type(exc).__name__})")
        self.n_skipped = len(skipped)
        if skipped:
            warnings.warn(f"ImageFolder: skipped {len(skipped)} unreadable file(s) under {path}: "
                          + ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""), RuntimeWarning,
                          stacklevel=2)
        if not images:
            raise ValueError(f"ImageFolder: none of the {len(files)} image files under {path} could be read")
        self.images = torch.stack(images)
        self.size = size

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i].float() / 127.5 - 1

    def render(self, indices):
        return self.images[torch.as_tensor(indices)].float() / 127.5 - 1, None


class LFWFaces(torch.utils.data.Dataset):
    """The 100 real 25x25 grey faces that scikit-image ships (skimage.data.lfw_subset), resized, as RGB."""

    def __init__(self, size: int = 32):
        try:
            from skimage.data import lfw_subset
        except ImportError as exc:
            raise ImportError("LFWFaces needs scikit-image: pip install scikit-image") from exc
        # lfw_subset() holds 100 faces followed by 100 non-face patches
        faces = torch.from_numpy(np.asarray(lfw_subset()[:100], dtype=np.float32))  # [100, 25, 25] in [0, 1]
        faces = torch.nn.functional.interpolate(faces[:, None], size=(size, size), mode="bicubic", align_corners=False)
        self.images = (faces.clamp(0, 1) * 2 - 1).expand(-1, 3, -1, -1).contiguous()
        self.size = size

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]

    def render(self, indices):
        return self.images[torch.as_tensor(indices)], None
