"""Checkpoints that load without executing code, written atomically.

One ``.safetensors`` file per checkpoint holds the tensors (``model.*``, ``ema.*``, ``optim.*``, and further
named groups such as the power-function EMAs ``phema0.*``) and, in
its metadata, a JSON document with the configuration, step, data position and the optimizer's
non-tensor state. A write goes to a temporary file in the same folder, is fsynced and renamed: a
crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import CheckpointError
from .images import atomic_write

FORMAT = "scorekit-checkpoint-1"


@dataclass
class Checkpoint:
    config: dict[str, Any]
    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    state: dict[str, Any] = field(default_factory=dict)  # everything else from the JSON document
    extra: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # further tensor groups by prefix


def _flatten_optimizer(opt_state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for pid, st in opt_state["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _check_finite(prefix: str, sd: dict[str, torch.Tensor]) -> None:
    for name, value in sd.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"refusing to write a checkpoint with non-finite weights ({prefix}{name})")


def save_checkpoint(path: str | Path, *, config: dict[str, Any], step: int, model: dict[str, torch.Tensor],
                    ema: dict[str, torch.Tensor] | None = None, optimizer: dict[str, Any] | None = None,
                    state: dict[str, Any] | None = None, extra: dict[str, dict[str, torch.Tensor]] | None = None
                    ) -> Path:
    """Write one checkpoint atomically (temporary file, fsync, rename). ``extra``: further groups of tensors,
    by a prefix other than model, ema and optim."""
    path = Path(path)
    _check_finite("model.", model)
    tensors = {f"model.{k}": v for k, v in model.items()}
    for prefix, group in (extra or {}).items():
        if prefix in ("model", "ema", "optim") or "." in prefix:
            raise ValueError(f"checkpoint group name {prefix!r} is reserved or has a dot")
        _check_finite(f"{prefix}.", group)
        tensors.update({f"{prefix}.{k}": v for k, v in group.items()})
    if ema is not None:
        _check_finite("ema.", ema)
        tensors.update({f"ema.{k}": v for k, v in ema.items()})
    doc: dict[str, Any] = {"format": FORMAT, "config": config, "step": int(step), **(state or {})}
    if optimizer is not None:
        opt_tensors, doc["optimizer"] = _flatten_optimizer(optimizer)
        tensors.update(opt_tensors)
    seen: set[int] = set()
    for k, v in tensors.items():  # contiguous CPU copies, none sharing memory (safetensors requires it)
        v = v.detach().to("cpu").contiguous()
        tensors[k] = v.clone() if v.data_ptr() in seen and v.numel() else v
        seen.add(v.data_ptr())
    return atomic_save_file(path, tensors, {"scorekit": json.dumps(doc)})


def atomic_save_file(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """safetensors file written atomically (see :func:`scorekit.images.atomic_write`): a failure leaves the file
    that was there intact and raises WriteError."""
    def write(tmp: Path) -> None:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as e:  # safetensors reports I/O errors as "... (os error 28)"
            code = re.search(r"os error (\d+)", str(e))
            raise (OSError(int(code[1]), os.strerror(int(code[1]))) if code else OSError(str(e))) from None

    return atomic_write(path, write)


def _looks_pickled(path: Path) -> bool:
    """torch.save writes a zip archive (PK...) or, in the legacy format, a raw pickle (0x80, protocol 2-5). A
    safetensors file starts with its header's length (8 bytes, little-endian, whose first byte may well be 0x80)
    and then the header's "{"."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[8:9] == b"{":
        return False
    return head[:2] == b"PK" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))


def load_checkpoint(path: str | Path, *, optimizer: bool = True, map_location: str | torch.device = "cpu",
                    weights: bool = True) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; never executes code from the file.
    ``weights=False`` reads only its JSON document (config, step) and leaves the weights empty."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            meta = f.metadata() or {}
            if "scorekit" not in meta:
                raise CheckpointError(f"{path}: a safetensors file without scorekit metadata (not a checkpoint)")
            doc = json.loads(meta["scorekit"])
            wanted = [k for k in f.keys() if weights and (optimizer or not k.startswith("optim."))]
            tensors = {k: f.get_tensor(k) for k in wanted}
    except SafetensorError as e:
        if _looks_pickled(path):
            raise CheckpointError(f"{path}: a pickled (torch.save) file, not a scorekit checkpoint; scorekit "
                                  "does not unpickle checkpoints because that can run code (the authors' "
                                  "formats go through `scorekit convert`)") from None
        raise CheckpointError(f"{path}: truncated or corrupted checkpoint ({e})") from None
    except (json.JSONDecodeError, OSError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({e})") from None
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {doc.get('format')!r}")
    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    opt = None
    if optimizer and "optimizer" in doc and weights:
        opt = _unflatten_optimizer({k: v for k, v in tensors.items() if k.startswith("optim.")}, doc["optimizer"])
    state = {k: v for k, v in doc.items() if k not in ("format", "config", "step", "optimizer")}
    groups = {k.split(".", 1)[0] for k in tensors} - {"model", "ema", "optim"}
    return Checkpoint(config=doc["config"], step=int(doc["step"]), model=part("model."), ema=part("ema.") or None,
                      optimizer=opt, state=state, extra={g: part(f"{g}.") for g in sorted(groups)})


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` for foreign checkpoints: tensors and containers only. A file whose
    pickle would construct other objects (and so could run code) is refused with a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported object"
        raise CheckpointError(f"{path}: refused, the pickle holds objects other than tensors, which could run "
                              f"code when loaded ({first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or corrupted file ({str(e).splitlines()[0]})") from None
