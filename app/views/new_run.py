"""New run: opens ready on the built-in data set and the `quick` preset; one click starts it.

The form is validated on every change with the engine's own RunConfig checks, so a bad value
shows its error next to the field before anything starts. Clone (`?clone=<run id>`) prefills
the form from an earlier run's config.
"""

from __future__ import annotations

import json

import streamlit as st

from app import checks, state, upload
from app import components as C
from cvdd import jobs
from cvdd.config import COMMITTEE, PRESET_NOTES, PRESETS, RunConfig, from_preset
from cvdd.utils import CvddError

ss = st.session_state
ALL_MEMBERS = list(
    dict.fromkeys(
        list(COMMITTEE)
        + [m for p in PRESETS.values() for m in p.get("squeeze", {}).get("members", ())]
    )
)
DATA_KINDS = {
    "builtin": "Built-in (Fashion-MNIST subset, offline)",
    "cifar": "CIFAR folder (or .tar.gz)",
    "folder": "ImageFolder path (also Tiny-ImageNet, IDX)",
    "zip": "Zipped image folder (upload)",
}
VOTERS = {
    "prior": "prior: softmax(α/T) — CV-DD",
    "equal": "equal: 1/N each",
    "random": "random weights (ablation)",
}
SCHEDULES = {
    "auto": "auto (by IPC, as in the paper)",
    "fixed": "fixed: the same N members",
    "enumerate": "enumerate: cycle through member subsets per IPC index",
    "random": "random: a random subset per IPC index",
    "per_iteration": "per_iteration: redraw the subset every step",
}
DEVICES = ["auto", "cpu", "cuda"]
P = {"persist_state": "session"}  # keep the form when the user visits another page


def _fill(cfg: dict, preset: str) -> None:
    """Put a config dict's values into the form fields."""
    ds = str(cfg["data"]["dataset"])
    kind = (
        "builtin"
        if ds in ("builtin", "fashion_mnist_subset")
        else "cifar"
        if "cifar" in (ds or preset).lower()
        else "folder"
    )
    ss.update(
        nr_preset=preset,
        nr_kind=kind,
        nr_path="" if kind == "builtin" else ds,
        nr_ipc=str(int(cfg["ipc"])),  # whole numbers are typed as text (app/checks.py)
        nr_members=list(cfg["squeeze"]["members"]),
        nr_num_experts=str(int(cfg["recover"]["num_experts"])),
        nr_temperature=float(cfg["recover"]["temperature"]),
        nr_voter=cfg["recover"]["voter"],
        nr_schedule=cfg["recover"]["schedule"],
        nr_bssl=cfg["relabel"]["mode"] == "bssl",
        nr_iterations=str(int(cfg["recover"]["iterations"])),
        nr_device=cfg["device"],
        nr_seed=str(int(cfg["seed"])),
        nr_teacher=cfg["relabel"]["teacher"],
        nr_extra="",
    )


def _on_preset() -> None:
    _fill(from_preset(ss["nr_preset"]).to_dict(), ss["nr_preset"])
    ss["nr_base"] = None
    st.query_params.pop("clone", None)


def _unclone() -> None:
    ss["nr_preset"] = "quick"
    _on_preset()


# -- where the form starts from: a clone (?clone=<id>), or the quick preset -------------------
clone = st.query_params.get("clone")
if clone and ss.get("nr_loaded") != f"clone:{clone}":
    try:
        base = jobs.clone_config(state.resolve(clone))
        RunConfig.from_dict(base)  # still valid with this version of cvdd?
    except CvddError as e:
        st.error(f"Cannot clone {clone!r}: {e}")
        st.query_params.pop("clone", None)
    else:
        _fill(base, base.get("name") if base.get("name") in PRESETS else "quick")
        ss.update(nr_base=base, nr_loaded=f"clone:{clone}")
if "nr_loaded" not in ss:
    _fill(from_preset("quick").to_dict(), "quick")
    ss.update(nr_base=None, nr_loaded="preset")

st.title("New run")
form, teach = st.columns([3, 2], gap="large")
slots: dict = {}  # field -> placeholder for its error

