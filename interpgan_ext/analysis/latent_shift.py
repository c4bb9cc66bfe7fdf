"""Segmentation from a latent shift ("Big GANs are watching you", Voynov et al. 2021): moving z along a direction
h that changes only the background makes background pixels brighter, so M = [G(z + h) > G(z)] segments it."""
import torch

from ..edit import deterministic


@torch.no_grad()
def latent_shift_masks(G, z: torch.Tensor, h: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """[B, S, S] bool: pixels whose mean intensity rises by more than `margin` when z moves to z + h."""
    with deterministic(G):
        x0, x1 = G(z), G(z + h.to(z.device, z.dtype))
    return (x1 - x0).float().mean(1) > margin


def mask_iou(masks: torch.Tensor, target: torch.Tensor) -> float:
    """IoU of two boolean mask stacks, pooled over all images."""
    inter = (masks & target).sum().item()
    union = (masks | target).sum().item()
    return inter / union if union else 1.0
