"""Real images: any folder of JPG/PNG files, and scikit-image's bundled LFW faces."""
import os
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import torch
from PIL import Image

from .._progress import progress_bar

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _to_uint8(img: Image.Image, size: int) -> torch.Tensor:
    """Centre crop to a square and resize to size x size: uint8 [3, size, size]."""
    img = img.convert("RGB")
    w, h = img.size
    side = min(w, h)
    img = img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    img = img.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


def _decode_into(out: torch.Tensor, files, start: int, size: int) -> list:
    """Decode files into out[start:start + len(files)]; returns the (row, reason) of each file that failed."""
    failed = []
    for row, fn in enumerate(files, start):
        try:
            with Image.open(fn) as im:
                out[row] = _to_uint8(im, size)
        except Exception as exc:  # truncated, corrupt, or not really an image
            failed.append((row, f"{os.path.basename(fn)} ({type(exc).__name__})"))
    return failed


class ImageFolder(torch.utils.data.Dataset):
    """All images under `path` (recursively), centre-cropped and resized; items are [3, size, size] in [-1, 1].

    Files that cannot be decoded are skipped with one warning that counts them (`n_skipped`); an empty
    folder, or one with no readable image, is an error. Images are decoded once, by `workers` threads (Pillow
    decodes and resizes outside the GIL) with a progress bar, and kept in memory as uint8: CelebA's 200k images
    take 2.5 GB at 64 px.
    """

    CHUNK = 256  # files per task: fewer, larger tasks than one per file keep the pool's overhead small

    def __init__(self, path: str, size: int = 64, max_images: int = None, workers: int = None,
                 progress: bool = True):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"ImageFolder: no such folder: {path}")
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
                       if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise ValueError(f"ImageFolder: no images ({', '.join(IMAGE_EXTENSIONS)}) found under {path}")
        if max_images:
            files = files[:max_images]
        images = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
        workers = workers or min(8, os.cpu_count() or 1)
        starts = range(0, len(files), self.CHUNK)
        failed = []
        bar = progress_bar(len(files), f"decoding {path}", progress and len(files) > self.CHUNK, unit="img",
                           leave=False)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            tasks = {pool.submit(_decode_into, images, files[i:i + self.CHUNK], i, size): i for i in starts}
            for task in as_completed(tasks):
                failed += task.result()
                bar.update(min(self.CHUNK, len(files) - tasks[task]))
        bar.close()
        self.n_skipped = len(failed)
        if failed:
            failed.sort()
            warnings.warn(f"ImageFolder: skipped {len(failed)} unreadable file(s) under {path}: "
                          + ", ".join(reason for _, reason in failed[:5]) + (" ..." if len(failed) > 5 else ""),
                          RuntimeWarning, stacklevel=2)
            keep = torch.ones(len(files), dtype=torch.bool)
            keep[[row for row, _ in failed]] = False
            images = images[keep]
        if not len(images):
            raise ValueError(f"ImageFolder: none of the {len(files)} image files under {path} could be read")
        self.images = images
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
