"""Data parallel offline runs: who this process is among torchrun's ranks, which episodes are its own, and the merge.

Launched by `torchrun --nproc-per-node N -m topreward.cli eval ...`, each rank scores the episodes whose
position in the source's order is its rank modulo the world size, writes them to a part of its own
(`parts/rank-00003-of-00008/curves.jsonl`) and, after a barrier, rank 0 merges every part into the one
`curves.jsonl` a single process would have written: same order (the source's), same lines. A plain
`topreward eval` is the world of size 1 of the same code: its part is `curves.jsonl` itself, no process group.

Episodes are told apart by their key, never by rank, so `--resume` skips whatever any part or the merged file
holds, whichever world size wrote it.
"""
from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from topreward.offline.evaluate import CURVES_FILE
from topreward.output_files import TEMP_SUFFIX, write_atomic
from topreward.scoring.curve import Curve

# Ranks that finish early wait at the final barrier for the slowest; a long episode must not time them out.
BARRIER_TIMEOUT = datetime.timedelta(hours=24)
PART_NAME = re.compile(r"rank-(\d{5})-of-(\d{5})")
PART_EXTRAS = ("summary.json", "threshold.yaml")  # what a rank writes beside its episodes: its running summary


@dataclass(frozen=True)
class World:
    """This process's place among the ranks; size 1 (the default) is a plain single-process run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def tag(self) -> str:
        """Prefix for this rank's messages; empty in a single process, so its output is unchanged."""
        return "" if self.size == 1 else f"[rank {self.rank}/{self.size}] "

    def share(self, items: list) -> list:
        """This rank's items: those at positions `rank`, `rank + size`, ... (deterministic, the same on every rank)."""
        return items[self.rank::self.size]

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            if dist.get_backend() == "nccl":
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()

    def gather(self, value: object) -> list:
        """Every rank's `value`, in rank order, on every rank (small picklable things only: skip lists, flags)."""
        if self.size == 1:
            return [value]
        import torch.distributed as dist

        values: list = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def close(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def world_from_env(device: str) -> tuple[World, str]:
    """Join torchrun's process group when there is one (WORLD_SIZE > 1) and this rank's device.

    `--device auto` (or `cuda`) becomes `cuda:LOCAL_RANK` under torchrun, so each rank holds its own copy of the
    model on its own GPU. NCCL for ranks on GPUs, gloo on the CPU; only barriers and small objects go through it.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), device
    import torch
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{local_rank}"
    on_gpu = device.startswith("cuda") and torch.cuda.is_available()  # else the backend says why, in one line
    if on_gpu:
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group("nccl" if on_gpu else "gloo", timeout=BARRIER_TIMEOUT)
    return World(rank, size, local_rank), device


@dataclass(frozen=True)
class Parts:
    """Where the ranks of any world size keep their episodes, and the merged file made from them."""

    merged: Path  # the curves file a single process writes (eval: DIR/curves.jsonl)
    root: Path  # the folder of the parts (eval: DIR/parts)

    def part(self, world: World) -> Path:
        """This rank's curves file: the merged file itself in a single process."""
        if world.size == 1:
            return self.merged
        return self.root / f"rank-{world.rank:05d}-of-{world.size:05d}" / self.merged.name

    def missing(self, size: int) -> list[int]:
        """The ranks of a world of `size` whose part this process cannot see (each rank creates its part first)."""
        return [r for r in range(size) if not self.part(World(r, size)).is_file()]

    def existing(self) -> list[Path]:
        """Every part on disk, of any world size (an earlier run's included), in name order."""
        if not self.root.is_dir():
            return []
        return sorted(d / self.merged.name for d in self.root.iterdir()
                      if PART_NAME.fullmatch(d.name) and (d / self.merged.name).is_file())

    def sources(self) -> list[Path]:
        """The merged file first, then every part: where a finished episode may be."""
        return ([self.merged] if self.merged.is_file() else []) + self.existing()

    def done(self) -> dict[str, Curve]:
        """Every finished episode anywhere, by key; read only, as other ranks may be writing their parts."""
        found: dict[str, Curve] = {}
        for path in self.sources():
            for curve in read_curves(path):
                found.setdefault(curve.key, curve)
        return found

    def clear(self) -> None:
        """A fresh start (no --resume): the merged file and every part go."""
        self.merged.unlink(missing_ok=True)
        self.remove_parts()

    def remove_parts(self) -> None:
        """Delete the parts and their folders; only what the ranks wrote, never anything else under `root`."""
        for path in self.existing():
            for name in (path.name, *PART_EXTRAS):
                for victim in (path.parent / name, *path.parent.glob(f".{name}.*{TEMP_SUFFIX}")):
                    victim.unlink(missing_ok=True)
            if not any(path.parent.iterdir()):
                path.parent.rmdir()
        if self.root.is_dir() and not any(self.root.iterdir()):
            self.root.rmdir()

    def merge(self, order: Iterable[str]) -> list[Curve]:
        """Write the merged file from every source, in the source's order (keys it no longer lists after, as found).

        The merged file is replaced in one step before the parts go: a crash in between leaves both, holding the
        same episodes, and `--resume` takes each episode once.
        """
        position = {key: k for k, key in enumerate(order)}
        curves = sorted(self.done().values(), key=lambda c: position.get(c.key, len(position)))
        write_atomic(self.merged, "".join(json.dumps(c.to_json(), allow_nan=False) + "\n" for c in curves),
                     CURVES_FILE)
        self.remove_parts()
        return curves


def read_curves(path: Path) -> list[Curve]:
    """The complete lines of an curves file; a last line cut short by a crash is ignored, the file untouched."""
    curves = []
    with path.open("rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                curves.append(Curve.from_json(json.loads(line)))
            except (ValueError, TypeError):
                break
    return curves
