"""The recover step as one CUDA graph (`recover.cuda_graph`, method.md §5.3): step.py's six
parts on static tensors, captured once per wave and replayed.

At 32 px a committee of small CNNs runs hundreds of short kernels per step, and launching them
costs more than running them. With the flag, one whole step of a wave (augment, committee
forward with the BN-statistic hooks, loss, backward, Adam, clamp, non-finite flag) is captured
once per wave and replayed every step. A graph replays fixed kernels on fixed memory, so:

- the augmentation keeps its numbers on the host: each step draws crop, flip and roll from every
  group's own stream exactly as `shared_crop_flip_roll` draws them (same streams, so a resume
  stays exact and either mode may continue the other's checkpoint), copies them into a device
  tensor and applies them inside the graph with gathers of static shape: the crop resized with
  the source indices and weights of bilinear `F.interpolate` (align_corners=False), flip and roll
  folded into those indices. Values agree with the eager augmentation to float rounding (a few
  1e-7 on normalised pixels), not bit for bit;
- Adam is capturable, its learning rate a device tensor set before each replay (float32, where
  the eager step passes a double);
- the loss parts and the flag live in the graph's tensors, read only where the loop reads.

On a CPU the same static step runs uncaptured (how the tests check it without a GPU).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import torch

from ..augment import rrc_params
from ..config import RecoverConfig
from ..utils import CvddError
from .waves import Wave

__all__ = [
    "CAPTURED",
    "graph_mode",
    "draw_params",
    "static_augment",
    "capturable_adam",
    "GraphStep",
    "open_graph",
]

CAPTURED = "captured"
N_PARAMS = 7  # per group: top, left, crop height, crop width, flip, roll dy, roll dx
WARM_UP = 3  # uncaptured steps first: kernels set up their workspaces on first use


def graph_mode(cfg: RecoverConfig, device: torch.device) -> str:
    """The step's mode: "" (flag off), CAPTURED, or "eager: <why>" where one graph cannot do."""
    if not cfg.cuda_graph:
        return ""
    if device.type != "cuda":
        raise CvddError(
            f"recover.cuda_graph needs a CUDA device; this run's device is {device.type}: "
            "set recover.cuda_graph=false, or device=cuda on a machine with a GPU",
            field="recover.cuda_graph",
        )
    if cfg.schedule == "per_iteration":
        return "eager: schedule=per_iteration draws new voters every step, a new graph each"
    return CAPTURED


# ---------------------------------------------------------------------------------------------
# augmentation with static shapes


def draw_params(gen: torch.Generator, h: int, w: int, jitter: int) -> list[int]:
    """One group's crop, flip and roll for one step, drawn as `shared_crop_flip_roll` draws
    them: the same numbers and the same use of the stream."""
    top, left, ch, cw = rrc_params(gen, h, w)
    flip = int(torch.rand(1, generator=gen).item() < 0.5)
    dy, dx = 0, 0
    if jitter > 0:
        dy, dx = (torch.rand(2, generator=gen) * (jitter + 1)).long().tolist()
    return [top, left, ch, cw, flip, dy, dx]


def _axis(start, length, shift, flip, size: int) -> tuple[torch.Tensor, ...]:
    """Along one axis, per group (rows): the two source indices and weights of each output
    position, for crop [start, start + length) resized to `size`, mirrored where `flip`, then
    rolled by `shift`. The resize follows bilinear F.interpolate(align_corners=False): source
    coordinate (o + 0.5) * length / size - 0.5, clamped at 0, its neighbour clamped at the
    crop's last pixel, both weights 1 and 0 where the length is the size."""
    o = torch.arange(size, device=start.device)
    p = (o - shift[:, None]).remainder(size)  # roll: output o shows position o - shift
    if flip is not None:
        p = torch.where(flip[:, None], size - 1 - p, p)
    n = length[:, None]
    scale = n.float() / size
    # scale * (p + 0.5) - 0.5 rounded once, as interpolate's compiled kernels round it (a fused
    # multiply-add; the product of two floats is exact in double): the same weights, bit for bit
    src = (scale.double() * (p.double() + 0.5) - 0.5).float().clamp(min=0)
    i0 = torch.minimum(src.floor().long(), n - 1)
    lam = (src - i0.float()).clamp(0, 1)
    i1 = i0 + ((i0 < n - 1) & (n != size)).long()
    return start[:, None] + i0, start[:, None] + i1, 1 - lam, lam


