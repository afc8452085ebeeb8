"""app/checks.py: the New-run form's checks, without a server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app import checks  # noqa: E402 -- after the sys.path line
from cvdd.config import from_preset  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_cache():
    checks.images_per_class.clear()  # st.cache_data: one folder per test, same paths reused


def test_builtin_set_has_500_images_per_class():
    assert checks.images_per_class("builtin") == (500, "the built-in set")
    cfg = from_preset("quick", ["ipc=501"])
    err, _ = checks.check_ipc(cfg, "builtin")
    assert "larger than the 500 images per class" in err and "IPC ≤ 500" in err
    assert checks.check_ipc(from_preset("quick", ["ipc=500"]), "builtin")[0] is None


def test_folders_are_counted_cheaply(tmp_path):
    for cls, n in (("cat", 7), ("dog", 4)):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(n):
            (tmp_path / "train" / cls / f"{i}.png").write_bytes(b"")
    assert checks.images_per_class(str(tmp_path))[0] == 4
    cifar = tmp_path / "c10"
    cifar.mkdir()
    (cifar / "data_batch_1").write_bytes(b"")
    assert checks.images_per_class(str(cifar)) == (5000, "CIFAR-10")
    err, note = checks.check_ipc(from_preset("quick", ["ipc=10"]), str(tmp_path / "nowhere"))
    assert err is None and "checked" in note  # unknown here: the worker checks it at start


def test_every_bad_field_is_reported_in_the_pages_words():
    build = lambda ovs: from_preset("quick", ovs)  # noqa: E731
    cfg, errors = checks.check_config(
        build, ["ipc=0", "recover.iterations=-1", "recover.temperature=0", "seed=3"]
    )
    assert cfg is not None and cfg.seed == 3  # the good override still applies
    assert set(errors) == {"ipc", "iterations", "temperature"}
    assert errors["ipc"].startswith("IPC must be >= 1") and "--set" not in errors["ipc"]
    vals = {
        "seed": "-1",
        "ipc": None,
        "iterations": "1e3",
        "num_experts": " 2 ",
        "temperature": 5.0,
    }
    assert checks.check_numbers(vals).keys() == {"seed", "ipc", "iterations"}
    assert vals["num_experts"] == 2 and vals["iterations"] is None  # read, or None when bad


def test_page_terms_turn_cli_advice_into_field_labels():
    msg = "class 'x' has only 500 training images; lower ipc (--set ipc=500) or use more data"
    assert checks.page_terms(msg) == (
        "class 'x' has only 500 training images; lower IPC to 500 or use more data"
    )
    assert checks.page_terms("use --set recover.iterations=300") == "use Recover iterations = 300"


def _form(**over) -> dict:
    """The New run form's session values as the quick preset fills them (new_run._fill)."""
    cfg = from_preset("quick").to_dict()
    form = dict(
        nr_preset="quick",
        nr_kind="builtin",
        nr_path="",
        nr_ipc=str(cfg["ipc"]),
        nr_members=list(cfg["squeeze"]["members"]),
        nr_num_experts=str(cfg["recover"]["num_experts"]),
        nr_temperature=float(cfg["recover"]["temperature"]),
        nr_voter=cfg["recover"]["voter"],
        nr_schedule=cfg["recover"]["schedule"],
        nr_bssl=True,
        nr_iterations=str(cfg["recover"]["iterations"]),
        nr_device="cpu",
        nr_seed="0",
        nr_teacher=cfg["relabel"]["teacher"],
        nr_extra="",
        nr_base=None,
    )
    return {**form, **over}


def test_the_form_as_a_whole_gives_a_config_or_its_messages(tmp_path):
    ok = checks.check_form(_form())
    assert ok.errors == {} and ok.cfg.ipc == from_preset("quick").ipc
    assert ok.ipc_note == "the built-in set: 500 images per class, so IPC ≤ 500."
    bad = checks.check_form(_form(nr_ipc="1e3", nr_extra="recover.lr=-1"))
    assert set(bad.errors) >= {"ipc"} and "recover.lr=-1" in bad.overrides
    zip_ = checks.check_form(_form(nr_kind="zip"))
    assert "Drop a zipped image folder" in zip_.errors["dataset"]
    assert zip_.overrides[0] == "squeeze.source=train"  # the shipped committee fits builtin only
    gone = checks.check_form(_form(nr_kind="folder", nr_path=str(tmp_path / "nowhere")))
    assert "does not exist" in gone.errors["dataset"]
