"""SynthFaces, ImageFolder and LFW."""
import os
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from interpgan_ext.data import ATTRIBUTES, PARTS, ImageFolder, LFWFaces, SynthFaces, build_dataset, image_folder


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


def test_image_folder_turns_camera_photos_upright(tmp_path):
    # a portrait photo as a camera stores it: the pixels lie on their side, and EXIF orientation 6 says "turn 90
    # degrees clockwise to view". Upright, the top half is black and the bottom half white.
    upright = np.zeros((40, 20, 3), dtype="uint8")
    upright[20:] = 255
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1)))  # as the sensor wrote it: 20 x 40
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "portrait.jpg", exif=exif, quality=95)
    img = ImageFolder(str(tmp_path), size=8, cache=False)[0]
    assert img[:, :3].mean() < -0.9 and img[:, 5:].mean() > 0.9  # dark top rows, light bottom rows


def test_image_folder_scales_16_bit_and_float_greyscale_as_8_bit(tmp_path):
    # convert("RGB") clips these modes' values to 0..255: a 16-bit PNG came out white, a float TIFF in [0, 1] black.
    ramp = np.linspace(0, 1, 32 * 32).reshape(32, 32)
    Image.fromarray(np.rint(ramp * 255).astype(np.uint8)).save(tmp_path / "a_8bit.png")
    Image.fromarray(np.rint(ramp * 65535).astype(np.uint16)).save(tmp_path / "b_16bit.png")
    Image.fromarray(ramp.astype(np.float32), mode="F").save(tmp_path / "c_float.tiff")
    assert Image.open(tmp_path / "b_16bit.png").mode in ("I;16", "I")
    assert Image.open(tmp_path / "c_float.tiff").mode == "F"
    ds = ImageFolder(str(tmp_path), size=32, cache=False)
    assert len(ds) == 3 and ds.n_skipped == 0
    eight_bit = ds[0]
    assert eight_bit.min() < -0.99 and eight_bit.max() > 0.99  # the ramp spans the range
    for i in (1, 2):
        assert (ds[i] - eight_bit).abs().max() <= 2 / 127.5  # the same ramp, but for rounding


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


def _folder_of_colours(root, n=5):
    os.makedirs(root, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (20 + i, 16), (40 * i, 10, 200 - 30 * i)).save(root / f"c{i}.png")
    (root / "broken.jpg").write_bytes(b"not an image")


def test_image_folder_cache_is_read_back_without_decoding(tmp_path, image_cache, monkeypatch):
    _folder_of_colours(tmp_path)
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable.*broken.jpg"):
        first = ImageFolder(str(tmp_path), size=8, progress=False)
    assert not first.from_cache and os.path.dirname(first.cache_file) == str(image_cache)

    def no_decoding(*args):
        raise AssertionError("decoded although the folder is cached")

    monkeypatch.setattr(image_folder, "_decode_into", no_decoding)
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable.*broken.jpg"):  # the cache remembers the skips
        second = ImageFolder(str(tmp_path), size=8, progress=False)
    assert second.from_cache and second.cache_file == first.cache_file and second.n_skipped == 1
    assert torch.equal(second.images, first.images) and second.images.dtype == torch.uint8
    assert torch.equal(second[2], first[2]) and torch.equal(second.render([0, 3])[0], first.render([0, 3])[0])


def test_image_folder_cache_follows_the_files_and_the_size(tmp_path):
    _folder_of_colours(tmp_path)
    with pytest.warns(RuntimeWarning):
        base = ImageFolder(str(tmp_path), size=8, progress=False)
    keys = {base.cache_file}
    Image.new("RGB", (20, 16), (1, 2, 3)).save(tmp_path / "c1.png")  # rewritten: other pixels
    os.utime(tmp_path / "c1.png", ns=(1, 1))
    (tmp_path / "c9.png").write_bytes((tmp_path / "c0.png").read_bytes())  # added
    for kwargs in ({}, {"size": 12}, {"max_images": 3}):
        with pytest.warns(RuntimeWarning):
            ds = ImageFolder(str(tmp_path), **{"size": 8, "progress": False, **kwargs})
        assert not ds.from_cache and ds.cache_file not in keys
        keys.add(ds.cache_file)
    with pytest.warns(RuntimeWarning):
        changed = ImageFolder(str(tmp_path), size=8, progress=False)
    assert changed.from_cache and len(changed) == len(base) + 1
    assert changed.images[1, :, 0, 0].tolist() == [1, 2, 3] and base.images[1, :, 0, 0].tolist() == [40, 10, 170]


