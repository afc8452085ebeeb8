"""Small helpers with no ML logic: errors, atomic files, device and thread choice.

Loads without torch; the few tensor helpers import it inside the function.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "CvddError",
    "StopRequested",
    "atomic_write_bytes",
    "atomic_save",
    "encode",
    "atomic_write_json",
    "atomic_write_text",
    "read_json",
    "resolve_device",
    "set_threads",
]


class CvddError(Exception):
    """A user-facing error: the message says what went wrong and how to fix it.

    The CLI prints only the message (no traceback) and exits with code 2. `field` names the
    config key the error is about (e.g. "recover.iterations"), or None, so a form can show the
    message next to that input without parsing the text.
    """

    def __init__(self, msg: str = "", field: str | None = None) -> None:
        super().__init__(msg)
        self.field = field


class StopRequested(Exception):
    """Raised inside a stage after it saved a checkpoint because a stop was requested."""


def _file_mode() -> int:
    """The mode a plain open() would give a new file (0666 less the umask): mkstemp's 0600
    would leave exports and reports unreadable to anyone else the user shares them with."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old or the whole new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # never leave a half-written temp file behind (full disk, kill)
        Path(tmp).unlink(missing_ok=True)
        raise


def encode(obj: Any, name: str | Path) -> bytes:
    """`obj` as the content of a file called `name`, in the format its suffix names: .pt
    (torch.save), .npy (one numpy array), .npz (a dict of arrays) or .png (a PIL image)."""
    buf, suffix = io.BytesIO(), Path(name).suffix
    if suffix == ".pt":
        import torch

        torch.save(obj, buf)
    elif suffix in (".npy", ".npz"):
        import numpy as np

        np.save(buf, obj) if suffix == ".npy" else np.savez(buf, **obj)
    elif suffix == ".png":
        obj.save(buf, format="PNG")
    else:
        raise ValueError(f"no file format for {name!r}: name it .pt, .npy, .npz or .png")
    return buf.getvalue()


def atomic_save(obj: Any, path: str | Path) -> None:
    """Save `obj` to `path` (format from its suffix, see `encode`) whole or not at all."""
    atomic_write_bytes(path, encode(obj, path))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(
        path, json.dumps(obj, indent=1, sort_keys=False, default=_json_default) + "\n"
    )


def _json_default(o: Any) -> Any:
    # numpy / torch scalars and tuples show up in metrics; make them plain JSON
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | Path, default: Any = None) -> Any:
    """Read a JSON file; a missing or torn file gives `default` (readers never crash)."""
    try:
        return json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError):
        return default


def resolve_device(name: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'. Unknown names fail with the menu."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CvddError(
                f"device {name!r} asked for, but no CUDA GPU is visible; "
                "use --set device=cpu (or device=auto)"
            )
        try:
            index = torch.device(name).index
        except RuntimeError:
            index = -1  # 'cudaX', 'cuda:x': not a device name
        count = torch.cuda.device_count()
        if index is not None and not 0 <= index < count:
            raise CvddError(
                f"device {name!r}: this machine's GPUs are cuda:0 to cuda:{count - 1}; "
                "choose one of them, or device=cuda (the current one)"
            )
        return name
    raise CvddError(f"unknown device {name!r}; choose from auto, cpu, cuda, cuda:N")


def use_cuda_device(device: str) -> int:
    """Make `device` ('cuda' or 'cuda:N') the current CUDA device, so the graph's capture stream,
    its memory pool and every stream a stage opens are on the run's GPU; returns its index.
    'cuda' alone means the device that is current now (torch.cuda.set_device refuses a
    torch.device without an index, so the index is always given)."""
    import torch

    index = torch.device(device).index
    if index is None:
        index = torch.cuda.current_device()
    torch.cuda.set_device(index)
    return index


def set_threads(n: int) -> int:
    """Set torch intra-op threads to `n` (>= 1) before any tensor work; returns n.

    The worker's count comes from cvdd.queue.worker_threads (CVDD_THREADS, the config, or the
    cores shared among the workers allowed on its device)."""
    import torch

    n = max(1, int(n))
    torch.set_num_threads(n)
    return n


def environment(device: str) -> dict:
    """What a result depends on besides the config: the same seed gives the same images and
    top-1 only on the same device kind, thread count and library versions (docs/method.md §11)."""
    import platform

    import numpy
    import torch
    import torchvision

    env = dict(
        device=device,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        torchvision=torchvision.__version__,
        numpy=numpy.__version__,
        python=platform.python_version(),
        platform=platform.platform(),
        processor=_cpu_name(),
    )
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
        env["cuda"] = torch.version.cuda
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"
