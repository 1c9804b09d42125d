"""The family records (brushpen/families.py) are the one place a model family is described: each
names modules and classes that exist and keep the contract, and the layers read them."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest

from brushpen import families
from brushpen.errors import BadParameter
from brushpen.families import FAMILIES
from brushpen.store import FAMILIES as STORE_FOLDERS, store_root


@pytest.mark.parametrize("name", families.finetunable())
def test_every_trainer_keeps_the_finetune_contract(name: str) -> None:
    fam = FAMILIES[name]
    cls = fam.request_class()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert {"base", "out", "resume"} <= set(fields), f"{cls.__name__} lacks base/out/resume"
    assert callable(getattr(cls, "validate", None)) and not hasattr(cls, "check")
    assert fields["base"].default == fam.default_model   # a request without a base gets the shipped one
    params = list(inspect.signature(fam.finetune()).parameters)
    assert params[:2] == ["req", "progress"]
    assert fam.data_kind in (".zip", ".jsonl") and fam.length_field in fields


@pytest.mark.parametrize("name", families.exportable())
def test_every_exporter_exports(name: str) -> None:
    params = inspect.signature(FAMILIES[name].export_module().export).parameters
    assert {"int8", "student", "progress"} <= set(params)


def test_the_shipped_default_of_each_family_is_in_the_store() -> None:
    for fam in FAMILIES.values():
        if fam.default_model is not None and fam.name != "text":   # the text base is built from PyPI
            assert (store_root() / fam.name / fam.default_model / "card.md").exists(), fam.name
    assert set(STORE_FOLDERS) == set(FAMILIES)


def test_a_family_without_a_capability_says_which_have_it() -> None:
    with pytest.raises(BadParameter, match="gan, text, safety"):
        FAMILIES["diffusers"].request_class()
    with pytest.raises(BadParameter, match="only gan, text, safety"):
        FAMILIES["diffusers"].export_module()
    with pytest.raises(BadParameter, match="unknown family 'foo'"):
        families.family("foo")


def test_the_layers_read_the_records() -> None:
    from brushpen.generators import finetune_jobs, images
    from brushpen.studio_ui.finetune_tab import BASES

    assert sorted(BASES.values()) == sorted(FAMILIES[n].default_model for n in families.finetunable())
    assert images.DEFAULT_MODEL == families.default_model("gan")
    assert finetune_jobs.request_class("safety") is FAMILIES["safety"].request_class()


def test_a_new_family_is_one_record_and_its_package(tmp_path, monkeypatch, capsys) -> None:
    """The toy family (tests/toy_family.py) gets a CLI sub-command and the job store's checks from
    its record alone."""
    from brushpen.cli.main import main
    from brushpen.generators import finetune_jobs

    toy = families.Family("toy", "Toy", default_model="toy-small", trainer="toy_family",
                          request="ToyFinetuneRequest", data_kind=".txt", data_help="a number",
                          length_field="steps")
    monkeypatch.setitem(FAMILIES, "toy", toy)
    monkeypatch.setenv("BRUSHPEN_HOME", str(tmp_path / "home"))
    data = tmp_path / "target.txt"
    data.write_text("3")
    assert main(["finetune", "toy", "--data", str(data), "--out", "three", "--steps", "40", "--scale", "2"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert result["model"] == "toy-small:three" and result["metrics"]["steps"] == 40
    assert abs(result["metrics"]["w"] - 6.0) < 1e-3   # it trained: w went from 0 to the scaled target
    assert "step 40/40" in out.err
    assert set(finetune_jobs.allowed_hyperparameters("toy")) == {"steps", "lr", "scale"}
    with pytest.raises(SystemExit):   # argparse refuses a missing --out, as for the shipped families
        main(["finetune", "toy", "--data", str(data)])
