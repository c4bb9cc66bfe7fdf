"""The training loop: a smoke run, exact resume, the baseline path, both architectures, the CLI."""
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

from interpgan_ext.cli import main as cli_main
from interpgan_ext.data import SynthFaces
from interpgan_ext.models import build
from interpgan_ext.trainer import TrainConfig, Trainer, TrainingDiverged, TrainingInterrupted


def make_trainer(out, steps=20, **cfg):
    torch.manual_seed(0)
    G, D = build("dcgan", 16, z_dim=16, width=8)
    config = TrainConfig(**{**dict(steps=steps, batch_size=8, z_dim=16, n_groups=3, gmm_every=5, gmm_images=8,
                                   langevin_steps=2, log_every=5, image_every=10, ckpt_every=10, device="cpu"), **cfg})
    return Trainer(G, D, G.default_layer, SynthFaces(16, n=64), config, out_dir=str(out))


def read_log(out):
    with open(os.path.join(out, "log.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def test_smoke_run_writes_everything(tmp_path):
    tr = make_trainer(tmp_path)
    logs = tr.fit(progress=False)
    for k in ("loss_D", "loss_G", "L_cd", "L_interp", "L_gmm", "L_real"):
        assert torch.isfinite(torch.tensor(logs[k])), k
    assert set(logs["time"]) == {"D", "GMM", "Langevin", "W", "G"} or set(logs["time"]) >= {"D", "Langevin", "W", "G"}
    assert os.path.exists(tmp_path / "checkpoint.pt") and os.path.exists(tmp_path / "config.json")
    assert sorted(os.listdir(tmp_path / "samples")) == ["step_000010.png", "step_000020.png"]
    rows = read_log(tmp_path)
    assert [r["step"] for r in rows] == [5, 10, 15, 20] and all(r["images_per_s"] > 0 for r in rows)
    for r in rows:  # each part's mean seconds per step over the row's 5 steps, one of which refits the GMM
        assert set(r["time"]) == {"D", "GMM", "Langevin", "W", "G"}
        step_s = tr.cfg.batch_size / r["images_per_s"]
        assert 0.3 * step_s < sum(r["time"].values()) < step_s
    assert tr.energy.W.min() >= 0 and tr.energy.W.max() <= tr.cfg.w_max  # projected
    assert tr.q.shape == (tr.n_filters,)


def test_resume_equals_uninterrupted(tmp_path):
    full = make_trainer(tmp_path / "full")
    full.fit(progress=False)
    part = make_trainer(tmp_path / "part", steps=10)
    part.fit(progress=False)
    resumed = make_trainer(tmp_path / "part", steps=20)
    resumed.load_checkpoint()
    assert resumed.step == 10
    resumed.fit(progress=False)
    a, b = read_log(tmp_path / "full"), read_log(tmp_path / "part")
    assert [r["step"] for r in b] == [5, 10, 15, 20]
    for ra, rb in zip(a, b):
        for k in ("loss_D", "loss_G", "L_cd", "L_gmm", "L_real"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-5), (ra["step"], k)
    for pa, pb in zip(full.G.parameters(), resumed.G.parameters()):
        assert torch.allclose(pa, pb, rtol=1e-4, atol=1e-6)
    assert torch.equal(full.q, resumed.q)


def test_a_checkpoint_resumes_only_on_its_target_layer_and_the_runs_config_stays(tmp_path):
    # blocks.0.1 (a BatchNorm) has blocks.0's shape: its checkpoint would load, and train another layer's filters
    tr = make_trainer(tmp_path, steps=2)
    tr.fit(progress=False)
    torch.manual_seed(0)
    G, D = build("dcgan", 16, z_dim=16, width=8)
    other = Trainer(G, D, "blocks.0.1", SynthFaces(16, n=64), tr.cfg, out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="the checkpoint's target layer is 'blocks.0', this Trainer's 'blocks.0.1'"):
        other.load_checkpoint()
    with open(tmp_path / "config.json") as fh:  # the run's, not the refused Trainer's
        assert json.load(fh)["layer"] == "blocks.0"


def test_resume_after_a_crash_logs_each_step_once(tmp_path):
    from interpgan_ext.runs import load_run

    tr = make_trainer(tmp_path)  # checkpoints at 10 and 20, log rows every 5 steps
    real_step = tr.train_step

    def crashing_step():
        if tr.step == 17:
            raise RuntimeError("power cut")
        return real_step()

    tr.train_step = crashing_step
    with pytest.raises(RuntimeError, match="power cut"):
        tr.fit(progress=False)
    with open(tmp_path / "log.jsonl", "a") as fh:
        fh.write('{"step": 18, "loss_D": 0.')  # a row the crash cut short
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable line"):
        assert [r["step"] for r in load_run(str(tmp_path), device="cpu", G=tr.G).log()] == [5, 10, 15]
    resumed = make_trainer(tmp_path)
    resumed.load_checkpoint()
    assert resumed.step == 10 and [r["step"] for r in read_log(tmp_path)] == [5, 10]  # 15 is past the checkpoint
    resumed.fit(progress=False)
    assert [r["step"] for r in read_log(tmp_path)] == [5, 10, 15, 20]


@pytest.mark.parametrize("minutes, saved", [(0.0, [10, 12]), (1e-9, list(range(1, 13)))])
def test_checkpoints_by_steps_and_by_the_clock(tmp_path, minutes, saved):
    # ckpt_every steps, the last step, and (ckpt_minutes > 0) whenever that long has passed since the last save:
    # here every step, as a step takes longer than the 60 ns of 1e-9 minutes
    tr = make_trainer(tmp_path, steps=12, ckpt_minutes=minutes)
    steps, save = [], tr.save_checkpoint
    tr.save_checkpoint = lambda: (steps.append(tr.step), save())
    tr.fit(progress=False)
    assert steps == saved
    resumed = make_trainer(tmp_path, steps=12)
    resumed.load_checkpoint()
    assert resumed.step == 12


@pytest.mark.parametrize("bad", [dict(ckpt_every=0), dict(image_every=0), dict(log_every=0), dict(ckpt_minutes=-1.0),
                                 dict(ckpt_minutes=float("nan"))])
def test_config_refuses_intervals_that_would_never_or_always_fire(bad):
    (name, value), = bad.items()
    with pytest.raises(ValueError, match=f"TrainConfig.{name} must be >= "):
        TrainConfig(**bad)


def test_baseline_has_no_interpretability_terms(tmp_path):
    tr = make_trainer(tmp_path, steps=4, lambda0=0.0)
    logs = tr.fit(progress=False)
    assert "L_cd" not in logs and "L_gmm" not in logs and tr.q is None
    assert set(logs["time"]) == {"D", "G"}


def test_trainer_checks_the_data_against_the_generator(tmp_path):
    torch.manual_seed(0)
    G, D = build("dcgan", 16, z_dim=16, width=8)
    config = TrainConfig(z_dim=16, n_groups=3, device="cpu")

    def trainer(images):
        return Trainer(G, D, G.default_layer, list(images), config, out_dir=str(tmp_path))

    good = torch.rand(4, 3, 16, 16) * 2 - 1
    trainer(good)
    with pytest.raises(ValueError, match=r"items are \[3, 32, 32\] but G makes \[3, 16, 16\]"):
        trainer(torch.zeros(4, 3, 32, 32))
    with pytest.raises(ValueError, match=r"items are \[1, 16, 16\]"):
        trainer(good[:, :1])
    with pytest.raises(TypeError, match="floating images.*uint8"):
        trainer(torch.zeros(4, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[-1, 1\].*\[0, 255\]"):
        trainer(torch.rand(4, 3, 16, 16) * 255)
    with pytest.raises(ValueError, match="NaN"):
        trainer(torch.where(good > 0.9, float("nan"), good))
    with pytest.raises(ValueError, match="empty"):
        trainer([])
    with pytest.warns(RuntimeWarning, match=r"images in \[0, 1\]\?"):
        trainer(torch.rand(4, 3, 16, 16))


def test_a_target_layer_that_runs_twice_in_a_forward_is_refused(tmp_path):
    # A module G calls twice has two outputs: the Langevin chain (stopping at the first) and L_real (reading the
    # last) would use different f without a word.
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(16, 8 * 4 * 4)
            self.shared = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.to_rgb = torch.nn.Conv2d(8, 3, 1)

        def forward(self, z):
            x = self.fc(z).view(-1, 8, 4, 4)
            return torch.tanh(self.to_rgb(self.shared(torch.relu(self.shared(x)))))

    torch.manual_seed(0)
    _, D = build("dcgan", 16, z_dim=16, width=8)
    with pytest.raises(ValueError, match="layer 'shared' ran 2 times in one forward of G"):
        Trainer(Twice(), D, "shared", torch.rand(4, 3, 4, 4) * 2 - 1, TrainConfig(z_dim=16, n_groups=2, device="cpu"),
                out_dir=str(tmp_path))


def test_random_mirror_flips_about_half_the_images_the_same_way_for_a_seed():
    from interpgan_ext.trainer import random_mirror

    x = torch.linspace(-1, 1, 8).expand(400, 3, 8, 8)  # left to right: -1 ... 1
    y = random_mirror(x, torch.Generator().manual_seed(0))
    flipped = y[:, 0, 0, 0] == 1
    assert 150 < flipped.sum() < 250  # binomial(400, 1/2): 4.9 sd either side
    assert torch.equal(y[flipped], x[flipped].flip(-1)) and torch.equal(y[~flipped], x[~flipped])
    assert torch.equal(y, random_mirror(x, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("mirror", [False, True])
def test_mirror_flips_the_real_images_that_d_sees(tmp_path, mirror):
    class LeftDark(torch.utils.data.Dataset):  # every image: -1 on the left half, +1 on the right
        def __len__(self):
            return 16

        def __getitem__(self, i):
            return torch.cat([-torch.ones(3, 16, 8), torch.ones(3, 16, 8)], dim=2)

    torch.manual_seed(0)
    G, D = build("dcgan", 16, z_dim=16, width=8)
    cfg = TrainConfig(steps=3, batch_size=8, z_dim=16, n_groups=3, gmm_every=5, gmm_images=8, langevin_steps=1,
                      device="cpu", mirror=mirror)
    tr = Trainer(G, D, G.default_layer, LeftDark(), cfg, out_dir=str(tmp_path))
    seen = []
    D.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    tr.fit(progress=False)
    # D's step sees the real and fake images in one batch, reals first; G's step, the fakes alone
    real = torch.cat([x[:8] for x in seen if len(x) == 16])
    assert len(real) == 3 * 8 and torch.all(real.abs() == 1)
    n_flipped = int((real[:, 0, 0, 0] == 1).sum())
    assert (n_flipped > 0) if mirror else (n_flipped == 0)

    with pytest.raises(ValueError, match="gmm_loss"):
        TrainConfig(gmm_loss="posteriors")


def test_min_group_size_holds_at_every_refit_and_the_sizes_are_logged(tmp_path):
    # the layer has 16 filters; plain EM splits them 4, 5, 3, 4 and then 5, 3, 4, 4 here
    tr = make_trainer(tmp_path, steps=10, n_groups=4, gmm_min_group_size=4)
    tr.fit(progress=False)
    rows = read_log(tmp_path)
    assert [r["group_sizes"] for r in rows] == [[4, 4, 4, 4]] * 2
    assert torch.bincount(tr.q, minlength=4).tolist() == [4, 4, 4, 4]
    resumed = make_trainer(tmp_path, steps=12, n_groups=4, gmm_min_group_size=4)
    resumed.load_checkpoint()
    assert resumed.group_sizes == rows[-1]["group_sizes"]  # the sizes are logged after a resume, before a refit
    with pytest.raises(ValueError, match="needs 20 filters; layer .* has 16"):
        make_trainer(tmp_path / "big", n_groups=4, gmm_min_group_size=5)
    with pytest.raises(ValueError, match="gmm_min_group_size"):
        TrainConfig(gmm_min_group_size=-1)


def test_a_step_reads_its_losses_to_the_host_once(tmp_path, monkeypatch):
    # Each read of a GPU value (.item(), .tolist()) waits for the GPU to finish what the host queued, so a step reads
    # its losses once, together, at its end. (A refit step, every gmm_every, reads more; this step refits nothing.)
    # Counted: reads by the package's own code (Adam reads its step counters, CPU tensors even on a GPU).
    import traceback

    tr = make_trainer(tmp_path, gmm_every=100)
    tr.train_step()  # the first step fits the partition
    tr.step += 1
    reads = []

    def counting(name, original):
        def read(self, *args):
            caller = traceback.extract_stack(limit=2)[0]
            if f"{os.sep}interpgan_ext{os.sep}" in caller.filename:
                reads.append(f"{name} at {os.path.basename(caller.filename)}:{caller.lineno}")
            return original(self, *args)
        return read

    for name in ("item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    logs = tr.train_step()
    monkeypatch.undo()
    assert len(reads) == 1 and reads[0].startswith("tolist at trainer.py"), reads
    losses = ("loss_D", "L_cd", "L_interp", "L_gmm", "L_real", "energy", "loss_G", "loss_G_gan")
    assert all(type(logs[k]) is float and math.isfinite(logs[k]) for k in losses)
    assert logs["energy"] == -logs["L_real"]
    assert set(logs["time"]) == {"D", "Langevin", "W", "G"} and all(s > 0 for s in logs["time"].values())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_a_cuda_step_waits_for_the_gpu_only_for_its_inputs_and_its_losses(tmp_path):
    # The parts are timed with CUDA events, not synchronisations. What still waits: copying z and the real images
    # to the GPU (from pageable memory), and reading the losses back, once.
    tr = make_trainer(tmp_path, gmm_every=100, device="cuda")
    tr.train_step()
    tr.step += 1
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            logs = tr.train_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= 3, syncs
    assert set(logs["time"]) == {"D", "Langevin", "W", "G"} and all(s > 0 for s in logs["time"].values())


def test_divergence_stops_with_clear_message(tmp_path):
    tr = make_trainer(tmp_path, steps=3)
    with torch.no_grad():
        next(tr.D.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="non-finite"):
        tr.fit(progress=False)


@pytest.mark.parametrize("bad, says", [
    (["--gmm-loss", "posteriors"], "gmm_loss must be 'likelihood' or 'posterior'"),
    (["--data-on-device", "always"], "data_on_device must be one of auto, on, off"),
    (["--langevin-graph", "yes"], "langevin_graph must be 'off' or 'on', got 'yes'"),
    (["--data", "/no/such/folder"], "no such folder: /no/such/folder"),
    (["--arch", "vgg"], "unknown architecture 'vgg'"),
    (["--layer", "blocks.9"], "no layer named 'blocks.9'"),
    (["--size", "20"], "must be 16, 32, 64 or 128, got 20"),
    (["--n-groups", "99"], "n_groups=99 exceeds the 16 filters"),
    (["--device", "gpu"], "unknown device 'gpu'"),
    (["--device", "mps"], "device 'mps' is not supported"),
])
def test_cli_train_says_what_is_wrong_with_its_arguments_without_a_traceback(tmp_path, bad, says):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        cli_main(["train", "--size", "16", "--width", "8", "--n-images", "16", "--no-progress", "--out", str(out), *bad])
    assert isinstance(info.value.code, str) and info.value.code.startswith("interpgan train: ") and says in info.value.code
    assert not (out / "checkpoint.pt").exists()


def test_a_device_that_cannot_be_used_is_named_with_the_reason():
    from interpgan_ext.runs import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    for other in ("mps", "xpu:0"):  # torch knows them; the library is not written for them (a traceback from torch)
        with pytest.raises(ValueError, match=f"device '{other}' is not supported: interpgan_ext runs on 'cpu' and 'cuda'"):
            resolve_device(other)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="GPUs"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(ValueError, match=f"'cuda' asked for, but no CUDA GPU is usable here .*{re.escape(torch.__version__)}"):
            resolve_device("cuda")


def test_cli_train_and_resume(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ["train", "--size", "16", "--width", "8", "--steps", "3", "--out", out, "--batch-size", "4",
            "--n-groups", "2", "--n-images", "32", "--gmm-every", "2", "--langevin-steps", "1", "--no-progress",
            "--device", "cpu", "--gmm-relative-reg", "0.25", "--gmm-loss", "posterior", "--gmm-min-group-size", "2"]
    cli_main(args)
    assert os.path.exists(os.path.join(out, "checkpoint.pt"))
    with open(os.path.join(out, "config.json")) as fh:
        config = json.load(fh)["config"]
    assert config["gmm_relative_reg"] == 0.25 and config["gmm_loss"] == "posterior"
    assert config["gmm_min_group_size"] == 2
    with open(os.path.join(out, "log.jsonl")) as fh:
        logged = [json.loads(line) for line in fh]
    gmm = [r["L_gmm"] for r in logged if "L_gmm" in r]
    assert gmm and all(math.isfinite(v) and v >= 0 for v in gmm)  # -log of a probability
    with pytest.raises(SystemExit):
        cli_main(args)  # refuses to overwrite a run
    cli_main(["train", "--out", out, "--resume", "--steps", "5", "--no-progress"])
    printed = capsys.readouterr().out
    assert "resuming" in printed
    sizes = json.loads(re.search(r"filters per group: (\[[0-9, ]+\])", printed).group(1))
    assert len(sizes) == 2 and min(sizes) >= 2  # --gmm-min-group-size 2
    assert torch.load(os.path.join(out, "checkpoint.pt"), weights_only=False)["step"] == 5


def test_cli_resume_keeps_the_runs_layer_and_images_and_equals_the_uninterrupted_run(tmp_path, capsys):
    # a resumed run went back to the default target layer and to 20000 SynthFaces images, silently
    setup = ["--size", "16", "--width", "8", "--batch-size", "4", "--n-groups", "2", "--gmm-every", "2",
             "--langevin-steps", "1", "--no-progress", "--device", "cpu", "--n-images", "32", "--layer", "blocks.0.1"]
    whole, part = str(tmp_path / "whole"), str(tmp_path / "part")
    cli_main(["train", *setup, "--steps", "6", "--out", whole])
    cli_main(["train", *setup, "--steps", "3", "--out", part])
    capsys.readouterr()
    cli_main(["train", "--out", part, "--resume", "--steps", "6", "--no-progress", "--device", "cpu"])
    assert "on synth-faces (32 images), target layer 'blocks.0.1'" in capsys.readouterr().out
    a, b = (torch.load(os.path.join(p, "checkpoint.pt"), weights_only=False) for p in (whole, part))
    assert a["step"] == b["step"] == 6
    assert all(torch.equal(a["G"][k], b["G"][k]) for k in a["G"]) and torch.equal(a["energy"]["W"], b["energy"]["W"])
    with open(os.path.join(part, "config.json")) as fh:
        saved = json.load(fh)
    assert saved["layer"] == "blocks.0.1" and saved["n_images"] == 32
    # what would change the run is refused, each option named with the run's value; the same values are not
    for changes, says in ((["--layer", "blocks.0"], "--layer blocks.0 (the run's: blocks.0.1)"),
                          (["--n-images", "64", "--lr-g", "0.001"], "--lr-g 0.001 (the run's: 0.0002); --n-images 64"),
                          (["--baseline"], "--lambda0 0.0 (the run's: 1.0)"), (["--size", "32"], "--size 32 (the run's: 16)")):
        with pytest.raises(SystemExit, match=re.escape(says)):
            cli_main(["train", "--out", part, "--resume", "--steps", "7", "--no-progress", *changes])
    cli_main(["train", "--out", part, "--resume", "--steps", "7", "--no-progress", "--size", "16", "--n-images", "32",
              "--data-on-device", "off", "--langevin-graph", "on", "--ckpt-minutes", "5"])
    assert "--langevin-graph on: no effect on cpu (CUDA graphs need a GPU)" in capsys.readouterr().out
    with open(os.path.join(part, "config.json")) as fh:  # where and how it runs, and how often it is saved, may change
        config = json.load(fh)["config"]
    assert config["data_on_device"] == "off" and config["langevin_graph"] == "on" and config["ckpt_minutes"] == 5


def test_cli_n_images_takes_the_first_images_of_a_folder(tmp_path, capsys, image_cache):
    from PIL import Image

    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(6):
        Image.new("RGB", (20, 20), (40 * i, 90, 200)).save(folder / f"{i}.png")
    cli_main(["train", "--data", str(folder), "--n-images", "4", "--size", "16", "--width", "8", "--batch-size", "2",
              "--n-groups", "2", "--langevin-steps", "1", "--device", "cpu", "--steps", "1", "--no-progress",
              "--out", str(tmp_path / "run")])
    assert f"data: 4 images of {folder}" in capsys.readouterr().out


def test_cli_trains_on_a_folder_and_the_resume_reads_its_images_from_the_cache(tmp_path, capsys, image_cache):
    from PIL import Image

    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(8):
        Image.new("RGB", (24, 20), (30 * i, 100, 255 - 30 * i)).save(folder / f"{i}.png")
    out = str(tmp_path / "run")
    cli_main(["train", "--data", str(folder), "--size", "16", "--width", "8", "--out", out, "--batch-size", "4",
              "--n-groups", "2", "--gmm-every", "2", "--langevin-steps", "1", "--device", "cpu", "--steps", "2",
              "--no-progress"])
    assert f"data: 8 images of {folder}, decoded and cached ({image_cache}" in capsys.readouterr().out
    cli_main(["train", "--out", out, "--resume", "--steps", "3", "--no-progress"])
    assert f"data: 8 images of {folder}, read from the cache ({image_cache}" in capsys.readouterr().out


def test_cli_version_names_the_package_torch_and_the_ops(capsys):
    import interpgan_ext

    with pytest.raises(SystemExit) as info:
        cli_main(["--version"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"interpgan_ext {interpgan_ext.__version__}" in out and torch.__version__ in out
    assert interpgan_ext.info()["backend_cpu"] in out


def _package_root():
    """PYTHONPATH for a worker process: the interpgan_ext that this test imported, installed or built in place."""
    import interpgan_ext

    root = os.path.dirname(os.path.dirname(os.path.abspath(interpgan_ext.__file__)))
    return os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)


def torchrun_two_ranks(*argv):
    """`torchrun --nproc_per_node 2 ARGV...` on CPU; asserts that both ranks exited 0."""
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *argv],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=_package_root()))
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def run_ddp_worker(out, *args):
    torchrun_two_ranks(os.path.join(os.path.dirname(__file__), "ddp_worker.py"), str(out), *args)
    return [torch.load(out / f"rank{i}.pt", weights_only=False) for i in (0, 1)]


def test_ddp_two_gloo_processes(tmp_path):
    """torchrun, 2 CPU processes: G, W and q stay identical across ranks; only rank 0 writes the run."""
    a, b = run_ddp_worker(tmp_path)
    assert torch.equal(a["G"], b["G"]) and torch.equal(a["W"], b["W"]) and torch.equal(a["q"], b["q"])
    assert os.path.exists(tmp_path / "checkpoint.pt") and os.path.exists(tmp_path / "log.jsonl")
    rows = read_log(tmp_path)
    assert rows[-1]["step"] == 6 and len(rows) == 3  # rank 0 alone logs
    assert a["stopped_at"] is None and b["stopped_at"] is None


def test_ddp_sigterm_on_one_rank_stops_both_after_the_same_step(tmp_path):
    a, b = run_ddp_worker(tmp_path, "sigterm-rank1")  # a hang here would time out instead
    assert a["stopped_at"] == b["stopped_at"] == 3
    assert torch.equal(a["G"], b["G"])
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 3  # written by rank 0


def test_cli_train_under_torchrun_rank0_speaks_and_both_ranks_exit_cleanly(tmp_path):
    out = tmp_path / "run"
    r = torchrun_two_ranks("-m", "interpgan_ext", "train", "--size", "16", "--width", "8", "--steps", "4",
                           "--batch-size", "4", "--n-groups", "2", "--n-images", "32", "--gmm-every", "2",
                           "--langevin-steps", "1", "--no-progress", "--device", "cpu", "--out", str(out))
    assert r.stdout.count("training interpretable dcgan") == 1 and r.stdout.count("done: ") == 1, r.stdout
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 4
    assert [row["step"] for row in read_log(out)] == [4]  # rank 0 alone logs


def interrupt_at(trainer, step, times=1, sig=signal.SIGINT):
    """Sends `sig` to this process `times` times in the middle of step `step`, as a Ctrl-C during training would."""
    real_step = trainer.train_step

    def train_step():
        if trainer.step == step:
            for _ in range(times):
                os.kill(os.getpid(), sig)
        return real_step()

    trainer.train_step = train_step


def test_ctrl_c_finishes_the_step_saves_it_and_resume_equals_uninterrupted(tmp_path):
    handler_before = signal.getsignal(signal.SIGINT)
    full = make_trainer(tmp_path / "full")
    full.fit(progress=False)
    cut = make_trainer(tmp_path / "cut")
    interrupt_at(cut, 7)
    with pytest.raises(TrainingInterrupted, match="after step 8") as info:
        cut.fit(progress=False)
    assert info.value.step == 8 and info.value.signal_name == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is handler_before  # fit put the handlers back
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["step"] == 8
    resumed = make_trainer(tmp_path / "cut")
    resumed.load_checkpoint()
    resumed.fit(progress=False)
    for pa, pb in zip(full.G.parameters(), resumed.G.parameters()):
        assert torch.allclose(pa, pb, rtol=1e-4, atol=1e-6)
    assert torch.allclose(full.energy.W, resumed.energy.W, rtol=1e-4, atol=1e-6) and torch.equal(full.q, resumed.q)
    assert [r["step"] for r in read_log(tmp_path / "cut")] == [5, 10, 15, 20]


def test_second_ctrl_c_stops_at_once_without_saving(tmp_path):
    tr = make_trainer(tmp_path)  # the first periodic checkpoint would be at step 10
    interrupt_at(tr, 3, times=2)
    with pytest.raises(KeyboardInterrupt) as info:
        tr.fit(progress=False)
    assert type(info.value) is KeyboardInterrupt  # not TrainingInterrupted: nothing was saved
    assert tr.step == 3 and not os.path.exists(tmp_path / "checkpoint.pt")


def test_cli_sigterm_saves_exits_143_and_the_run_resumes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "interpgan_ext", "train", "--size", "16", "--width", "8", "--steps", "100000",
           "--out", str(out), "--batch-size", "4", "--n-groups", "2", "--n-images", "32", "--gmm-every", "50",
           "--langevin-steps", "1", "--no-progress", "--device", "cpu"]
    root = os.path.join(os.path.dirname(__file__), "..")
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log, deadline = out / "log.jsonl", time.time() + 240
    while not (log.exists() and log.stat().st_size > 0):  # the first log row: step 10
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "no log row within 240 s"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 143, err[-3000:]
    m = re.search(r"interrupted by SIGTERM after step (\d+); checkpoint saved: (\S+)\. Continue with: "
                  r"interpgan train --out \S+ --resume", err)
    assert m, err[-3000:]
    step = int(m.group(1))
    assert step >= 10 and torch.load(out / "checkpoint.pt", weights_only=False)["step"] == step
    cli_main(["train", "--out", str(out), "--resume", "--steps", str(step + 2), "--no-progress"])
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == step + 2


@pytest.mark.parametrize("momentum", [0.1, None])  # None: a cumulative average over num_batches_tracked
def test_frozen_batchnorm_forwards_leave_every_statistic_as_it_was(momentum):
    from interpgan_ext.trainer import frozen_batchnorm_stats

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4, momentum=momentum),
                                torch.nn.BatchNorm2d(4, track_running_stats=False))
    model(torch.randn(2, 3, 8, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 8, 8)
    with frozen_batchnorm_stats(model):
        frozen = model(x)
        model(torch.randn(2, 3, 8, 8))
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    assert int(after["1.num_batches_tracked"]) == 1 and model[1].momentum == momentum
    torch.testing.assert_close(frozen, model(x))  # still train mode: batch statistics normalise
    assert int(model.state_dict()["1.num_batches_tracked"]) == 2  # outside, forwards count again


def test_ema_warms_up_towards_g(tmp_path):
    tr = make_trainer(tmp_path, steps=20, lambda0=0.0)
    init = [p.detach().clone() for p in tr.G.parameters()]
    tr.fit(progress=False)
    dist = lambda a, b: sum((x - y).pow(2).sum() for x, y in zip(a, b)).sqrt()  # noqa: E731
    G, G_ema = list(tr.G.parameters()), list(tr.G_ema.parameters())
    # with a flat 0.999 decay G_ema would still be ~98% the initial weights after 20 steps
    assert dist(G_ema, G) < 0.5 * dist(init, G)


def test_collapse_warning_when_samples_lose_diversity(tmp_path):
    from interpgan_ext.trainer import diversity

    tr = make_trainer(tmp_path, steps=1)
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    assert diversity(x[:1].expand(8, -1, -1, -1)) == 0 and diversity(x) > 0.3
    assert tr.check_diversity(x) > 0.3  # as varied as the data: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tr.check_diversity(x[:1].expand(8, -1, -1, -1))  # step 0: samples are alike early on, no alarm
    tr.step = 600
    with pytest.warns(RuntimeWarning, match="collapsing"):
        tr.check_diversity(x[:1].expand(8, -1, -1, -1))
    tr.step = 0
    tr.fit(progress=False)  # logs the samples' diversity with the step that wrote them
    assert "sample_diversity" in read_log(tmp_path)[-1]


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    from interpgan_ext._atomic import atomic_path, atomic_save, atomic_write_json

    path = str(tmp_path / "checkpoint.pt")
    atomic_save({"step": 1}, path)
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(b"half a checkpo")
            raise RuntimeError("disk full")
    assert torch.load(path)["step"] == 1 and os.listdir(tmp_path) == ["checkpoint.pt"]
    atomic_write_json({"a": 1}, str(tmp_path / "config.json"))
    with open(tmp_path / "config.json") as fh:
        assert json.load(fh) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "config.json"]


@pytest.mark.parametrize("interpretable", [True, False])
def test_a_step_runs_g_to_its_images_once_and_counts_the_batch_once(tmp_path, interpretable):
    # One forward of G serves the D step and the G step (G's weights do not change between them), and in the
    # interpretable step it also gives the W step's positives and the Langevin chain's first gradient. Forwards that stop at the target layer (the
    # Langevin chain, the negatives, L_gmm's images) never reach to_rgb, and count no batch.
    tr = make_trainer(tmp_path, lambda0=1.0 if interpretable else 0.0)
    tr.train_step()  # the first step also fits the partition
    tr.step += 1
    calls = []
    hook = tr.G.to_rgb.register_forward_hook(lambda *args: calls.append(1))
    layer_calls = []
    layer_hook = tr.extractor.layer.register_forward_hook(lambda *args: layer_calls.append(1))
    counted = int(tr.G.stem[2].num_batches_tracked)
    try:
        tr.train_step()
    finally:
        hook.remove()
        layer_hook.remove()
    assert len(calls) == 1
    assert int(tr.G.stem[2].num_batches_tracked) == counted + 1
    # through the target layer: the full forward, then (interpretable) the Langevin chain's forwards after its first
    # step (whose gradient comes from the full forward), the negatives and L_gmm's images; none for the positives
    assert len(layer_calls) == (1 + (tr.cfg.langevin_steps - 1) + 2 if interpretable else 1)


def test_a_target_layer_that_g_overwrites_in_place_is_copied(tmp_path):
    # DCGAN's blocks end in ReLU(inplace=True): as the target layer, a block's BatchNorm is overwritten by it
    torch.manual_seed(0)
    G, D = build("dcgan", 16, z_dim=16, width=8)
    config = TrainConfig(steps=2, batch_size=8, z_dim=16, n_groups=3, gmm_images=8, langevin_steps=1, device="cpu")
    tr = Trainer(G, D, "blocks.0.1", SynthFaces(16, n=64), config, out_dir=str(tmp_path))
    assert tr.extractor.copy_output is True
    z = torch.randn(4, 16)
    _, f = tr.extractor.images_and_features(z)
    assert (f < 0).any() and torch.equal(f, tr.extractor.features(z))
    assert Trainer(*build("dcgan", 16, z_dim=16, width=8), "blocks.0", SynthFaces(16, n=64), config,
                   out_dir=str(tmp_path / "plain")).extractor.copy_output is False


def test_a_run_with_amp_trains(tmp_path, device):
    # bf16 autocast on CUDA (on the CPU amp is off): G's forward runs in bf16, the W step's positives are then
    # computed again in float32, as its negatives are
    tr = make_trainer(tmp_path, steps=3, device=device, amp=True)
    assert tr._amp == (device == "cuda")
    forward_dtypes = []
    hook = tr.G.to_rgb.register_forward_hook(lambda module, inputs, output: forward_dtypes.append(output.dtype))
    logs = tr.fit(progress=False)
    hook.remove()
    assert all(math.isfinite(logs[k]) for k in ("loss_D", "loss_G", "L_cd", "L_real", "L_gmm"))
    assert set(forward_dtypes) == {torch.bfloat16 if device == "cuda" else torch.float32}


def test_g_and_d_train_in_train_mode_even_when_given_in_eval_mode(tmp_path):
    torch.manual_seed(0)
    G, D = build("dcgan", 16, z_dim=16, width=8)
    G.eval(), D.eval()  # as after loading pretrained weights for inference
    config = TrainConfig(steps=1, batch_size=8, z_dim=16, n_groups=3, gmm_images=8, langevin_steps=1, device="cpu")
    tr = Trainer(G, D, G.default_layer, SynthFaces(16, n=64), config, out_dir=str(tmp_path))
    assert tr.G.training and tr.D.training and not tr.G_ema.training
    counted = int(tr.G.stem[2].num_batches_tracked)
    tr.fit(progress=False)
    assert int(tr.G.stem[2].num_batches_tracked) == counted + 1  # batch statistics, counted once a step
