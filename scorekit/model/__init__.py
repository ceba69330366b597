"""The model side: a network plus its noise process (``denoiser``), EDM's and the consistency models'
preconditioning (``precond``), the conditional and guided wrappers (``guidance``), building a model from a
configuration (``factory``), and the sampling fast path (``fastpath``). A denoiser knows nothing of its
wrappers: whoever wants a guided model builds it with :func:`conditional`."""

from .denoiser import Denoiser, Output, Variance
from .factory import build, build_denoiser, build_net, build_process
from .fastpath import fast_sampling_denoiser
from .guidance import conditional

__all__ = ["Denoiser", "Output", "Variance", "build", "build_denoiser", "build_net", "build_process",
           "conditional", "fast_sampling_denoiser"]
