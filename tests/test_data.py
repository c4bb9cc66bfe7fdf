"""SynthFaces, ImageFolder and LFW."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from interpgan_ext.data import ATTRIBUTES, PARTS, ImageFolder, LFWFaces, SynthFaces, build_dataset


def test_synth_faces_deterministic_and_in_range():
    a = SynthFaces(size=32, n=50, seed=3)
    b = SynthFaces(size=32, n=50, seed=3)
    ia, la = a.render(torch.arange(10))
    ib, lb = b.render(torch.arange(10))
    assert torch.equal(ia, ib) and torch.equal(la, lb)
    assert ia.shape == (10, 3, 32, 32) and ia.min() >= -1 and ia.max() <= 1
    assert not torch.equal(ia, SynthFaces(size=32, n=50, seed=4).render(torch.arange(10))[0])


def test_synth_faces_large_requests_render_in_chunks_with_the_same_pixels():
    ds = SynthFaces(size=16, n=300, seed=5)
    ds.render_pixels = 32 * 16 * 16  # chunks of 32 images
    idx = torch.tensor([7, 250, 3] + list(range(100, 170)))  # 73 indices: two full chunks and a partial one
    img, lab = ds.render(idx)
    assert img.shape == (73, 3, 16, 16) and lab.shape == (73, 16, 16)
    for pos in (0, 1, 2, 40, 72):  # single images, drawn on their own, match their rows
        one_img, one_lab = ds[int(idx[pos])]
        assert torch.allclose(img[pos], one_img, atol=1e-6) and torch.equal(lab[pos], one_lab)


def test_masks_cover_every_pixel_once_and_parts_appear():
    ds = SynthFaces(size=64, n=200, seed=0)
    img, lab = ds.render(torch.arange(200))
    masks = ds.masks(lab)
    assert masks.shape == (200, len(PARTS), 64, 64)
    assert torch.all(masks.sum(1) == 1)
    present = set(lab.unique().tolist())
    assert present == set(range(len(PARTS))), [PARTS[i] for i in set(range(len(PARTS))) - present]


def test_attributes_follow_the_drawing():
    ds = SynthFaces(size=64, n=300, seed=1)
    att = ds.attributes()
    assert att.shape == (300, len(ATTRIBUTES))
    _, lab = ds.render(torch.arange(300))
    has_glasses = (lab == PARTS.index("glasses")).flatten(1).any(1).float()
    assert torch.equal(has_glasses, att[:, ATTRIBUTES.index("glasses")])


def test_image_folder_reads_and_skips_corrupt(tmp_path):
    for i in range(3):
        Image.fromarray((np.random.rand(40, 30, 3) * 255).astype("uint8")).save(tmp_path / f"im{i}.png")
    os.makedirs(tmp_path / "sub")
    Image.fromarray((np.random.rand(20, 20, 3) * 255).astype("uint8")).save(tmp_path / "sub" / "x.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image at all")
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable"):
        ds = ImageFolder(str(tmp_path), size=16)
    assert len(ds) == 4 and ds.n_skipped == 1
    assert ds[0].shape == (3, 16, 16) and ds[0].min() >= -1 and ds[0].max() <= 1


def test_image_folder_threads_keep_file_order_across_chunks_and_failures(tmp_path, monkeypatch):
    # Solid colours, so each item says which file it came from; unreadable files sit inside and between chunks.
    colours = [(10 * i, 255 - 20 * i, 7 * i) for i in range(9)]
    for i, c in enumerate(colours):
        Image.new("RGB" if i % 3 else "RGBA", (30 + i, 24), c).save(tmp_path / f"f{i}.png")
    for name in ("f2b.jpg", "f5b.png"):
        (tmp_path / name).write_bytes(b"truncated")
    monkeypatch.setattr(ImageFolder, "CHUNK", 2)
    with pytest.warns(RuntimeWarning, match=r"skipped 2 unreadable file\(s\).*f2b.jpg.*f5b.png"):
        threaded = ImageFolder(str(tmp_path), size=8, workers=4)
    with pytest.warns(RuntimeWarning):
        serial = ImageFolder(str(tmp_path), size=8, workers=1)
    assert torch.equal(threaded.images, serial.images) and threaded.images.dtype == torch.uint8
    assert len(threaded) == 9 and threaded.n_skipped == 2
    for i, c in enumerate(colours):
        assert threaded.images[i, :, 4, 4].tolist() == list(c)
    assert torch.allclose(threaded[3][:, 0, 0], torch.tensor(colours[3]) / 127.5 - 1)
    with pytest.warns(RuntimeWarning, match="skipped 1"):  # the first 4 files hold f2b.jpg
        first = build_dataset(str(tmp_path), 8, max_images=4, progress=False)
    assert torch.equal(first.images, threaded.images[:3])


def test_image_folder_empty_and_missing(tmp_path):
    with pytest.raises(ValueError, match="no images"):
        ImageFolder(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        ImageFolder(str(tmp_path / "missing"))
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="could be read"):
        ImageFolder(str(tmp_path))


def test_lfw_subset():
    pytest.importorskip("skimage")
    ds = LFWFaces(size=32)
    assert len(ds) == 100 and ds[0].shape == (3, 32, 32)
    assert isinstance(build_dataset("lfw", 16), LFWFaces)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_synth_faces_render_on_gpu_matches_cpu():
    ds = SynthFaces(size=32, n=20, seed=2)
    ic, lc = ds.render(torch.arange(20))
    ig_, lg = ds.render(torch.arange(20), device="cuda")
    assert torch.allclose(ig_.cpu(), ic, atol=1e-4)
    assert (lg.cpu() != lc).float().mean() < 1e-3  # a pixel exactly at a part's half-coverage may flip
