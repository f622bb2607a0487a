"""registry.yaml schema, validation errors, user registries, list_models."""
from __future__ import annotations

import copy

import pytest
import torch
import yaml

import zoo
from zoo.errors import RegistryError, UnknownModelError
from zoo.registry import SCHEMA_VERSION, TASKS, Registry, default_registry, parse_entry

GOOD = {
    "task": "semantic-segmentation",
    "arch": "deeplabv3",
    "args": {"backbone": "resnet50", "num_classes": 21},
    "paper": {"title": "T", "authors": "A B, C D", "venue": "V", "year": 2017, "arxiv": "1706.05587"},
    "license": "apache-2.0",
    "card": "x.md",
    "input_size": [3, 65, 65],
    "transforms": {"preset": "segmentation", "args": {"mean": [0, 0, 0], "std": [1, 1, 1]}},
    "postprocess": {"preset": "segmentation"},
    "exportable": True,
    "weights": {
        "default": "t1",
        "tags": {"t1": {"hub": {"repo": "org/repo", "revision": "a" * 40, "file": "model.safetensors",
                                "sha256": "b" * 64, "size": 10}, "source": "s", "license": "mit",
                        "metrics": [{"dataset": "VOC", "split": "val", "metric": "mIoU", "value": 1,
                                     "measured": "scripts/evaluate.py"}]}},
    },
}


def _with(path: str, value):
    entry = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = entry
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return entry


# --- the shipped registry -------------------------------------------------------------------------
def test_shipped_registry_validates_and_every_arch_exists():
    reg = default_registry()
    assert len(reg) >= 3
    archs = set(zoo.list_archs())
    for info in reg:
        assert info.task in TASKS
        assert info.arch in archs, f"{info.name}: arch {info.arch!r} is not registered"
        for w in info.weights.values():
            assert w.metrics or w.kind != "hub", f"{info.name}.{w.tag}: published weights must state measured metrics"


def test_shipped_registry_file_is_schema_versioned():
    from importlib import resources

    doc = yaml.safe_load(resources.files("zoo").joinpath("registry.yaml").read_text())
    assert doc["schema_version"] == SCHEMA_VERSION


def test_every_shipped_entry_has_a_minimum_input_size_and_says_why_it_cannot_export():
    for info in default_registry():
        assert info.min_input_size is not None and info.min_input_size >= 16, info.name
        assert info.exportable or (info.export_note and len(info.export_note) > 20), info.name


@pytest.mark.parametrize("name, raw", [
    ("dy-resnet-digits", lambda: torch.zeros(1, 3, 31, 64, dtype=torch.uint8)),
    ("deeplabv2-lsdfn-small", lambda: torch.zeros(2, 3, 64, 20, dtype=torch.uint8)),
    ("flownets-small", lambda: torch.zeros(1, 2, 3, 48, 96, dtype=torch.uint8)),
    ("dfn-moving-mnist", lambda: torch.zeros(1, 10, 1, 8, 8)),
    ("hdfnet-vgg16", lambda: (torch.zeros(1, 3, 16, 40, dtype=torch.uint8), torch.zeros(1, 1, 16, 40, dtype=torch.uint8))),
    ("faster-rcnn-r50-dcn", lambda: [torch.zeros(3, 64, 64), torch.zeros(3, 10, 64)]),
])
def test_the_transforms_refuse_inputs_below_the_entrys_minimum(name, raw):
    from zoo.errors import InputError

    transforms = zoo.get_transforms(name)
    minimum = zoo.model_info(name).min_input_size
    inputs = raw()
    with pytest.raises(InputError, match=f"smaller than the minimum {minimum} x {minimum}"):
        transforms(*inputs) if isinstance(inputs, tuple) else transforms(inputs)


