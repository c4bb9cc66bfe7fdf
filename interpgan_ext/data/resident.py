"""Training images held on the training device, so that a step's real batch is one gather there.

Drawn from the dataset at every step instead, a batch of SynthFaces costs ~470 small ops (the renderer's passes
over the pixels: on a GPU, as many kernel launches), and a batch of a decoded folder a conversion on the CPU and a
copy from pageable memory. A GPU training step is bound by the host's work, not by the device's
(bench/results/README.md), so those ops cost the step their host time. Held, the batch costs the index copy, a
gather and, for uint8 folders, one conversion.

The trainer holds the images when `TrainConfig.data_on_device` says so: "auto" (the default) on a CUDA device when
they take at most a quarter of its free memory; "on" always; "off" never. The library's datasets can be held
(SynthFaces is rendered once, as float32; a decoded folder and LFW keep their arrays as they are); any other
dataset is drawn item by item as before.
"""
from typing import Optional

import torch

from .._progress import progress_bar
from .image_folder import ImageFolder, LFWFaces, to_unit_range
from .synth_faces import SynthFaces

MODES = ("auto", "on", "off")
AUTO_SHARE_OF_FREE_MEMORY = 0.25


def held_bytes(data) -> Optional[int]:
    """The memory data's images take when held, or None for a dataset that cannot be held. Only the library's own:
    a dataset of yours may transform its items in __getitem__, which holding its arrays would skip."""
    if isinstance(data, SynthFaces):
        return len(data) * 3 * data.size ** 2 * 4
    if isinstance(data, (ImageFolder, LFWFaces)):
        return data.images.numel() * data.images.element_size()
    return None


def should_hold(data, device: torch.device, mode: str) -> bool:
    """Whether the trainer holds data's images on device, under TrainConfig.data_on_device = mode."""
    if mode not in MODES:
        raise ValueError(f"data_on_device must be one of {', '.join(MODES)}, got {mode!r}")
    size = held_bytes(data)
    if mode == "off":
        return False
    if size is None:
        if mode == "on":
            raise ValueError(f"data_on_device='on': a {type(data).__name__} cannot be held on the device; the "
                             "library's SynthFaces, ImageFolder and LFWFaces can (use 'auto' or 'off' for others)")
        return False
    if mode == "on":
        return True
    if device.type != "cuda":  # on the CPU a batch is drawn where it is used anyway; holding would only take memory
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return size <= AUTO_SHARE_OF_FREE_MEMORY * free


class ResidentImages:
    """data's images on `device`. render(indices) gives the batch that data.render(indices) gives on that device
    ([N, 3, S, S] in [-1, 1], and None for labels), the same pixels: SynthFaces draws each face on its own, so a
    face rendered with all the others equals the face rendered in a batch."""

    # SynthFaces rendered this many pixels at a time: bounded memory for its temporaries (labels included)
    RENDER_PIXELS = 1 << 22

    def __init__(self, data, device, progress: bool = False):
        device = torch.device(device)
        if isinstance(data, SynthFaces):
            n, S = len(data), data.size
            self.images = torch.empty(n, 3, S, S, device=device)
            step = max(1, self.RENDER_PIXELS // S ** 2)
            bar = progress_bar(n, f"rendering SynthFaces on {device}", progress and n > step, unit="img", leave=False)
            for i in range(0, n, step):
                self.images[i:i + step] = data.render(torch.arange(i, min(n, i + step)), device=device)[0]
                bar.update(min(step, n - i))
            bar.close()
        elif held_bytes(data) is not None:
            self.images = data.images.to(device)
        else:
            raise TypeError(f"ResidentImages: a {type(data).__name__} has no images to hold (see held_bytes)")
        self.device = device

    def __len__(self):
        return len(self.images)

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size()

    def render(self, indices):
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1).to(self.device)
        return to_unit_range(self.images[idx]), None