with form:
    if ss.get("nr_base"):
        st.info(
            f"Cloned from run **{ss['nr_loaded'].split(':', 1)[1]}**: the form holds its "
            "settings (including the ones not shown here). Edit and Start."
        )
        st.button("Start from a preset instead", on_click=_unclone, key="nr_unclone")
    c1, c2 = st.columns([2, 3])
    c1.selectbox(
        "Preset",
        list(PRESETS),
        key="nr_preset",
        on_change=_on_preset,
        disabled=bool(ss.get("nr_base")),
        **P,
    )
    preset_data = PRESETS[ss["nr_preset"]].get("data", {}).get("dataset")
    own_data = ss.get("nr_kind", "builtin") != "builtin" and preset_data == "builtin"
    c2.caption(
        PRESET_NOTES.get(ss["nr_preset"], "")
        + ("; its settings on the data chosen below, with a committee trained on it" * own_data)
    )

    c1, c2 = st.columns([2, 3])
    c1.radio("Data set", list(DATA_KINDS), format_func=DATA_KINDS.get, key="nr_kind", **P)
    if ss["nr_kind"] == "zip":  # checked (and extracted once) before anything can queue
        with c2:
            ipc = str(ss.get("nr_ipc") or "")
            ss["nr_zip_path"] = upload.zip_drop_zone(
                state.runs_root(),
                preset=ss["nr_preset"],
                ipc=int(ipc) if ipc.isdigit() else int(PRESETS[ss["nr_preset"]].get("ipc", 10)),
            )
    elif ss["nr_kind"] != "builtin":
        c2.text_input(
            "Path on the server",
            key="nr_path",
            **P,
            placeholder="/data/cifar-10-batches-py"
            if ss["nr_kind"] == "cifar"
            else "/data/imagenette (with train/<class>/...)",
        )
    else:
        c2.caption(
            "5 000 training images of Fashion-MNIST and its whole test split of 10 000 "
            "(10 classes, 28×28, grey) ship with cvdd: nothing to download."
        )
    slots["dataset"] = c2.empty()

    # Whole numbers as text: a number box parses `1e3` as 1 and `10.5` as 10, and a bounded
    # one keeps its old value when an out-of-range one is typed, so Start would launch a value
    # nobody typed. Here every typed value arrives and app/checks.py says what is wrong with it
    # under the field.
    c1, c2, c3 = st.columns(3)
    c1.text_input(
        "Images per class (IPC)",
        key="nr_ipc",
        **P,
        help="Synthetic images per class: a whole number, at most the real images per class.",
    )
    c2.text_input(
        "Recover iterations",
        key="nr_iterations",
        **P,
        help="Pixel-optimisation steps per image group (a whole number).",
    )
    c3.text_input("Seed", key="nr_seed", **P, help="A whole number from 0 to 4,294,967,295.")
    slots.update(ipc=c1.empty(), iterations=c2.empty(), seed=c3.empty())

    opts = list(dict.fromkeys(ALL_MEMBERS + list(ss.get("nr_members") or [])))
    st.multiselect(
        "Committee members",
        opts,
        key="nr_members",
        **P,
        help="One member = the SRe²L++ baseline; several = CV-DD.",
    )
    slots["members"] = st.empty()

    c1, c2, c3 = st.columns(3)
    c1.text_input(
        "Experts per image N",
        key="nr_num_experts",
        **P,
        help="N: how many committee members vote on (optimise) one IPC index's images.",
    )
    c2.number_input(
        "Temperature T",
        step=0.5,
        key="nr_temperature",
        **P,
        help="T: a voter's weight is softmax(α/T) over the N voters, α = the member's prior "
        "(the accuracy of a student distilled by that member alone). Small T favours the best "
        "prior; large T gives equal votes.",
    )
    c3.selectbox("Voter", list(VOTERS), format_func=VOTERS.get, key="nr_voter", **P)
    slots.update(num_experts=c1.empty(), temperature=c2.empty(), voter=c3.empty())

    c1, c2, c3 = st.columns(3)
    c1.selectbox(
        "Committee schedule", list(SCHEDULES), format_func=SCHEDULES.get, key="nr_schedule", **P
    )
    devices = list(dict.fromkeys(DEVICES + [ss.get("nr_device") or "auto"]))
    c2.selectbox(
        "Device",
        devices,
        key="nr_device",
        **P,
        help="auto = the GPU when the worker sees one, else CPU.",
    )
    c3.toggle(
        "BSSL soft labels",
        key="nr_bssl",
        **P,
        help="BSSL = batch-specific soft labels. On: the teacher's BN uses each synthetic "
        "batch's statistics (CV-DD). Off: eval mode, the stored running statistics.",
    )
    slots.update(schedule=c1.empty(), device=c2.empty())

    with st.expander("More settings"):
        teachers = list(ss.get("nr_members") or []) + ["committee"]
        if ss.get("nr_teacher") not in teachers:
            ss["nr_teacher"] = teachers[0]
        st.selectbox(
            "Relabel teacher",
            teachers,
            key="nr_teacher",
            help="The model that writes the soft labels; 'committee' = prior-weighted "
            "logits of all members.",
        )
        slots["teacher"] = st.empty()
        st.text_area(
            "Extra overrides, one `section.key=value` per line",
            key="nr_extra",
            **P,
            placeholder="recover.snapshot_every=20\nvalidate.epochs=40",
        )

