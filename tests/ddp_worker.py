"""Run by test_trainer.py under torchrun with 2 gloo processes: trains a few steps, saves what each rank holds."""
import sys

import torch
import torch.distributed as dist

from interpgan_ext.data import SynthFaces
from interpgan_ext.models import build
from interpgan_ext.trainer import TrainConfig, Trainer

out = sys.argv[1]
dist.init_process_group("gloo")
torch.manual_seed(dist.get_rank())  # different initial weights per rank: DDP must broadcast rank 0's
G, D = build("dcgan", 16, z_dim=16, width=8)
cfg = TrainConfig(steps=6, batch_size=4, z_dim=16, n_groups=3, gmm_every=3, gmm_images=8, langevin_steps=1,
                  log_every=2, image_every=6, ckpt_every=6, device="cpu")
tr = Trainer(G, D, G.default_layer, SynthFaces(16, n=32), cfg, out_dir=out)
tr.fit(progress=False)
torch.save({"G": torch.cat([p.detach().flatten() for p in tr.G.parameters()]), "W": tr.energy.W.detach().clone(),
            "q": tr.q, "descriptor_rows": tr.partition.means.shape}, f"{out}/rank{dist.get_rank()}.pt")
dist.destroy_process_group()
