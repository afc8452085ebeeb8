"""recover/memory_plan.json -> the rows the Live page's Memory tab shows (docs/rundir.md)."""

from __future__ import annotations


def _size(n) -> str:
    if not isinstance(n, (int, float)) or isinstance(n, bool) or n < 0:
        return "n/a"
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)} B"


def memory_rows(plan) -> list[tuple[str, str]]:
    """(what, value) pairs, each saying what it measures; [] for a missing or foreign file."""
    if not isinstance(plan, dict) or not isinstance(plan.get("waves"), int):
        return []
    per_wave, per_group = plan.get("groups_per_wave", "?"), plan.get("images_per_group")
    how = "forced by recover.groups_per_wave" if plan.get("forced") else "planned from the budget"
    images = (
        per_wave * per_group if isinstance(per_wave, int) and isinstance(per_group, int) else "?"
    )
    rows = [
        ("device, precision", f"{plan.get('device', '?')}, {plan.get('precision', '?')}"),
        (
            "waves × groups per wave",
            f"{plan['waves']} × {per_wave} ({images} images a wave, {how})",
        ),
        ("image groups in the stage", str(plan.get("groups", "?"))),
        (
            "memory budget a wave may fill",
            f"{_size(plan.get('budget_bytes'))} ({plan.get('budget_source', '?')})",
        ),
        ("estimated peak (models + largest wave)", _size(plan.get("estimated_peak_bytes"))),
        (
            "measured peak (CUDA max allocated)",
            _size(plan.get("measured_peak_bytes"))
            if plan.get("measured_peak_bytes") is not None
            else "n/a (not CUDA, or still running)",
        ),
    ]
    per = plan.get("bytes_per_image")
    if isinstance(per, dict) and per:
        kept = ", ".join(f"{m} {_size(b)}" for m, b in per.items())
        rows.append((f"kept for backward per image ({plan.get('measured_by', '?')})", kept))
    if plan.get("fits") is False:
        rows.append(("fits", "no: one group needs more than the budget (runs one per wave)"))
    if plan.get("graph"):
        rows.append(("step (recover.cuda_graph)", str(plan["graph"])))
    return rows
