"""Config: presets build, round trip, typed overrides, and errors that name the fix."""

import pytest

from cvdd.config import PRESETS, RunConfig, config_hash, from_preset
from cvdd.utils import CvddError


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_and_round_trips(name):
    cfg = from_preset(name)
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg and config_hash(again) == config_hash(cfg)


def test_overrides_are_typed():
    cfg = from_preset(
        "quick",
        [
            "recover.iterations=7",
            "recover.augment=false",
            "seed=3",
            "squeeze.members=resnet18,resnet50",
            'prior.values={"a": 1}',
            "recover.temperature=2.5",
        ],
    )
    assert cfg.recover.iterations == 7 and cfg.recover.augment is False and cfg.seed == 3
    assert cfg.squeeze.members == ("resnet18", "resnet50") and cfg.prior.values == {"a": 1}
    assert cfg.recover.temperature == 2.5 and cfg.method == "cvdd"
    assert (
        from_preset("quick", ["squeeze.members=resnet18", "recover.num_experts=1"]).method
        == "sre2l++"
    )


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["recover.foo=1"], "valid keys"),
        (["nosection.x=1"], "unknown config"),
        (["ipc=0"], "ipc must be >= 1"),
        (["ipc=-3"], "ipc must be >= 1"),
        (["recover.num_experts=9"], "num_experts"),
        (["recover.voter=loud"], "choose from prior, equal, random"),
        (["recover.iterations=abc"], "cannot read"),
        (["relabel.teacher=vgg"], "not a committee member"),
        (["prior.source=user"], "prior.values"),
        (["justtext"], "section.key=value"),
    ],
)
def test_bad_values_name_the_fix(overrides, needle):
    with pytest.raises(CvddError, match=needle):
        from_preset("quick", overrides)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["ipc=0"], "ipc"),
        (["recover.num_experts=9"], "recover.num_experts"),
        (["recover.voter=loud"], "recover.voter"),
        (["recover.iterations=abc"], "recover.iterations"),
        (["recover.iterations=-1"], "recover.iterations"),
        (["recover.temperature=0"], "recover.temperature"),
        (["recover.lr=nan"], "recover.lr"),
        (["relabel.teacher=vgg"], "relabel.teacher"),
        (["squeeze.members=resnet18,resnet18"], "squeeze.members"),
        (["relabel.batch_size=1"], "relabel.batch_size"),
        (["recover.foo=1"], "recover.foo"),
        (["justtext"], None),
    ],
)
def test_errors_carry_the_config_key(overrides, field):
    # the New run form puts the message next to the input for this key, without reading the text
    with pytest.raises(CvddError) as info:
        from_preset("quick", overrides)
    assert info.value.field == field


def test_from_dict_errors_carry_the_key():
    with pytest.raises(CvddError) as info:
        RunConfig.from_dict({"recover": {"nope": 1}})
    assert info.value.field == "recover.nope"
    assert CvddError("plain").field is None and str(CvddError("m", field="ipc")) == "m"


def test_presets_are_plain_data():
    import cvdd.presets as presets

    assert presets.PRESETS["quick"]["name"] == "quick" and "from_preset" not in vars(presets)


def test_unknown_preset_lists_choices():
    with pytest.raises(CvddError, match="quick"):
        from_preset("nope")


def test_config_loads_without_torch():
    import subprocess
    import sys

    code = (
        "import sys, cvdd.config, cvdd.runs, cvdd.jobs, cvdd.utils; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_json_with_the_old_groups_per_step_key_resumes():
    """An older run's config.json spells recover.groups_per_wave as groups_per_step: it loads,
    and its hash is the one that older cvdd wrote into the run's checkpoints."""
    import hashlib
    import json

    old = RunConfig().to_dict()
    del old["recover"]["groups_per_wave"]
    old["recover"]["groups_per_step"] = 3
    cfg = RunConfig.from_dict(old)
    assert cfg.recover.groups_per_wave == 3 and "groups_per_step" in old["recover"]
    written = hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    assert config_hash(cfg) == written
    with pytest.raises(CvddError, match="unknown config key"):  # new runs use the new name
        RunConfig().replace(["recover.groups_per_step=2"])
