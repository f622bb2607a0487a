"""Training checkpoints: :class:`Checkpointer` saves, keeps, resumes and averages them.

A checkpoint (``checkpoint-SSSSSSS.pt`` in the run directory, written with ``torch.save`` and read with
``weights_only=True``) holds the model, optimizer, scheduler, step, run configuration and every rank's torch
/ Python RNG states, so a resumed run continues bit-identically. Only the newest ``keep`` are kept. The
final weights are ``model.safetensors`` (:func:`save_weights`).

Weight averaging (:meth:`Checkpointer.average`, :func:`average_checkpoints`): the uniform mean of the model
tensors of several checkpoints of one run (timm's ``avg_checkpoints.py``; SWA, Izmailov et al. 2018, averages
the iterates of a constant or cyclic lr phase).

Warm start (:func:`warm_start`): after the seeded initialisation, every tensor whose name and shape match
registry weights ``MODEL.TAG`` or a weights file is copied in (e.g. FlowNetC from FlowNetS weights: all but
conv1, conv3_1 and the redirect conv). A FlowNet with LS-DFN takes the plain FlowNet's weights whole: the
consumers of the LS-DFN channels get zero weights on them, so the run starts from the plain network's outputs.
"""
from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from zoo.distributed import rank_and_world
from zoo.errors import StateDictMismatchError, WeightsError
from zoo.factory import create
from zoo.weights import expand_state_dict, read_state_dict, unwrap_checkpoint

__all__ = ["Checkpointer", "average_checkpoints", "save_weights", "unwrap_model", "warm_start"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (``model`` itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def save_weights(model: nn.Module, path: Path) -> None:
    """Write the model's tensors (DDP unwrapped, on the CPU) to the safetensors file ``path`` atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in unwrap_model(model).state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


class Checkpointer:
    """The checkpoints of the run directory ``out``: every rank calls :meth:`save` and :meth:`resume`
    (the RNG states are gathered from and restored to every rank); rank 0 reads and writes the files."""

    PATTERN = "checkpoint-*.pt"

    def __init__(self, out: str | Path, keep: int = 3) -> None:
        self.out, self.keep = Path(out), max(int(keep), 1)
        self.rank, self.world = rank_and_world()

    def paths(self) -> list[Path]:
        """The run's checkpoints, oldest first."""
        return sorted(self.out.glob(self.PATTERN))

    def save(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, config: Mapping[str, Any]) -> None:
        """Write the checkpoint of ``step`` atomically and delete all but the newest ``keep``."""
        states = [_rng_state()]
        if self.world > 1:
            gathered: list = [None] * self.world
            dist.all_gather_object(gathered, states[0])
            states = gathered
        if self.rank != 0:
            return
        ckpt = {"step": step, "model": unwrap_model(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": states, "config": dict(config)}
        path = self.out / f"checkpoint-{step:07d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(ckpt, tmp)
        os.replace(tmp, path)
        for old in self.paths()[:-self.keep]:
            old.unlink()

    def resume(self, model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, config: Mapping[str, Any],
               must_match: Mapping[str, Any]) -> int:
        """Load the newest checkpoint into ``model``, ``optimizer``, ``scheduler`` and the RNGs; return its
        step (0 without a checkpoint). ``must_match``: the configuration keys whose values must equal the
        checkpoint's, with the value a checkpoint written before the key existed ran with."""
        found = self.paths()
        if not found:
            return 0
        device = next(iter(model.parameters()), torch.empty(0)).device
        ckpt = torch.load(found[-1], map_location=device, weights_only=True)
        old = ckpt["config"]
        diff = [k for k, default in must_match.items() if old.get(k, default) != config.get(k)]
        if diff:
            raise ValueError(f"{found[-1]} was written by a run with different {', '.join(diff)} "
                             f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); use another --out")
        model.load_state_dict(unwrap_checkpoint(ckpt, found[-1]))
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        states = ckpt["rng"]
        _set_rng_state(states[self.rank] if len(states) == self.world else states[0])
        return int(ckpt["step"])

    @staticmethod
    def average(paths: Sequence[str | Path], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Uniform average of the model tensors in ``paths`` (training ``.pt`` checkpoints, read with
        ``weights_only=True``, or safetensors files).

        Floating tensors (parameters, BatchNorm running statistics) are averaged in float64 and stored in
        ``dtype`` (default: their own dtype); integer tensors (``num_batches_tracked``) are taken from the
        last file. Every file must hold the same names and shapes; mismatches are listed by name.
        """
        paths = [Path(p) for p in paths]
        if not paths:
            raise WeightsError("average_checkpoints needs at least one checkpoint file")
        total: dict[str, torch.Tensor] = {}
        last: dict[str, torch.Tensor] = {}
        reference: dict[str, tuple[int, ...]] = {}
        for path in paths:
            state = read_state_dict(path, allow_pickle=True)
            reference = reference or {k: tuple(v.shape) for k, v in state.items()}
            _check_same_layout(state, reference, path, paths[0])
            for key, value in state.items():
                if value.is_floating_point():
                    total[key] = total[key] + value.double() if key in total else value.double()
                last[key] = value
        return {k: (total[k] / len(paths)).to(dtype or v.dtype).contiguous() if k in total else v.clone().contiguous()
                for k, v in last.items()}


def average_checkpoints(paths: Sequence[str | Path], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Uniform average of the model tensors of several checkpoints of one run (:meth:`Checkpointer.average`)."""
    return Checkpointer.average(paths, dtype)


def _check_same_layout(state: Mapping[str, torch.Tensor], reference: Mapping[str, tuple[int, ...]], path: Path,
                       first: Path) -> None:
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    shapes = [f"{k}: {tuple(state[k].shape)} vs {reference[k]}"
              for k in sorted(set(state) & set(reference)) if tuple(state[k].shape) != reference[k]]
    if missing or unexpected or shapes:
        parts = [f"{label} {items}" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)) if items]
        raise StateDictMismatchError(f"cannot average {path} with {first}: " + "; ".join(parts)
                                     + ". Average checkpoints of one architecture (one training run).")


def warm_start(model: nn.Module, source: str) -> dict[str, Any]:
    """Copy into ``model`` every tensor of ``source`` whose name and shape match; return what was done.

    ``source``: ``MODEL.TAG`` (registry weights, resolved like ``zoo.create(MODEL, pretrained=TAG)``)
    or a weights file (safetensors, or a training checkpoint ``.pt`` read with ``weights_only=True``).
    The copy is :func:`zoo.weights.expand_state_dict` (plain FlowNet weights fill a FlowNet with LS-DFN,
    zero on the inserted channels); its report lists the copied, expanded and kept keys and the parameter
    counts, so a card can say how much of the model was warm-started.
    """
    path = Path(source)
    if path.exists():
        theirs = read_state_dict(path, allow_pickle=path.suffix in (".pt", ".pth", ".ckpt"))
    else:
        name, dot, tag = source.rpartition(".")
        if not dot or not name:
            raise ValueError(f"warm start {source!r}: neither a file nor MODEL.TAG registry weights "
                             "(e.g. flownets-small.flyingshapes-28250)")
        theirs = create(name, pretrained=tag).state_dict()
    return expand_state_dict(model, theirs, source=source)