# --- validation errors name the entry and the field ------------------------------------------------
@pytest.mark.parametrize("path,value,field", [
    ("task", "segmentation", "task"),
    ("task", KeyError, "task"),
    ("arch", "zoo.models.deeplab:deeplabv3", "arch"),
    ("args", [1, 2], "args"),
    ("paper.year", "2017", "paper.year"),
    ("paper.arxiv", KeyError, "paper.arxiv"),
    ("input_size", [3, 0, 5], "input_size"),
    ("transforms.preset", KeyError, "transforms.preset"),
    ("exportable", "yes", "exportable"),
    ("export_note", 3, "export_note"),
    ("min_input_size", 0, "min_input_size"),
    ("min_input_size", "32", "min_input_size"),
    ("weights.default", "t2", "weights.default"),
    ("weights.tags.t1.hub.revision", "main", "weights.tags.t1.hub.revision"),
    ("weights.tags.t1.hub.sha256", "B" * 64, "weights.tags.t1.hub.sha256"),
    ("weights.tags.t1.hub.size", 0, "weights.tags.t1.hub.size"),
    ("weights.tags.t1.hub.repo", "no-org", "weights.tags.t1.hub.repo"),
    ("weights.tags.t1.metrics", [{"dataset": "VOC"}], "weights.tags.t1.metrics[0].split"),
    ("colour", "blue", "colour"),
])
def test_invalid_entry_names_entry_and_field(path, value, field):
    with pytest.raises(RegistryError) as err:
        parse_entry("my-model", _with(path, value), "user.yaml")
    msg = str(err.value)
    assert "user.yaml" in msg and "'my-model'" in msg and f"'{field}'" in msg, msg


def test_bad_name_and_schema_version():
    with pytest.raises(RegistryError, match="'name'"):
        parse_entry("My_Model", GOOD)
    with pytest.raises(RegistryError, match="schema_version must be 2"):
        Registry().load_text(yaml.safe_dump({"schema_version": 3, "models": {}}), "f.yaml")
    with pytest.raises(RegistryError, match="not valid YAML"):
        Registry().load_text("models: [", "f.yaml")


def test_a_file_with_one_bad_entry_adds_nothing():
    reg = Registry()
    doc = {"schema_version": 1, "models": {"good-one": GOOD, "bad-one": _with("task", "nope")}}
    with pytest.raises(RegistryError, match="bad-one"):
        reg.load_text(yaml.safe_dump(doc), "f.yaml")
    assert len(reg) == 0


# --- user registries -------------------------------------------------------------------------------
def test_user_registry_file_adds_entries(tmp_path, monkeypatch):
    import zoo.registry as R

    monkeypatch.setattr(R, "_REGISTRY", None)
    path = tmp_path / "mine.yaml"
    entry = _with("weights", {"default": None, "tags": {}})
    path.write_text(yaml.safe_dump({"schema_version": 1, "models": {"my-deeplab": entry}}))
    assert zoo.registry.load(path) == ["my-deeplab"]
    assert "my-deeplab" in zoo.list_models()
    assert zoo.model_info("my-deeplab").source == str(path)
    with pytest.raises(RegistryError, match="already exists"):
        zoo.registry.load(path)
    with pytest.raises(RegistryError, match="cannot read"):
        zoo.registry.load(tmp_path / "missing.yaml")


def test_register_arch_from_code_refuses_silent_override():
    from torch import nn

    fn = lambda **kw: nn.Identity()  # noqa: E731
    zoo.register_arch("test_identity_arch", fn)
    with pytest.raises(ValueError, match="already registered"):
        zoo.register_arch("test_identity_arch", lambda **kw: nn.Identity())
    zoo.register_arch("test_identity_arch", fn)  # same function again is fine
    assert "test_identity_arch" in zoo.list_archs()


# --- lookup ----------------------------------------------------------------------------------------
def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError) as err:
        zoo.model_info("deeplabv3-r5")
    assert "deeplabv3-r50" in str(err.value)


def test_list_models_filters():
    names = zoo.list_models()
    assert names == sorted(names)
    assert set(zoo.list_models("deeplabv3*")) <= set(names)
    assert all(zoo.model_info(n).task == "semantic-segmentation" for n in zoo.list_models(task="semantic-segmentation"))
    assert all(zoo.model_info(n).pretrained for n in zoo.list_models(pretrained=True))
    with pytest.raises(ValueError, match="unknown task"):
        zoo.list_models(task="segmentation")