# -- build and check the config (app/checks.py) ----------------------------------------------
check = checks.check_form(ss)
cfg, errors, overrides = check.cfg, check.errors, check.overrides
for field, msg in errors.items():
    (slots.get(field) or form).error(msg)
if check.ipc_note and "ipc" not in errors:
    slots["ipc"].caption(check.ipc_note)

with form:
    gpus, nproc = state.gpu_count(), 1
    if gpus > 1 and st.checkbox(
        f"Use all {gpus} GPUs (torchrun: one process per GPU, same images)", key="nr_all_gpus"
    ):
        nproc = gpus
    c1, c2 = st.columns([1, 3], vertical_alignment="center")
    start = c1.button(
        "Start",
        icon=":material/play_arrow:",
        type="primary",
        key="start",
        disabled=bool(errors),
        width="stretch",
    )
    slot = jobs.start_outlook(state.runs_root(), cfg.device if cfg is not None else "auto")
    if errors:
        what = (
            "the message in red is"
            if len(errors) == 1
            else f"the {len(errors)} messages in red are"
        )
        c2.caption(f"Start is off until {what} resolved.")
    elif slot["pos"]:
        c2.caption(
            f"This run will **queue**, position {slot['pos']} for {slot['device']}: "
            f"{slot['busy']} running there, {slot['limit']} at a time. It starts by itself when "
            "a worker ends; the tab need not stay open."
        )
    elif slot["busy"]:
        c2.caption(
            f"{slot['busy']} run(s) already running on {slot['device']}; this one starts now "
            f"beside them ({slot['limit'] or 'no'} limit there) and shares the device."
        )
    else:
        c2.caption(f"Runs go to `{state.runs_root()}`. The run continues if you close the tab.")
    if cfg is not None:
        with st.expander("Effective config and CLI command"):
            if not ss.get("nr_base"):
                cli = " ".join(
                    ["python -m cvdd run --preset", ss["nr_preset"]]
                    + [f"--set '{o}'" for o in overrides]
                )
                st.code(cli, language="bash")
            st.code(json.dumps(cfg.to_dict(), indent=1), language="json")

if start and cfg is not None and not errors:
    if ss.pop("nr_token", None) is None and ss.get("nr_last_started"):
        st.switch_page(C.LIVE, query_params={"run": ss["nr_last_started"]})  # double click
    try:
        env = {jobs.NPROC_ENV: nproc} if nproc > 1 else None
        run_dir = jobs.start_job(cfg, state.runs_root(), env, wait=False)  # Live: 'starting'
    except CvddError as e:
        form.error(f"Could not start: {e}")
    else:
        ss["nr_last_started"] = run_dir.name
        state.set_run(run_dir.name)
        st.switch_page(C.LIVE, query_params={"run": run_dir.name})
ss["nr_token"] = True

with teach, st.container(border=True):
    st.markdown("""
#### What happens in each stage
1. **squeeze** — train every committee member on the real images. Their weights and the
   running mean / variance stored in each BatchNorm layer are all that later stages know about
   the data set.
2. **prior** — give each member a score α: distil a small set with that member alone
   (SRe²L++) and train a student on it. α is that student's accuracy: how well the member's
   knowledge *transfers*, not how accurate the member itself is.
3. **init** — start from real patches instead of noise: per class, random crops of real images
   are scored by an observer model and the most typical ones become the starting images.
4. **recover** — optimise the pixels. For every IPC index a committee of N members votes:
   loss = Σᵢ softmax(α/T)ᵢ · (cross-entropy to the class + BN-statistics matching). Small T lets
   the best prior dominate, large T gives equal votes; other IPC indices get other members, so
   the images of one class differ more (Diversity page).
5. **relabel** — a teacher writes a soft label for every image. With **BSSL** its BatchNorm layers
   normalise with the statistics of the synthetic batch itself (train mode, weights frozen),
   because synthetic images never match the real running statistics (BN page); *eval* mode uses
   the running statistics as usual (Soft labels page).
6. **validate** — train a fresh student only on the distilled images and soft labels, and
   report its top-1 on the real test set, next to a baseline with as many random real images.
""")
    st.caption(
        "Each run is its own process writing to its run folder: reload the page, "
        "open a second tab or restart the server — nothing is lost. Stop saves a "
        "checkpoint; Resume continues from it."
    )
