"""Datasets (uint8 images from local files) and the resumable training-batch pipeline."""

from .pipeline import BatchStream, EpochOrder, micro_batch_slice, preprocess
from .sources import IMAGE_SUFFIXES, Files, ImageSource, InMemory, build_source, cifar10, detect_values, digits

__all__ = ["BatchStream", "EpochOrder", "micro_batch_slice", "preprocess", "IMAGE_SUFFIXES", "Files",
           "ImageSource", "InMemory", "build_source", "cifar10", "detect_values", "digits"]
