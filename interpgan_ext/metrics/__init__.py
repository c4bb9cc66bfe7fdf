"""Measuring interpretability and realism (SPEC §7): part segmenter, dissection IoU, locality, FID/KID."""
from .dissection import Dissection, RunningQuantile, group_activations, information_quality_ratio, summarize
from .evaluate import evaluate_run
from .locality import locality_ratio, swap_locality
from .realism import (DomainExtractor, FeatureStats, InceptionExtractor, default_extractor, fid_kid,
                      frechet_distance, kernel_inception_distance)
from .segmenter import MIN_MIOU, PartSegmenter, evaluate_segmenter, load_or_train_segmenter, train_segmenter

__all__ = ["Dissection", "RunningQuantile", "group_activations", "information_quality_ratio", "summarize",
           "evaluate_run", "locality_ratio", "swap_locality", "DomainExtractor", "FeatureStats",
           "InceptionExtractor", "default_extractor", "fid_kid", "frechet_distance", "kernel_inception_distance",
           "MIN_MIOU", "PartSegmenter", "evaluate_segmenter", "load_or_train_segmenter", "train_segmenter"]