def static_augment(x: torch.Tensor, params: torch.Tensor, groups: int) -> torch.Tensor:
    """`x` (G * B, C, H, W) augmented with each group's `params` (G, N_PARAMS) long, on the
    device: the work of `shared_crop_flip_roll`, with shapes that never change."""
    gb, c, h, w = x.shape
    xv = x.view(groups, gb // groups, c, h, w)
    top, left, ch, cw, flip, dy, dx = params.unbind(1)
    r0, r1, wr0, wr1 = _axis(top, ch, dy, None, h)
    c0, c1, wc0, wc1 = _axis(left, cw, dx, flip.bool(), w)

    def cols(i: torch.Tensor) -> torch.Tensor:
        return xv.gather(4, i[:, None, None, None, :].expand(xv.shape))

    # columns first, then rows, as interpolate nests its sums
    t = cols(c0) * wc0[:, None, None, None, :] + cols(c1) * wc1[:, None, None, None, :]

    def rows(i: torch.Tensor) -> torch.Tensor:
        return t.gather(3, i[:, None, None, :, None].expand(xv.shape))

    out = rows(r0) * wr0[:, None, None, :, None] + rows(r1) * wr1[:, None, None, :, None]
    return out.view(gb, c, h, w)


# ---------------------------------------------------------------------------------------------
# Adam and the step


def capturable_adam(opt: torch.optim.Adam, x: torch.Tensor) -> torch.optim.Adam:
    """The wave's Adam (one tensor, `x`) as one a graph can replay: the same settings (fused on
    CUDA, as `open_wave` makes it), capturable there, the learning rate a device tensor, and the
    state explicit (zeros and step 0 where `opt` has none yet, as its first step would make it)
    so the warm-up can save and restore it in place. `Wave.state` reads it as before."""
    pg, cuda = opt.param_groups[0], x.device.type == "cuda"
    lr = torch.tensor(float(pg["lr"]), dtype=torch.float32, device=x.device)
    new = torch.optim.Adam(
        [x],
        lr=lr,
        betas=pg["betas"],
        eps=pg["eps"],
        fused=True if cuda else None,
        capturable=cuda,
    )
    old = opt.state.get(x, {})
    step = old.get("step", torch.zeros(()))
    new.state[x] = dict(
        step=torch.as_tensor(step).to(x.device, torch.float32, copy=True),
        exp_avg=old["exp_avg"] if old else torch.zeros_like(x),
        exp_avg_sq=old["exp_avg_sq"] if old else torch.zeros_like(x),
    )
    return new


class GraphStep:
    """One wave's step on static tensors (pixels, Adam state, augmentation numbers, lr, flag):
    captured on CUDA and replayed; elsewhere run as it is. Replaces `w.opt` (capturable_adam).

    `loss_fn(xa)` is the committee loss of the augmented wave: (loss, parts)."""

    def __init__(self, w: Wave, loss_fn: Callable, cfg: RecoverConfig, bounds) -> None:
        self.w, self.loss_fn, self.cfg, self.bounds = w, loss_fn, cfg, bounds
        self.cuda = w.x.device.type == "cuda"
        w.opt = capturable_adam(w.opt, w.x)
        self.lr = w.opt.param_groups[0]["lr"]
        h, wd = w.x.shape[-2:]
        whole = [[0, 0, h, wd, 0, 0, 0]] * len(w.gens)  # the warm-up's: the image as it is
        self.params = torch.tensor(whole, dtype=torch.long, device=w.x.device)
        self.bad = torch.zeros((), dtype=torch.bool, device=w.x.device)  # a non-finite loss
        self.graph: torch.cuda.CUDAGraph | None = None
        self.parts: dict = {}
        self._warm_up()
        if self.cuda:
            self.graph = torch.cuda.CUDAGraph()  # the gradient, now None, is made inside it
            with torch.cuda.graph(self.graph):
                self.parts = self._body()

    def _body(self) -> dict:
        w = self.w
        xa = static_augment(w.x, self.params, len(w.gens)) if self.cfg.augment else w.x
        loss, parts = self.loss_fn(xa)
        w.opt.zero_grad(set_to_none=True)  # as recover_step (step.py): backward, Adam, clamp
        loss.backward()
        w.opt.step()
        with torch.no_grad():
            w.x.clamp_(*self.bounds)
            self.bad |= ~torch.isfinite(parts["loss"])
        return parts

    def _warm_up(self) -> None:
        """WARM_UP steps (on a side stream on CUDA, as a capture needs), then pixels, Adam's
        state and the flag put back in place: the run never sees them. The copies wait in host
        memory, so the warm-up needs no more device memory than a step."""
        w = self.w
        st = w.opt.state[w.x]
        live = [w.x, st["step"], st["exp_avg"], st["exp_avg_sq"], self.bad]
        saved = [t.detach().to("cpu", copy=True) for t in live]
        side = torch.cuda.Stream() if self.cuda else None
        if side is not None:
            side.wait_stream(torch.cuda.current_stream())
        on_side = torch.cuda.stream(side) if side is not None else contextlib.nullcontext()
        with on_side, warnings.catch_warnings():
            # a capturable Adam warns when it steps uncaptured: here that is the point
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            for _ in range(WARM_UP):
                self._body()
        if side is not None:
            torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for t, s in zip(live, saved):
                t.copy_(s)
        w.x.grad = None

    def step(self, lr: float) -> dict:
        """One step at learning rate `lr`: this step's augmentation drawn from the groups'
        streams, copied in, the graph replayed. Returns the loss parts (device tensors)."""
        w = self.w
        if self.cfg.augment:
            h, wd = w.x.shape[-2:]
            drawn = [draw_params(g, h, wd, self.cfg.jitter) for g in w.gens]
            host = torch.tensor(drawn, dtype=torch.long)
            # a fresh pinned tensor per step: the copy runs later, when the GPU gets to it,
            # and the pinned block is not reused before then
            self.params.copy_(host.pin_memory() if self.cuda else host, non_blocking=True)
        self.lr.fill_(lr)
        if self.graph is None:
            return self._body()
        self.graph.replay()
        return self.parts


def open_graph(mode: str, w: Wave, loss_fn: Callable, cfg: RecoverConfig, bounds):
    """The wave's GraphStep where `mode` (graph_mode's) is CAPTURED; None: the eager step."""
    return GraphStep(w, loss_fn, cfg, bounds) if mode == CAPTURED else None
