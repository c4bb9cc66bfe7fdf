"""The training images held on the device (interpgan_ext/data/resident.py), and the trainer's use of them."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

from interpgan_ext.data import ImageFolder, SynthFaces
from interpgan_ext.data.resident import ResidentImages, held_bytes, should_hold
from interpgan_ext.models import build
from interpgan_ext.trainer import TrainConfig, Trainer, sample_real, step_generator, update_ema


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def some_indices(n, seed=0):
    # every image once, in order, then a random batch with repeats, as a step draws them
    return [torch.arange(n), torch.randint(n, (23,), generator=torch.Generator().manual_seed(seed))]


def test_synthfaces_held_gives_the_images_it_renders(monkeypatch):
    data = SynthFaces(16, n=70, seed=3)
    monkeypatch.setattr(ResidentImages, "RENDER_PIXELS", 8 * 16 * 16)  # chunks of 8 faces: 9 chunks, a ragged last
    held = ResidentImages(data, "cpu")
    assert held.images.shape == (70, 3, 16, 16) and held.nbytes == held_bytes(data) == 70 * 3 * 16 * 16 * 4
    for idx in some_indices(70):
        image, labels = held.render(idx)
        assert torch.equal(image, data.render(idx)[0])
        assert labels is None


def test_a_folder_held_gives_exactly_its_images(tmp_path):
    for i in range(5):
        Image.fromarray((np.random.RandomState(i).rand(20, 24, 3) * 255).astype("uint8")).save(tmp_path / f"{i}.png")
    folder = ImageFolder(str(tmp_path), size=8, progress=False, cache=False)
    held = ResidentImages(folder, "cpu")
    assert held.images.dtype == torch.uint8 and held.nbytes == held_bytes(folder) == 5 * 3 * 8 * 8
    for idx in some_indices(5):
        assert torch.equal(held.render(idx)[0], folder.render(idx)[0])


def test_should_hold_follows_the_mode_and_the_free_memory(monkeypatch):
    data = SynthFaces(16, n=100)
    size = held_bytes(data)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert should_hold(data, cpu, "on") and not should_hold(data, cpu, "off")
    assert not should_hold(data, cpu, "auto")  # on the CPU a batch is drawn where it is used anyway
    assert not should_hold(data, cuda, "off")
    # "auto" on a GPU: held when it takes at most a quarter of the free memory (mem_get_info: free, total)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * size, 10**12))
    assert should_hold(data, cuda, "auto")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * size - 4, 10**12))
    assert not should_hold(data, cuda, "auto")
    other = torch.utils.data.TensorDataset(torch.zeros(4, 3, 8, 8))  # a dataset of the user's: drawn as before
    assert held_bytes(other) is None and not should_hold(other, cpu, "auto")

    class Transformed(torch.utils.data.Dataset):  # an `images` array, but items made from it by __getitem__
        images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return self.images[i].float().flip(-1) / 255

    assert held_bytes(Transformed()) is None
    with pytest.raises(ValueError, match="TensorDataset cannot be held"):
        should_hold(other, cpu, "on")
    with pytest.raises(ValueError, match="auto, on, off"):
        should_hold(data, cpu, "always")


def test_a_held_batch_is_a_few_ops_not_a_render():
    # The point of holding: on a GPU each op is a launch from the host, and a SynthFaces batch is hundreds of them.
    data = SynthFaces(16, n=64)
    held = ResidentImages(data, "cpu")
    counts = {}
    for name, source in (("render", data), ("held", held)):
        with CountOps() as mode:
            sample_real(source, 8, step_generator(0, 1, 0))
        counts[name] = mode.n
    assert counts["held"] <= 6 and counts["render"] >= 100, counts


def make_trainer(out, data_on_device, device="cpu"):
    torch.manual_seed(0)
    G, D = build("dcgan", 16, z_dim=16, width=8)
    cfg = TrainConfig(steps=2, batch_size=8, z_dim=16, n_groups=3, gmm_images=8, langevin_steps=1,
                      data_on_device=data_on_device, device=device)
    return Trainer(G, D, G.default_layer, SynthFaces(16, n=64), cfg, out_dir=str(out))


def test_the_trainer_holds_the_images_as_configured_and_trains_on_the_same_batches(tmp_path):
    held = make_trainer(tmp_path / "held", "on")
    drawn = make_trainer(tmp_path / "drawn", "auto")  # on the CPU, auto draws each batch from the dataset
    assert isinstance(held.real_data, ResidentImages) and held.meta["data_held_bytes"] == 64 * 3 * 16 * 16 * 4
    assert drawn.real_data is drawn.data and drawn.meta["data_held_bytes"] == 0
    gen = step_generator(0, 5, 0)
    assert torch.equal(sample_real(held.real_data, 8, gen), sample_real(drawn.real_data, 8, step_generator(0, 5, 0)))
    logs = [held.train_step(), drawn.train_step()]
    assert all(logs[0][k] == logs[1][k] for k in ("loss_D", "loss_G", "L_cd", "L_gmm")), logs
    with pytest.raises(ValueError, match="data_on_device"):
        TrainConfig(data_on_device="yes")


def test_ema_update_moves_parameters_and_copies_buffers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    model(torch.randn(5, 3))  # batch-norm statistics that differ from ema's
    before = [p.detach().clone() for p in ema.parameters()]
    with torch.no_grad():
        update_ema(ema, model, 0.25)
    for e, b, m in zip(ema.parameters(), before, model.parameters()):
        assert torch.equal(e, b.lerp(m, 0.25))
    for e, m in zip(ema.buffers(), model.buffers()):
        assert torch.equal(e, m)
    bare_ema, bare = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)  # no buffers
    with torch.no_grad():
        update_ema(bare_ema, bare, 1.0)
    assert torch.equal(bare_ema.weight, bare.weight)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_on_a_gpu_the_held_synthfaces_equal_the_batches_rendered_there(tmp_path):
    data = SynthFaces(32, n=300)
    held = ResidentImages(data, "cuda")
    for idx in some_indices(300):
        assert torch.equal(held.render(idx)[0], data.render(idx, device="cuda")[0])
    trainer = make_trainer(tmp_path, "auto", device="cuda")  # 0.2 MB: auto holds it
    assert isinstance(trainer.real_data, ResidentImages) and trainer.real_data.images.is_cuda
    trainer.train_step()
