"""Training data: the embedded SynthFaces (default), a folder of images, or scikit-image's LFW faces."""
from .image_folder import ImageFolder, LFWFaces
from .synth_faces import ATTRIBUTES, PARTS, SynthFaces


SYNTH_FACES_NAMES = ("synth-faces", "synth", "synthfaces")


def is_synth_faces(name: str) -> bool:
    """Whether a run's `data` names the embedded SynthFaces: the only data with part labels and attributes."""
    return name in SYNTH_FACES_NAMES


def build_dataset(name: str, size: int, n: int = 20000, seed: int = 0, progress: bool = True,
                  max_images: int = None):
    """'synth-faces' | 'lfw' | a folder path: all its images, or the first max_images (decoded with a progress bar
    unless progress=False)."""
    if is_synth_faces(name):
        return SynthFaces(size=size, n=n, seed=seed)
    if name == "lfw":
        return LFWFaces(size=size)
    return ImageFolder(name, size=size, max_images=max_images, progress=progress)


__all__ = ["SynthFaces", "ImageFolder", "LFWFaces", "PARTS", "ATTRIBUTES", "build_dataset", "is_synth_faces"]
