"""Lossless compression with a DDPM: bits-back coding with asymmetric numeral systems over the diffusion chain
(BB-ANS, Townsend, Bird & Barber 2019; Bit-Swap's interleaving for Markov chains, Kingma, Abbeel & Ho 2019).

Encoding an image x_0 (the paper's levels 1..T are scorekit's 0..T-1):

    pop x_1 with q(x_1 | x_0), push x_0 with the discretized decoder p(x_0 | x_1) (DDPM Eq. 13);
    for t = 2..T: pop x_t with q(x_t | x_{t-1}), push x_{t-1} with the reverse model p(x_{t-1} | x_t);
    push x_T with the prior N(0, I).

Decoding runs the mirrored operations in reverse. Popping x_t gives back the bits it cost, so the net
codelength is log q(x_{1:T} | x_0) - log p(x_{0:T}) for the path drawn: a one-sample estimate of the
negative variational bound (DDPM Eq. 5), plus the one-off initial bits the first pops consume.

Each latent x_t lives on its own grid, of width delta_t = sqrt(step variance_t) / 4 (a quarter of the
standard deviation of q(x_t | x_{t-1})); the pop and the later push of the same latent use the same bins, so
the bin width cancels. The ANS coder is constriction's (maintained; Rust with Python bindings; a stack
coder with per-symbol quantized Gaussians and categoricals, as bits-back needs). It gives every symbol of
a model's alphabet at least 2^-24 of probability, so a pop that *samples* a latent could land anywhere in
the alphabet with that leaked mass: pops from
q(x_t | x_{t-1}) therefore use a window of +-5 standard deviations (41 bins, 2.4e-6 leaked per pop), while
pushes under p (whose mirrored pops at decoding only read back what was pushed) use level t's whole range,
|x_t| < sqrt(abar_t) max|x_0| + 10 sqrt(1 - abar_t) (a few hundred bins: each push leaks ~1e-4 bits).
Until x_T is pushed, an image has borrowed up to the entropy of x_T on its grid from the stack (about 7 bits
per dimension), so images are coded in chunks no larger than the bits on the stack can lend: the first
image alone on the initial bits (the one-off cost, NEED_BITS per dimension of one image), then chunks
that grow with the stack, up to MAX_CHUNK images per network batch.

Determinism: encoder and decoder must compute bit-identical probabilities. The network runs in float32 on
one thread with exactly the same batches on both sides (the chunks, recorded in the header), so its
outputs are reproduced bit for bit by the same code on the same kind of CPU; the reverse means are then
rounded to 1/256 of a bin (round half to even) and the variances come from float64 tables, so the ANS
coder (constriction, Rust, float64 model construction) sees identical numbers. Different CPU
kernels (another instruction set or library version) can change float32 results in their last bits; the
decoder then notices (the images' SHA-256 or the leftover initial bits disagree) and refuses, instead of
writing wrong images.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ScorekitError
from ..evaluation.likelihood import data_values, even_values, first_off_values, pixel_bits, pixel_max
from ..images import from_uint8, value_edges
from .chains import chain_from, coding_chain
from .fileformat import BINS_PER_STD, HASH_HEX, CodecError, _sha, pack_header, read_header, weights_sha256

WINDOW = 5 * BINS_PER_STD  # pops from q: +-5 standard deviations
RANGE_STDS = 10.0  # latents of level t are coded in |x| < sqrt(abar_t) max|x_0| + 10 sqrt(1 - abar_t)
MEAN_GRID = 256  # reverse means rounded to 1/256 of a bin
NEED_BITS = 10  # bits per dimension an image borrows from the stack at most (x_T's grid entropy + margin)
INITIAL_SEED = 20260101
MAX_CHUNK = 300
DECODER_FLOOR = 1e-9  # smallest probability of a pixel value under the decoder


def _constriction():
    try:
        import constriction
    except ImportError:
        raise ScorekitError("the codec needs the constriction package >= 0.5: pip install 'scorekit[codec]'") from None
    return constriction


@contextlib.contextmanager
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_codable(denoiser) -> None:
    """The codec codes DDPM (VP) runs: the discretized decoder and the bound are defined for that process."""
    if getattr(denoiser, "consistency", False):
        raise ScorekitError("a consistency model (model.consistency=true) has no variational bound to code with: its "
                            "network is the consistency function, not a denoiser (code with its teacher)")
    if denoiser.process.kind != "vp":
        raise ScorekitError(f"the codec codes DDPM (VP) runs; this run's process is {denoiser.process.kind!r} "
                            "(its likelihood: scorekit bpd RUN --method ode)")
    _constriction()


@dataclass
class Chain:
    """The coding distributions of one model: q(x_t | x_{t-1}) and p(x_{t-1} | x_t) in bins of each level's grid."""

    denoiser: object

    def __post_init__(self):
        d = self.denoiser
        p = d.process
        check_codable(d)
        self.T = p.num_levels
        a = p.a.cpu().double()
        self.ratio = torch.cat([a[:1], a[1:] / a[:-1]])  # x_t = ratio_t x_{t-1} + sqrt(step_variance_t) n
        self.delta = p.step_variance.cpu().double().sqrt() / BINS_PER_STD
        # x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps with |x_0| <= max|data_range|: |x_t| < range_t unless some
        # |eps| > RANGE_STDS (probability < 1e-23 per dimension; then coding fails loudly, never silently)
        abar = a * a
        self.range = abar.sqrt() * max(abs(v) for v in d.data_range) + RANGE_STDS * (1 - abar).sqrt()
        self.device = d.device
        # the data's values (data.values): the decoder's bins and the pixel symbols (an index into them); data of
        # b > 8 bits: the pixel itself is the symbol, under a quantized Gaussian over 0..2^b - 1
        v = data_values(d)
        self.bits, self.max_value = pixel_bits(d), pixel_max(d)
        self.values = v if v is not None else torch.arange(256)
        self.lut = torch.full((256,), -1, dtype=torch.long)
        self.lut[self.values] = torch.arange(len(self.values))
        c = _constriction().stream.model
        self.wide = c.QuantizedGaussian(0, self.max_value) if self.bits > 8 else None
        self.window = c.QuantizedGaussian(-WINDOW, WINDOW)
        self.full = [None] * self.T
        self._model = c.QuantizedGaussian

    def full_model(self, t: int):
        """The whole range |x| < range_t on level t's grid (pushes under p, the prior)."""
        if self.full[t] is None:
            n = math.ceil(float(self.range[t]) / float(self.delta[t]))
            self.full[t] = self._model(-n, n)
        return self.full[t]

    def q(self, t: int, prev: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """q(x_t | x_{t-1}) on level t's grid, as (centre, mean - centre, std) in bins: the symbol coded is the
        offset from the centre, within the window. ``prev``: x_0 at t = 0, else the previous level's bins."""
        x_prev = prev.double() if t == 0 else prev.double() * float(self.delta[t - 1])
        mean = (x_prev.flatten() * float(self.ratio[t]) / float(self.delta[t])).numpy()
        centre = np.round(mean)
        return centre, mean - centre, np.full(mean.shape, float(BINS_PER_STD))

    @torch.no_grad()
    def p(self, t: int, k: torch.Tensor):
        """p(x_{t-1} | x_t) at x_t = k delta_t (t >= 1), as (mean, std) in bins of level t-1's grid, the mean
        rounded to 1/256 of a bin (learned variances: the log-variance rounded to 2^-10). At t = 0: the
        decoder's table over the data's values, or for data of b > 8 bits its (mean, std) in pixel units."""
        d = self.denoiser
        x_t = (k.double() * float(self.delta[t])).float().to(self.device)
        tt = torch.full((k.shape[0],), t, dtype=torch.long, device=self.device)
        mean, log_var, _ = d.p_mean_variance(x_t, tt, clip=True)
        log_var = log_var.double().cpu()
        if d.variance.is_learned:
            log_var = torch.round(log_var * 1024) / 1024
        if t == 0 and self.wide is not None:  # b > 8 bits: the decoder's mean and std in pixel units
            lo, hi = d.data_range
            unit = (hi - lo) / self.max_value
            mean_px = torch.round((mean.double().cpu() - lo) / unit * MEAN_GRID) / MEAN_GRID
            return mean_px.flatten().numpy(), (torch.exp(0.5 * log_var) / unit).clamp_min(0.05).flatten().numpy()
        if t == 0:
            return decoder_table(torch.round(mean.double().cpu() * 2**20) / 2**20, 0.5 * log_var, d.data_range,
                                 self.values)
        unit = float(self.delta[t - 1])
        mean_bins = torch.round(mean.double().cpu() / unit * MEAN_GRID) / MEAN_GRID
        return mean_bins.flatten().numpy(), (torch.exp(0.5 * log_var) / unit).flatten().numpy()

    def prior(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(n), np.full(n, 1.0 / float(self.delta[self.T - 1]))


def decoder_table(mean: torch.Tensor, log_scale: torch.Tensor, data_range: tuple[float, float],
                  values: torch.Tensor | None = None) -> np.ndarray:
    """Probabilities of the data's pixel values (``values``, uint8; all 256 by default) under DDPM's discretized
    Gaussian decoder (Eq. 13): one bin per value reaching half-way to its neighbours (width (hi - lo) / 255 for
    8-bit data), the outermost extended to infinity; shape (pixels, len(values)), float64."""
    centres, edges = value_edges(torch.arange(256) if values is None else values, data_range)
    m, inv = mean.flatten()[:, None], torch.exp(-log_scale.flatten())[:, None]
    z_hi, z_lo = (edges[1:] - m) * inv, (edges[:-1] - m) * inv
    below = torch.special.ndtr(z_hi) - torch.special.ndtr(z_lo)
    above = torch.special.ndtr(-z_lo) - torch.special.ndtr(-z_hi)  # the same, without 1 - tiny rounding to 1
    probs = torch.where(centres > m, above, below)
    return probs.clamp_min(DECODER_FLOOR).numpy()


class _Coder:
    def __init__(self, words: np.ndarray | None = None):
        c = _constriction()
        self.ans = c.stream.stack.AnsCoder(words) if words is not None else c.stream.stack.AnsCoder()
        self.pixels = c.stream.model.Categorical(perfect=False)

    def pop_q(self, chain: Chain, t: int, prev: torch.Tensor) -> torch.Tensor:
        centre, frac, std = chain.q(t, prev)
        offset = self.ans.decode(chain.window, frac, std).astype(np.int64)
        return torch.from_numpy(centre.astype(np.int64) + offset)

    def push_q(self, chain: Chain, t: int, k: torch.Tensor, prev: torch.Tensor) -> None:
        centre, frac, std = chain.q(t, prev)
        offset = k.flatten().numpy() - centre.astype(np.int64)
        self.ans.encode_reverse(offset.astype(np.int32), chain.window, frac, std)

    def pop(self, model, mean, std) -> torch.Tensor:
        return torch.from_numpy(self.ans.decode(model, mean, std).astype(np.int64))

    def push(self, model, k: torch.Tensor, mean, std) -> None:
        self.ans.encode_reverse(k.flatten().numpy().astype(np.int32), model, mean, std)

    def pop_pixels(self, table) -> torch.Tensor:
        return torch.from_numpy(self.ans.decode(self.pixels, table).astype(np.int64))

    def push_pixels(self, symbols: torch.Tensor, table) -> None:
        self.ans.encode_reverse(symbols.flatten().numpy().astype(np.int32), self.pixels, table)


def _encode_chunk(coder: _Coder, chain: Chain, u8: torch.Tensor) -> None:
    x0 = from_uint8(u8, chain.denoiser.data_range, chain.max_value).double()
    prev = x0
    for t in range(chain.T):
        k = coder.pop_q(chain, t, prev).reshape(u8.shape)  # x_t ~ q(x_t | x_{t-1})
        if t == 0 and chain.wide is not None:
            coder.push(chain.wide, u8.long(), *chain.p(0, k))
        elif t == 0:
            coder.push_pixels(chain.lut[u8.long()], chain.p(0, k))  # x_0 with the decoder p(x_0 | x_1)
        else:
            coder.push(chain.full_model(t - 1), prev, *chain.p(t, k))  # x_{t-1} with p(x_{t-1} | x_t)
        prev = k
    coder.push(chain.full_model(chain.T - 1), prev, *chain.prior(prev.numel()))  # x_T with the prior


def _decode_chunk(coder: _Coder, chain: Chain, shape: tuple[int, ...]) -> torch.Tensor:
    n = math.prod(shape)
    k = coder.pop(chain.full_model(chain.T - 1), *chain.prior(n)).reshape(shape)
    for t in range(chain.T - 1, -1, -1):
        if t == 0 and chain.wide is not None:
            u8 = coder.pop(chain.wide, *chain.p(0, k)).reshape(shape).to(torch.int32)
            prev = from_uint8(u8, chain.denoiser.data_range, chain.max_value).double()
        elif t == 0:
            u8 = chain.values[coder.pop_pixels(chain.p(0, k))].reshape(shape).to(torch.uint8)
            prev = from_uint8(u8, chain.denoiser.data_range).double()
        else:
            prev = coder.pop(chain.full_model(t - 1), *chain.p(t, k)).reshape(shape)
        coder.push_q(chain, t, k, prev)
        k = prev
    return u8


def _chunk_size(stack_bits: float, dims: int, remaining: int, batch_size: int = MAX_CHUNK) -> int:
    """Images the stack can lend their borrowed bits to at once (at most ``batch_size``)."""
    return max(1, min(batch_size, remaining, int(stack_bits / (dims * NEED_BITS))))


def initial_words(dims: int) -> int:
    return math.ceil(dims * NEED_BITS / 32) + 1


def _initial_words(n: int) -> np.ndarray:
    words = np.random.default_rng(INITIAL_SEED).integers(0, 2**32, size=n, dtype=np.uint64)
    words[-1] |= 1 << 31  # a non-zero top word
    return words.astype(np.uint32)


def compress(denoiser, images: torch.Tensor, *, source: str = "", names: list[str] | None = None,
             batch_size: int = MAX_CHUNK, levels: int = 0, timesteps: list[int] | None = None,
             progress=None) -> tuple[bytes, dict]:
    """The file (header + ANS words) for uint8 ``images`` (N, C, H, W), and the measured rates. ``names`` (one
    per image) are recorded for the decompressed files, if given; ``batch_size`` caps the images coded together
    (the chunks are recorded in the header, so decoding needs no option). The rates: ``bits_per_dim`` of the
    chain alone (the codelength against the bound), ``file_bits_per_dim`` of the whole file (header and initial
    bits included, the figure to compare with PNG or bz2 on the same bytes). ``timesteps``: code on those of the
    model's levels (a chain chosen for the run, :func:`scorekit.codec.chains.chosen_chain`); else ``levels``: that
    many spread evenly (:func:`coding_chain`); either is recorded in the header."""
    bits = pixel_bits(denoiser)
    if images.ndim != 4 or (images.dtype != torch.uint8 if bits <= 8 else images.is_floating_point()):
        raise ScorekitError(f"the codec takes {'uint8' if bits <= 8 else 'integer'} images of shape (N, C, H, W)")
    if tuple(images.shape[1:]) != tuple(denoiser.image_shape):
        raise ScorekitError(f"images of shape {tuple(images.shape[1:])}; the model codes {tuple(denoiser.image_shape)}")
    full_levels = denoiser.process.num_levels
    chain, dims = Chain(coding_chain(denoiser, levels, timesteps)), math.prod(images.shape[1:])
    if bits > 8:  # b-bit integers: 0..2^b - 1, kept as int32
        images = images.to(torch.int32)
        bad = ((images < 0) | (images > chain.max_value)).flatten(1).any(1)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            v = images[i][(images[i] < 0) | (images[i] > chain.max_value)][0]
            raise CodecError(f"image {names[i] if names else i}: pixel value {int(v)} is outside the run's {bits}-bit "
                             f"range 0..{chain.max_value} (data.bits)")
    off = first_off_values(images, chain.values) if bits <= 8 else None
    if off is not None:
        raise CodecError(f"image {names[off[0]] if names else off[0]}: pixel value {off[1]} is not among the run's "
                         f"{len(chain.values)} data values (data.values); this model cannot code it")
    init = _initial_words(initial_words(dims))
    coder = _Coder(init.copy())
    chunks, start = [], 0
    with _one_thread():
        while start < len(images):
            size = _chunk_size(coder.ans.num_bits(), dims, len(images) - start, batch_size)
            try:
                _encode_chunk(coder, chain, images[start:start + size].cpu())
            except (ValueError, RuntimeError, OverflowError) as e:  # a latent outside its range (see Chain)
                raise CodecError(f"images {start}..{start + size - 1} could not be coded: {e}") from None
            chunks.append(size)
            start += size
            if progress:
                progress(start)
    words = coder.ans.get_compressed().astype("<u4")
    payload = words.tobytes()
    header = {"format": 2, "weights": weights_sha256(denoiser)[:HASH_HEX], "shape": list(images.shape[1:]),
              "count": len(images), "chunks": chunks, "bins_per_std": BINS_PER_STD, "initial_words": len(init),
              "payload": _sha(payload), "images": _sha(images.cpu().numpy().tobytes())}
    if bits > 8:
        header["bits"] = bits
    elif len(chain.values) < 256:
        v = chain.values.tolist()  # K evenly spaced grey levels (Glow's n_bits) are recorded as K
        header["values"] = len(v) if v == even_values(len(v)) else v
    if timesteps is not None and chain.T < full_levels:
        ts = [int(t) for t in timesteps]  # an evenly spread chain is its start and length (a few bytes)
        even = chain_from(ts[0], full_levels, len(ts)) == ts
        header.update({"chain": [ts[0], len(ts)]} if even else {"timesteps": ts})
    elif chain.T < full_levels:
        header["levels"] = chain.T
    if names:
        header["names"] = list(names)
    if source:
        header["source"] = source
    head = pack_header(header)
    data = head + payload
    total_bits = 8 * len(payload)
    rates = {"bits_per_dim": (total_bits - 32 * len(init)) / (len(images) * dims),
             "file_bits_per_dim": 8 * len(data) / (len(images) * dims), "initial_bits": 32 * len(init),
             "header_bytes": len(head), "payload_bytes": len(payload), "file_bytes": len(data),
             "chunks": len(chunks)}
    return data, rates


def decompress(denoiser, data: bytes, *, progress=None) -> torch.Tensor:
    """The images of a file made by :func:`compress` with the same model; refuses rather than guess."""
    header, payload = read_header(data)
    if header.get("format") not in (1, 2) or header.get("bins_per_std") != BINS_PER_STD:
        raise CodecError(f"unsupported codec format {header.get('format')!r}")
    mine = weights_sha256(denoiser)
    if not header["weights"] or not mine.startswith(header["weights"]):
        raise CodecError(f"the file was compressed with another model (weights SHA-256 "
                         f"{header['weights'][:12]}..., this run's {mine[:12]}...)")
    if len(payload) % 4:
        raise CodecError("corrupted file: the payload is not a whole number of 32-bit words")
    timesteps = header.get("timesteps")
    if "chain" in header:
        T, spec = denoiser.process.num_levels, header["chain"]
        if not (isinstance(spec, list) and len(spec) == 2 and all(isinstance(v, int) for v in spec)
                and 0 <= spec[0] < T and 1 <= spec[1] <= T):
            raise CodecError(f"the file's chain {spec!r} does not fit this run's {T} levels (corrupted header?)")
        timesteps = chain_from(spec[0], T, spec[1])
    chain = Chain(coding_chain(denoiser, int(header.get("levels", 0)), timesteps))
    if header.get("bits", 8) != max(chain.bits, 8):  # up to 8 bits the value set says it (checked below)
        raise CodecError(f"the file codes {header.get('bits', 8)}-bit pixels; this run's data are {chain.bits}-bit "
                         "(data.bits differs: another configuration of the run)")
    values = header.get("values", list(range(256)))
    if isinstance(values, int) and 2 <= values <= 256:
        values = even_values(values)
    if values != chain.values.tolist():
        raise CodecError(f"the file codes {len(values) if isinstance(values, list) else values} pixel values; this "
                         f"run's data has "
                         f"{len(chain.values)} (data.values differs: another configuration of the run)")
    coder = _Coder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    shape, out, done = tuple(header["shape"]), [], 0
    with _one_thread():
        for size in reversed(header["chunks"]):
            try:
                out.append(_decode_chunk(coder, chain, (size, *shape)))
            except (ValueError, RuntimeError, OverflowError, AssertionError, IndexError) as e:
                raise CodecError(f"decoding failed ({e}): the file is damaged or was made by other code") from None
            done += size
            if progress:
                progress(done)
    images = torch.cat(out[::-1])
    left = coder.ans.get_compressed()
    if (not hashlib.sha256(images.numpy().tobytes()).hexdigest().startswith(header["images"] or "-")
            or not np.array_equal(left, _initial_words(header["initial_words"]))):
        raise CodecError("decoding did not reproduce the compressed images: the model computed different "
                         "probabilities than when compressing (another CPU or library version?); nothing written")
    return images
