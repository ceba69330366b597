"""Interoperability with other formats: diffusers, the authors' checkpoints."""