def test_schema_1_files_still_load_with_hub_fields_in_the_tag():
    v1 = copy.deepcopy(GOOD)
    tag = v1["weights"]["tags"]["t1"]
    tag.update(tag.pop("hub"))  # schema 1: repo, revision, file, sha256, size directly in the tag
    reg = Registry()
    assert reg.load_text(yaml.safe_dump({"schema_version": 1, "models": {"old-one": v1}}), "old.yaml") == ["old-one"]
    w = reg.get("old-one").weights["t1"]
    assert w.kind == "hub" and w.hub.repo == "org/repo" and w.hub.size == 10
    with pytest.raises(RegistryError, match="'papers'"):  # the shared tables are schema 2
        Registry().load_text(yaml.safe_dump({"schema_version": 1, "papers": {}, "models": {}}), "old.yaml")


def test_shared_tables_defaults_and_tag_kinds():
    reg = Registry()
    entry = copy.deepcopy(GOOD)
    del entry["card"]
    entry.update(paper="p1", transforms="seg")
    entry["weights"]["tags"]["t2"] = {"source": "s", "license": "mit", "warm_start": "x-y.t1"}
    doc = {"schema_version": 2, "papers": {"p1": GOOD["paper"]}, "presets": {"seg": GOOD["transforms"]},
           "categories": {"three": {"names": ["a", "b", "c"], "cited_from": "o/r@" + "0" * 40 + ":f"}}, "models": {"x-y": entry}}
    entry["weights"]["tags"]["t1"]["categories"] = "three"
    reg.load_text(yaml.safe_dump(doc), "f.yaml")
    info = reg.get("x-y")
    assert info.card == "x-y.md" and info.paper.arxiv == "1706.05587" and info.transforms.preset == "segmentation"
    assert info.weights["t1"].kind == "hub" and info.weights["t2"].kind == "warm-start"
    for bad, field in ((dict(doc, presets={}), "transforms"), (dict(doc, papers={}), "paper")):
        with pytest.raises(RegistryError, match=f"'{field}'"):
            Registry().load_text(yaml.safe_dump(bad), "f.yaml")
    entry["weights"]["default"] = "t2"
    with pytest.raises(RegistryError, match="warm start"):
        Registry().load_text(yaml.safe_dump(doc), "f.yaml")


@pytest.mark.parametrize("spec,field", [
    ({"upstream": {"url": "ftp://x/y.pth", "converter": "fyu-drn", "cited_from": "c"}}, "upstream.url"),
    ({"upstream": {"url": "https://x/y.pth", "sha256": "xyz", "converter": "fyu-drn", "cited_from": "c"}}, "upstream.sha256"),
    ({"upstream": {"url": "https://x/y.pth", "converter": "no-such", "cited_from": "c"}}, "upstream.converter"),
    ({"manual": {"page": "https://x", "file_name": "a/b.pth", "converter": "fyu-drn"}}, "manual.file_name"),
    ({"manual": {"page": "https://x", "file_name": "b.pth", "converter": "fyu-drn"},
      "warm_start": "a-b.c"}, "warm_start"),
    ({}, "weights.tags.t1"),
    ({"categories": "nope", "hub": GOOD["weights"]["tags"]["t1"]["hub"]}, "categories"),
])
def test_invalid_weights_sources_name_the_field(spec, field):
    entry = copy.deepcopy(GOOD)
    entry["weights"]["tags"]["t1"] = {"source": "s", "license": "mit", **spec}
    with pytest.raises(RegistryError) as err:
        parse_entry("my-model", entry, "user.yaml")
    assert field in str(err.value), str(err.value)


def test_at_least_35_entries_obtain_weights_with_pretrained():
    names = zoo.list_models(pretrained=True)
    assert len(names) >= 35
    for name in ("deeplabv3-r50", "flownetc", "flownetc-lsdfn", "dilation8-context", "dmnet-r101"):
        assert name in names
    assert "hdfnet-vgg16" not in names  # manual downloads are not obtainable by pretrained= alone


# --- YAML: duplicate keys, all-or-nothing user files ----------------------------------------------
def _doc_text(models: dict, **tables) -> str:
    return yaml.safe_dump({"schema_version": 2, **tables, "models": models}, sort_keys=False)


