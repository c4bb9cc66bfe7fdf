"""Real images: any folder of JPG/PNG/BMP/WebP/TIFF files, and scikit-image's bundled LFW faces."""
import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from PIL import Image, ImageOps

from .._atomic import atomic_path, atomic_write_json
from .._progress import progress_bar

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Decoded pixels as the datasets give them: uint8 scaled to float in [-1, 1]; float ones are already there."""
    return images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images


# Greyscale modes whose values convert("RGB") clips to 0..255 instead of scaling: a 16-bit PNG came out white, a
# float TIFF in [0, 1] black.
_WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _as_rgb(img: Image.Image) -> Image.Image:
    if img.mode not in _WIDE_GREY_MODES:
        return img.convert("RGB")
    values = np.nan_to_num(np.asarray(img, dtype=np.float64))
    top = values.max(initial=0.0)
    if img.mode == "F":
        full = 1.0 if top <= 1.0 else 255.0  # floats in [0, 1], else already in 8-bit units
    else:
        full = 65535.0 if top <= 65535 else top  # 16 bits (I holds them in older Pillow), else the image's range
    grey = np.clip(np.rint(values * (255.0 / full)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _to_uint8(img: Image.Image, size: int) -> torch.Tensor:
    """Upright (a camera's EXIF orientation applied), centre cropped to a square and resized to size x size:
    uint8 [3, size, size]."""
    img = _as_rgb(ImageOps.exif_transpose(img))
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


def default_cache_dir():
    """Where decoded folders are kept: $INTERPGAN_CACHE, else ~/.cache/interpgan_ext/images (XDG_CACHE_HOME is
    respected). INTERPGAN_CACHE=off turns the cache off."""
    env = os.environ.get("INTERPGAN_CACHE", "").strip()
    if env.lower() in ("off", "0", "none", "false"):
        return None
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "interpgan_ext", "images")


def _cache_key(path: str, size: int, files) -> str:
    """Names the decoded array of exactly these files at this size: a file added, removed, rewritten or touched
    gives another key, so a stale cache is never read."""
    # the version names the decoding, so an older entry is not read as a newer one: v2 applies the EXIF orientation,
    # v3 scales 16-bit and float greyscale
    h = hashlib.sha256(f"interpgan-image-folder-v3|{os.path.realpath(path)}|{size}".encode())
    for fn in files:
        st = os.stat(fn)
        h.update(f"|{os.path.relpath(fn, path)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


@contextmanager
def _exclusive(lock_path: str):
    """One process at a time decodes a folder into the cache: the ranks of a torchrun job that start together wait
    for the first, then map its array. Where files cannot be locked (Windows, some network file systems), each
    process decodes for itself, as without a cache."""
    fh = None
    try:
        import fcntl

        os.makedirs(os.path.dirname(lock_path), exist_ok=True)
        fh = open(lock_path, "a")
        fcntl.flock(fh, fcntl.LOCK_EX)
    except (ImportError, OSError):
        if fh is not None:
            fh.close()
            fh = None
    try:
        yield
    finally:
        if fh is not None:
            fh.close()  # releases the lock


class ImageFolder(torch.utils.data.Dataset):
    """All images under `path` (recursively), centre-cropped and resized; items are [3, size, size] in [-1, 1].

    Files that cannot be decoded are skipped with one warning that counts them (`n_skipped`); an empty
    folder, or one with no readable image, is an error. Images are decoded once, by `workers` threads (Pillow
    decodes and resizes outside the GIL) with a progress bar, and kept in memory as uint8: CelebA's 200k images
    take 2.5 GB at 64 px.

    The decoded images are cached on disk (`cache`: a folder, default `default_cache_dir()`; False for none). The
    next run on the same files and size, a resume or an evaluation maps the cached array instead of decoding again.
    Processes that start together (the ranks of a torchrun job) decode once between them, and share the mapped
    pages. A change to any file (its size or modification time) or to the list of files makes a new cache entry.
    """

    CHUNK = 256  # files per task: fewer, larger tasks than one per file keep the pool's overhead small

    def __init__(self, path: str, size: int = 64, max_images: int = None, workers: int = None,
                 progress: bool = True, cache=True):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"ImageFolder: no such folder: {path}")
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
                       if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise ValueError(f"ImageFolder: no images ({', '.join(IMAGE_EXTENSIONS)}) found under {path}")
        if max_images:
            files = files[:max_images]
        self.size = size
        cache_dir = default_cache_dir() if cache is True else (cache or None)
        self.cache_file = None
        if cache_dir:
            self.cache_file = os.path.join(cache_dir, _cache_key(path, size, files) + ".npy")
        with _exclusive(self._entry_file(".lock")) if self.cache_file else nullcontext():
            self.from_cache = self.cache_file is not None and self._load_cache(path)
            if not self.from_cache:
                self._decode(path, files, size, workers, progress)
                if self.cache_file and len(self.images):
                    self._save_cache(path)
        if self.n_skipped:
            warnings.warn(f"ImageFolder: skipped {self.n_skipped} unreadable file(s) under {path}: "
                          + ", ".join(self.skipped[:5]) + (" ..." if self.n_skipped > 5 else ""),
                          RuntimeWarning, stacklevel=2)
        if not len(self.images):
            raise ValueError(f"ImageFolder: none of the {len(files)} image files under {path} could be read")

    def _decode(self, path, files, size, workers, progress):
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
        failed.sort()
        if failed:
            keep = torch.ones(len(files), dtype=torch.bool)
            keep[[row for row, _ in failed]] = False
            images = images[keep]
        self.images = images
        self.n_skipped = len(failed)
        self.skipped = [reason for _, reason in failed]

    def _entry_file(self, ext: str) -> str:
        """The cache entry's other files: its metadata (.json) and its lock (.lock) beside the array (.npy)."""
        return self.cache_file[: -len(".npy")] + ext

    def _load_cache(self, path) -> bool:
        """Maps the cached array, if there is a complete one; False (and a warning, if it is damaged) otherwise."""
        meta_file = self._entry_file(".json")
        if not (os.path.exists(meta_file) and os.path.exists(self.cache_file)):
            return False
        try:
            with open(meta_file) as fh:
                meta = json.load(fh)
            # copy-on-write mapping: a writable array (torch wants one), pages shared with other readers
            images = np.load(self.cache_file, mmap_mode="c")
            if images.shape != (meta["n_images"], 3, self.size, self.size) or images.dtype != np.uint8:
                raise ValueError(f"shape {images.shape} {images.dtype}, expected {meta['n_images']} images")
        except (OSError, ValueError, KeyError) as exc:
            warnings.warn(f"ImageFolder: ignoring a damaged cache entry for {path} ({self.cache_file}: {exc}); "
                          "decoding again", RuntimeWarning, stacklevel=3)
            return False
        self.images = torch.from_numpy(images)
        self.n_skipped, self.skipped = len(meta["skipped"]), meta["skipped"]
        return True

    def _save_cache(self, path):
        """Writes the array, then its metadata; a reader needs both, so a crash in between leaves no entry."""
        try:
            os.makedirs(os.path.dirname(self.cache_file), exist_ok=True)
            with atomic_path(self.cache_file) as tmp, open(tmp, "wb") as fh:
                np.save(fh, self.images.numpy())
            atomic_write_json({"path": os.path.realpath(path), "size": self.size, "n_images": len(self.images),
                               "skipped": self.skipped}, self._entry_file(".json"))
        except OSError as exc:  # a read-only home, a full disk: the run goes on, uncached
            warnings.warn(f"ImageFolder: could not cache the decoded images in {self.cache_file} ({exc}); "
                          "set INTERPGAN_CACHE to a writable folder, or to off", RuntimeWarning, stacklevel=3)
            self.cache_file = None

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return to_unit_range(self.images[i])

    def render(self, indices):
        return to_unit_range(self.images[torch.as_tensor(indices)]), None


def cache_entries(cache_dir: str = None) -> list:
    """The decoded folders in the cache: dicts of path, size, n_images, bytes and file (newest first)."""
    cache_dir = cache_dir or default_cache_dir()
    if not cache_dir or not os.path.isdir(cache_dir):
        return []
    entries = []
    for name in os.listdir(cache_dir):
        array = os.path.join(cache_dir, name[: -len(".json")] + ".npy")
        if not name.endswith(".json") or not os.path.exists(array):
            continue
        try:
            with open(os.path.join(cache_dir, name)) as fh:
                meta = json.load(fh)
            entries.append({"path": meta["path"], "size": meta["size"], "n_images": meta["n_images"],
                            "bytes": os.path.getsize(array), "file": array, "mtime": os.path.getmtime(array)})
        except (OSError, ValueError, KeyError):
            continue
    return sorted(entries, key=lambda e: -e["mtime"])


def clear_cache(cache_dir: str = None) -> int:
    """Deletes every cache entry (and unfinished or damaged ones); returns the bytes freed. A process that has an
    entry mapped keeps reading it: the file goes when the mapping does."""
    cache_dir = cache_dir or default_cache_dir()
    freed = 0
    if cache_dir and os.path.isdir(cache_dir):
        for name in os.listdir(cache_dir):
            if name.endswith((".npy", ".json", ".lock")) or ".tmp." in name:
                fn = os.path.join(cache_dir, name)
                try:
                    freed += os.path.getsize(fn)
                    os.remove(fn)
                except FileNotFoundError:  # another process removed it first
                    pass
    return freed


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
