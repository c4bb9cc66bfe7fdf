"""Run by test_trainer.py under torchrun with 2 gloo processes: trains a few steps, saves what each rank holds.

With a second argument "sigterm-rank1", rank 1 alone gets SIGTERM in the middle of step 2: both ranks must stop
after that same step (rank 0 saving the checkpoint), instead of one waiting for the other in a collective."""
import os
import signal
import sys

import torch
import torch.distributed as dist

from interpgan_ext.data import SynthFaces
from interpgan_ext.models import build
from interpgan_ext.trainer import TrainConfig, Trainer, TrainingInterrupted, end_distributed

out = sys.argv[1]
interrupt = len(sys.argv) > 2 and sys.argv[2] == "sigterm-rank1"
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
G, D = build("dcgan", 16, z_dim=16, width=8)
cfg = TrainConfig(steps=6, batch_size=4, z_dim=16, n_groups=3, gmm_every=3, gmm_images=8, langevin_steps=1,
                  log_every=2, image_every=6, ckpt_every=6, device="cpu")
tr = Trainer(G, D, G.default_layer, SynthFaces(16, n=32), cfg, out_dir=out)
if interrupt and rank == 1:
    real_step = tr.train_step

    def train_step():
        if tr.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step()

    tr.train_step = train_step
stopped_at = None
try:
    tr.fit(progress=False)
except TrainingInterrupted as stop:
    stopped_at = stop.step
torch.save({"G": torch.cat([p.detach().flatten() for p in tr.G.parameters()]), "W": tr.energy.W.detach().clone(),
            "q": tr.q, "descriptor_rows": tr.partition.means.shape, "stopped_at": stopped_at},
           f"{out}/rank{rank}.pt")
del tr  # its DDP wrappers hold the process group
end_distributed()
