"""Lossless compression with a diffusion model: bits-back ANS over the model's Markov chain (``coder``), the file
format (``fileformat``) and the chain the codec walks, chosen for the run (``chains``). Only the CLI imports it."""

from .chains import CHAIN_LEVELS, chosen_chain, coding_chain, search_chain
from .coder import Chain, check_codable, compress, decoder_table, decompress
from .fileformat import MAGIC, MAGIC_V1, CodecError, read_header, weights_sha256

__all__ = ["CHAIN_LEVELS", "Chain", "CodecError", "MAGIC", "MAGIC_V1", "check_codable", "chosen_chain",
           "coding_chain", "compress", "decoder_table", "decompress", "read_header", "search_chain", "weights_sha256"]
