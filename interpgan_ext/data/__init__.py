"""Training data: the embedded SynthFaces (default), a folder of images, or scikit-image's LFW faces."""
from .image_folder import ImageFolder, LFWFaces
from .synth_faces import ATTRIBUTES, PARTS, SynthFaces


def build_dataset(name: str, size: int, n: int = 20000, seed: int = 0, progress: bool = True,
                  max_images: int = None):
    """'synth-faces' | 'lfw' | a folder path: all its images, or the first max_images (decoded with a progress bar
    unless progress=False)."""
    if name in ("synth-faces", "synth", "synthfaces"):
        return SynthFaces(size=size, n=n, seed=seed)
    if name == "lfw":
        return LFWFaces(size=size)
    return ImageFolder(name, size=size, max_images=max_images, progress=progress)


__all__ = ["SynthFaces", "ImageFolder", "LFWFaces", "PARTS", "ATTRIBUTES", "build_dataset"]
