"""Interpretation methods for any generator (issue 5), one module per family. Each works on the library's models,
on a run (`interpgan_ext.runs.load_run`) and on any `nn.Module` mapping z [B, d] to images, with layers named by
module path.

- `directions`: SeFa (closed form), GANSpace (PCA, regressed to the latent), InterFaceGAN boundaries (linear SVM,
  conditional projection, re-scoring), edits along a direction;
- `causal`: GAN-Dissection ablation / insertion, the average causal effect of units on a concept, artifact units;
- `latent_shift`: segmentation masks from a background direction ("Big GANs are watching");
- `inversion`: optimisation-based and encoder-based inversion with an in-domain regulariser.
"""
from .causal import ablate_units, artifact_units, average_causal_effect, insert_units, rank_units_by_ace
from .directions import (conditional_boundary, edit_along, ganspace, linear_weights, rescoring, sefa, svm_boundary)
from .inversion import invert, train_encoder
from .latent_shift import latent_shift_masks, mask_iou

__all__ = ["ablate_units", "insert_units", "average_causal_effect", "rank_units_by_ace", "artifact_units",
           "sefa", "linear_weights", "ganspace", "svm_boundary", "conditional_boundary", "rescoring", "edit_along",
           "invert", "train_encoder", "latent_shift_masks", "mask_iou"]