@pytest.mark.filterwarnings("ignore:ImageFolder. skipped 1")
def test_image_folder_damaged_or_unwritable_cache_falls_back_to_decoding(tmp_path, monkeypatch):
    _folder_of_colours(tmp_path / "imgs")
    folder = str(tmp_path / "imgs")
    with pytest.warns(RuntimeWarning):
        good = ImageFolder(folder, size=8, progress=False)
    with open(good.cache_file, "r+b") as fh:  # a torn array: its header promises more than the file holds
        fh.truncate(os.path.getsize(good.cache_file) // 2)
    with pytest.warns(RuntimeWarning, match="damaged cache entry"):
        again = ImageFolder(folder, size=8, progress=False)
    assert not again.from_cache and torch.equal(again.images, good.images)
    with pytest.warns(RuntimeWarning):
        assert ImageFolder(folder, size=8, progress=False).from_cache  # the entry was rewritten whole

    (tmp_path / "a_file").write_text("")
    with pytest.warns(RuntimeWarning, match="could not cache"):
        uncached = ImageFolder(folder, size=8, progress=False, cache=str(tmp_path / "a_file" / "cache"))
    assert uncached.cache_file is None and torch.equal(uncached.images, good.images)

    monkeypatch.setenv("INTERPGAN_CACHE", "off")
    with pytest.warns(RuntimeWarning):
        off = ImageFolder(folder, size=8, progress=False)
    assert off.cache_file is None and not off.from_cache
    assert image_folder.default_cache_dir() is None
    monkeypatch.delenv("INTERPGAN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert image_folder.default_cache_dir() == str(tmp_path / "xdg" / "interpgan_ext" / "images")


def test_image_folder_processes_starting_together_decode_once(tmp_path, monkeypatch):
    # torchrun's ranks build the dataset at the same moment: one decodes and caches, the others wait and map it.
    # (flock excludes separate opens of the lock file even within one process, so threads stand in for ranks.)
    import threading
    from concurrent.futures import ThreadPoolExecutor

    _folder_of_colours(tmp_path / "imgs", n=6)
    decoded, lock = [], threading.Lock()
    real_decode = image_folder._decode_into

    def counting_decode(out, files, start, size):
        with lock:
            decoded.extend(files)
        time.sleep(0.2)  # long enough for the other "ranks" to arrive while this one decodes
        return real_decode(out, files, start, size)

    monkeypatch.setattr(image_folder, "_decode_into", counting_decode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # broken.jpg
        with ThreadPoolExecutor(max_workers=4) as pool:
            ranks = list(pool.map(lambda _: ImageFolder(str(tmp_path / "imgs"), size=8, progress=False), range(4)))
    assert len(decoded) == 7  # every file once: 6 images and broken.jpg
    assert sorted(r.from_cache for r in ranks) == [False, True, True, True]
    for r in ranks:
        assert torch.equal(r.images, ranks[0].images)


def test_cli_cache_lists_and_clears_the_decoded_folders(tmp_path, image_cache, capsys, monkeypatch):
    from interpgan_ext.cli import main as cli_main

    _folder_of_colours(tmp_path / "imgs")
    with pytest.warns(RuntimeWarning):
        small = ImageFolder(str(tmp_path / "imgs"), size=8, progress=False)
    with pytest.warns(RuntimeWarning):
        ImageFolder(str(tmp_path / "imgs"), size=16, progress=False)
    (image_cache / "leftover.npy.tmp.123").write_bytes(b"x" * 10)  # a crash's unfinished write
    entries = {e["size"]: e for e in image_folder.cache_entries()}
    assert sorted(entries) == [8, 16] and all(e["n_images"] == 5 for e in entries.values())
    assert entries[8]["file"] == small.cache_file and entries[8]["bytes"] == os.path.getsize(small.cache_file)
    cli_main(["cache"])
    out = capsys.readouterr().out
    assert "5 images at   16 px" in out and "5 images at    8 px" in out and "2 cached folder(s)" in out
    cli_main(["cache", "--clear"])
    assert "deleted" in capsys.readouterr().out and os.listdir(image_cache) == []
    cli_main(["cache"])
    assert "0 cached folder(s), 0.0 MB" in capsys.readouterr().out
    monkeypatch.setenv("INTERPGAN_CACHE", "off")
    cli_main(["cache"])
    assert "off" in capsys.readouterr().out
