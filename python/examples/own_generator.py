"""Make a generator of your own interpretable, then swap one concept at a time between two of its images.

    python python/examples/own_generator.py [--images PATH] [--steps 600] [--out runs/own-generator]

`MyGenerator` stands for yours: any nn.Module that maps z [B, z_dim] to images [B, 3, S, S] in [-1, 1]. The library
needs only the module path of the layer whose filters should be grouped, here "body.1" (its output is [B, 32, 16, 16]).
Nothing else about G is assumed: the trainer captures that layer with a hook. D is the library's DCGAN discriminator,
but any classifier of images would do.

Data: a folder of JPG/PNG images (--images, e.g. CelebA's img_align_celeba), or the embedded SynthFaces.
Output in --out: the training run (samples/, log.jsonl, checkpoint.pt) and swap_group<c>.png for every group c:
each row is a pair A, B, A with B's group c, and where the image changed. The default 600 steps take ~7 minutes on
2 CPU cores: enough for face-like images, far from a finished GAN (`interpgan train --steps` for longer runs).
"""
import argparse
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from interpgan_ext.data import ImageFolder, SynthFaces  # noqa: E402
from interpgan_ext.edit import swap_concept  # noqa: E402
from interpgan_ext.models import DCGANDiscriminator  # noqa: E402
from interpgan_ext.runs import load_run  # noqa: E402
from interpgan_ext.trainer import TrainConfig, Trainer  # noqa: E402
from interpgan_ext.viz import swap_figure  # noqa: E402


def up(c_in, c_out):
    """Twice the resolution: upsample, conv, batch norm, ReLU."""
    return nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
                         nn.ReLU())


class MyGenerator(nn.Module):
    """z -> 4x4 -> 8x8 -> 16x16 ("body.1", the target) -> 32x32 -> RGB."""

    def __init__(self, z_dim=64, width=32):
        super().__init__()
        self.width = width
        self.stem = nn.Linear(z_dim, 4 * width * 4 * 4)
        self.body = nn.Sequential(up(4 * width, 2 * width), up(2 * width, width), up(width, width // 2))
        self.to_rgb = nn.Conv2d(width // 2, 3, 3, padding=1)

    def forward(self, z):
        x = self.stem(z).view(len(z), 4 * self.width, 4, 4)
        return torch.tanh(self.to_rgb(self.body(x)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=None, help="a folder of images (default: the embedded SynthFaces)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--groups", type=int, default=6, help="C, the number of filter groups")
    ap.add_argument("--pairs", type=int, default=4, help="image pairs per swap figure")
    ap.add_argument("--out", default="runs/own-generator")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()

    z_dim, size, layer = 64, 32, "body.1"
    if args.images:
        data = ImageFolder(args.images, size=size, progress=not args.no_progress)
    else:
        data = SynthFaces(size=size, n=5000, seed=0)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, z_dim=z_dim, n_groups=args.groups,
                         gmm_every=min(100, args.steps), image_every=max(1, args.steps // 4),
                         ckpt_every=max(1, args.steps // 4))
    trainer = Trainer(MyGenerator(z_dim), DCGANDiscriminator(size=size, width=32), layer, data, config,
                      out_dir=args.out)
    if os.path.exists(trainer.checkpoint_path):  # an earlier, interrupted run of this example continues
        trainer.load_checkpoint()
        print(f"resuming {args.out} at step {trainer.step}")
    trainer.fit(progress=not args.no_progress)

    # Later, or in another program: the run holds G's weights (its moving average), W and the partition q.
    run = load_run(args.out, G=MyGenerator(z_dim))
    sizes = torch.bincount(run.q, minlength=args.groups).tolist()
    print(f"filter groups of {layer!r} (filters per group): {sizes}")
    z = run.latents(2 * args.pairs, seed=1)
    for c in range(args.groups):
        result = swap_concept(run.G, run.layer, z[: args.pairs], z[args.pairs:], groups=[c], q=run.q)
        path = swap_figure(result, os.path.join(args.out, f"swap_group{c}.png"))
        changed = (result.edited_a - result.a).abs().mean().item()
        print(f"group {c}: {sizes[c]:3d} filters, mean |change| {changed:.3f} -> {path}")


if __name__ == "__main__":
    main()
