"""A run as one HTML page (`python -m cvdd report RUN_DIR`, the app's Download report button):
settings, stage times, the committee, the synthetic images beside the initial ones, the BN
figure, the soft labels, diversity and the students' top-1 with their spread over seeds.

Self-contained: images are inline PNG (data: URIs), charts inline SVG drawn here, no script, no
link, no font or URL from anywhere else, so it opens offline and prints on A4 for a handout.
Torch-free (numpy, Pillow and the torch-free cvdd readers), so the app imports it; it only
reads the run folder (and, for the twin and the repeats, the config.json and result.json of
the runs beside it).
"""

from __future__ import annotations

from pathlib import Path

from .. import layout
from ..utils import CvddError, atomic_write_text
from . import analysis, results, sections
from .html import page
from .read import RunData, load_run

__all__ = ["build_html", "write_report", "report_file_name", "RunData", "load_run"]

# the sections in page order; each takes the RunData and returns its HTML
SECTIONS = (
    sections.settings,
    sections.stages,
    sections.committee,
    sections.images,
    analysis.bn,
    analysis.soft_labels,
    analysis.diversity,
    results.students,
)


def build_html(run_dir: str | Path, *, partial: bool = False) -> str:
    """The report of a finished run as one HTML document (a string). With `partial`, an
    unfinished run gives what it has so far, each missing part named."""
    data = load_run(run_dir, partial=partial)
    body = [sections.header(data)]
    for make in SECTIONS:
        try:
            body.append(make(data))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            # a file from another version or tool: the other sections still come out
            body.append(
                f'<section><p class="missing">Could not draw {make.__name__.replace("_", " ")}'
                f" from this run's files ({type(e).__name__}).</p></section>"
            )
    title = f"{sections.method_name(data).split(' ')[0]} run {data.run_id}"
    return page(title, "\n".join(body))


def report_file_name(run_dir: str | Path) -> str:
    """What a downloaded report is called: cvdd-report-<run id>.html."""
    return f"cvdd-report-{Path(run_dir).name}.html"


def write_report(
    run_dir: str | Path, out: str | Path | None = None, *, partial: bool = False
) -> Path:
    """Write the report (default: <run dir>/report.html) and return its path."""
    html = build_html(run_dir, partial=partial)
    path = Path(out) if out is not None else Path(run_dir) / layout.REPORT
    if path.is_dir():
        path = path / report_file_name(run_dir)
    try:
        atomic_write_text(path, html)
    except OSError as e:
        raise CvddError(
            f"cannot write {path} ({e.strerror}): pass --out FILE somewhere writable", field="out"
        ) from e
    return path.resolve()
