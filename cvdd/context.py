"""What every stage gets: config, run dir, device, data set, seeded generators, and readers for
the files earlier stages wrote (stages talk to each other only through the run dir)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from . import layout
from .config import RunConfig
from .data import denormalize, normalize, to_float, to_uint8
from .rundir import RunDir
from .utils import CvddError, read_json

__all__ = ["Context"]


class Context:
    def __init__(self, cfg: RunConfig, rd: RunDir, device: torch.device, dataset, cache_dir: Path):
        self.cfg, self.rd, self.device, self.data, self.cache_dir = (
            cfg,
            rd,
            device,
            dataset,
            cache_dir,
        )
        self.stop = False  # set by the SIGTERM/SIGINT handler; stages poll should_stop()
        self._models: dict[str, nn.Module] = {}

    def should_stop(self) -> bool:
        return self.stop

    # -- randomness: one seed drives every stage through named generators --------------------
    def seed_for(self, *keys, seed: int | None = None) -> int:
        base = self.cfg.seed if seed is None else seed
        h = hashlib.sha256(json.dumps([base, *map(str, keys)]).encode()).hexdigest()
        return int(h[:15], 16)

    def gen(self, *keys, seed: int | None = None) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(self.seed_for(*keys, seed=seed))
        return g

    # -- data helpers --------------------------------------------------------------------------
    @property
    def mean(self):
        return self.data.mean

    @property
    def std(self):
        return self.data.std

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return normalize(to_float(images), self.mean, self.std)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input -> uint8 images (the lossless form everything is saved in)."""
        return to_uint8(denormalize(x.detach(), self.mean, self.std))

    def save_images(self, rel: str, images: torch.Tensor, ipc: int) -> None:
        n = images.shape[0]
        arrays = dict(
            images=images.cpu().numpy(),
            targets=np.repeat(np.arange(n // ipc), ipc),
            ipc_idx=np.tile(np.arange(ipc), n // ipc),
        )
        self.rd.save(rel, arrays)

    def load_images(self, rel: str) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.rd.path / rel
        try:
            with np.load(p) as z:
                return torch.from_numpy(z["images"]), torch.from_numpy(z["targets"]).long()
        except (OSError, KeyError, ValueError) as e:
            raise CvddError(
                f"{p} is missing or corrupt ({type(e).__name__}); this run cannot "
                "continue, start a new run (earlier runs are untouched)"
            ) from e

    # -- committee -----------------------------------------------------------------------------
    def members(self) -> list[dict]:
        doc = read_json(self.rd.path / layout.MEMBERS)
        if not doc:
            raise CvddError(f"{layout.MEMBERS} is missing; the squeeze stage did not finish")
        return doc["members"]

    def priors(self) -> dict[str, float]:
        doc = read_json(self.rd.path / layout.PRIORS)
        if not doc:
            raise CvddError(f"{layout.PRIORS} is missing; the prior stage did not finish")
        return doc["values"]

    def load_member(self, name: str) -> nn.Module:
        """A trained committee member, frozen, in eval mode, on the device (cached per process)."""
        if name not in self._models:
            from .models import create_model

            info = next((m for m in self.members() if m["name"] == name), None)
            if info is None:
                raise CvddError(f"{name!r} is not a trained committee member")
            path = Path(info["file"])
            if not path.is_absolute():
                path = self.cache_dir / path
            try:
                ck = torch.load(path, map_location="cpu", weights_only=True)
                model = create_model(
                    name,
                    self.data.num_classes,
                    self.data.in_channels,
                    width=ck.get("width", self.cfg.squeeze.width),
                )
                model.load_state_dict(ck["state_dict"])
            except (OSError, RuntimeError, KeyError, ValueError) as e:
                raise CvddError(
                    f"committee checkpoint {path} is missing, corrupt or does not "
                    f"match {name}; delete it and resume (squeeze retrains it)"
                ) from e
            model.to(self.device).eval().requires_grad_(False)
            self._models[name] = model
        return self._models[name]