@pytest.mark.parametrize("old,new,key", [
    ("schema_version: 2\n", "schema_version: 2\nschema_version: 2\n", "schema_version"),
    ("  one-model:\n", "  one-model:\n    task: semantic-segmentation\n  one-model:\n", "one-model"),
    ("    license: apache-2.0\n", "    license: apache-2.0\n    license: mit\n", "license"),
    (" sha256: " + "b" * 64 + "\n", " sha256: " + "b" * 64 + "\n            sha256: " + "c" * 64 + "\n", "sha256"),
])
def test_duplicate_keys_at_any_level_name_the_file_key_and_line(old, new, key):
    text = _doc_text({"one-model": GOOD})
    assert text.count(old) == 1
    text = text.replace(old, new)
    assert isinstance(yaml.safe_load(text), dict)  # PyYAML alone: the last value wins, silently
    last = text[:text.index(new) + len(new)].count("\n")  # the line where the key repeats
    first = last - new.count("\n") + 1
    with pytest.raises(RegistryError) as err:
        Registry().load_text(text, "dup.yaml")
    assert str(err.value).startswith(f"dup.yaml, line {last}: duplicate key '{key}' (first at line {first})")


def test_merge_keys_may_still_be_overridden():
    text = ("schema_version: 2\npresets:\n  base: &base {preset: segmentation, args: {mean: [0, 0, 0], std: [1, 1, 1]}}\n"
            "  other:\n    <<: *base\n    preset: segmentation\n" + _doc_text({"m-one": GOOD}).split("\n", 1)[1])
    reg = Registry()
    assert reg.load_text(text, "merge.yaml") == ["m-one"]
    assert reg.tables.presets["other"]["preset"] == "segmentation"


def test_user_registry_files_load_all_or_nothing(user_registry, tmp_path):
    import zoo.registry as R

    before, tables = zoo.list_models(), R.default_registry().tables
    good = _with("weights", {"default": None, "tags": {}})
    path = tmp_path / "mine.yaml"
    # an invalid entry after valid ones (and a new papers row): nothing is added
    models = {"mine-a": good, "mine-b": dict(good, paper="my-paper"), "mine-c": _with("input_size", [3, 0])}
    path.write_text(_doc_text(models, papers={"my-paper": GOOD["paper"]}))
    with pytest.raises(RegistryError, match="'mine-c'"):
        R.load(path)
    assert zoo.list_models() == before and R.default_registry().tables is tables
    # a name clash with a shipped entry, before or after new ones: nothing is added, the shipped one stays
    shipped = before[0]
    for models in ({"mine-a": good, shipped: good}, {shipped: good, "mine-a": good}):
        path.write_text(_doc_text(models))
        with pytest.raises(RegistryError, match=f"{shipped!r} already exists"):
            R.load(path)
        assert zoo.list_models() == before and zoo.model_info(shipped).source == "registry.yaml"
    # the same name twice in one file
    path.write_text(_doc_text({"mine-a": good}) + "  mine-a:\n    task: semantic-segmentation\n")
    with pytest.raises(RegistryError, match="duplicate key 'mine-a'"):
        R.load(path)
    assert zoo.list_models() == before
    path.write_text(_doc_text({"mine-a": good, "mine-b": good}))
    assert R.load(path) == ["mine-a", "mine-b"] and zoo.list_models() == sorted([*before, "mine-a", "mine-b"])


@pytest.mark.parametrize("text,match", [
    ("schema_version: true\nmodels: {}\n", "schema_version must be 2"),
    ("schema_version: 2.0\nmodels: {}\n", "schema_version must be 2"),
    ("schema_version: 2\nmodels: {}\n1: x\nextra: y\n", r"unknown top-level field\(s\) \['1', 'extra'\]"),
    ("schema_version: !!int two\n", "not valid YAML: a value cannot be read"),
    ("schema_version: " + "9" * 5000 + "\n", "not valid YAML: a value cannot be read"),
    ("models: " + "[" * 5000, "not valid YAML"),
    ("schema_version: 2\x00\n", "not valid YAML"),
])
def test_unreadable_documents_are_registry_errors(text, match):
    with pytest.raises(RegistryError, match=match) as err:
        Registry().load_text(text, "f.yaml")
    assert str(err.value).startswith("f.yaml")
