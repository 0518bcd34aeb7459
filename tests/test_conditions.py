import json

import numpy as np
import pytest

from synth.conditions import (
    ConditionError,
    ConditionSpace,
    Factor,
    KNOWN_LEVELS,
    parse_cond_assignments,
    parse_tie,
)


@pytest.fixture
def space():
    return ConditionSpace.default(["disease", "age"])


def test_default_space_orders_and_widths(space):
    assert space.names == ("disease", "age")
    assert space.factor("age").levels == KNOWN_LEVELS["age"]  # not alphabetical
    assert space.factor("age").levels[0] == "infant"
    assert space.c_dim == 9
    assert space.embed_dims == (256, 256)
    assert space.factor("disease").control == "unaffected"
    assert space.factor("age").ordinal and not space.factor("disease").ordinal


def test_uneven_embed_split():
    s = ConditionSpace.from_levels({"a": ["x", "y"], "b": ["u", "v"], "c": ["p", "q"]})
    assert s.embed_dims == (171, 171, 170) and s.embed_total == 512


def test_encode_decode_roundtrip(space):
    for d in KNOWN_LEVELS["disease"]:
        for a in KNOWN_LEVELS["age"]:
            v = space.encode({"disease": d, "age": a})
            assert v.sum() == 2 and v.dtype == np.float32
            assert space.decode(v) == {"disease": d, "age": a}
            assert space.is_hard(v)
    v = space.encode({"disease": "syndrome_b", "age": "child"})
    assert v[1] == 1 and v[4 + 1] == 1


def test_encode_errors(space):
    with pytest.raises(ConditionError, match="unknown level 'toddler' for factor 'age'"):
        space.encode({"disease": "syndrome_a", "age": "toddler"})
    with pytest.raises(ConditionError, match="missing factor"):
        space.encode({"disease": "syndrome_a"})
    with pytest.raises(ConditionError, match="unknown factor"):
        space.encode({"disease": "syndrome_a", "age": "child", "sex": "f"})


def test_soft_vectors(space):
    v = space.encode_soft({"disease": {"syndrome_a": 0.55, "other_condition": 0.45}, "age": "child"})
    blk = v[space.block("disease")]
    assert blk.sum() == pytest.approx(1.0)
    assert blk[0] == pytest.approx(0.55) and blk[2] == pytest.approx(0.45)
    assert not space.is_hard(v)
    assert space.decode(v) == {"disease": "syndrome_a", "age": "child"}
    soft = space.decode_soft(v)
    assert soft["disease"] == pytest.approx({"syndrome_a": 0.55, "other_condition": 0.45})
    mixed = space.mix({"disease": "syndrome_a", "age": "infant"}, {"disease": "syndrome_b", "age": "infant"}, 0.75)
    assert mixed[0] == pytest.approx(0.75) and mixed[1] == pytest.approx(0.25)
    assert "0.75 syndrome_a + 0.25 syndrome_b" in space.describe(mixed)


@pytest.mark.parametrize(
    "mix, msg",
    [
        ({"disease": {"syndrome_a": 0.5, "syndrome_b": 0.4}, "age": "child"}, "sum to 0.9"),
        ({"disease": {"syndrome_a": 1.5, "syndrome_b": -0.5}, "age": "child"}, ">= 0"),
        ({"disease": {"nope": 1.0}, "age": "child"}, "unknown level"),
    ],
)
def test_soft_errors(space, mix, msg):
    with pytest.raises(ConditionError, match=msg):
        space.encode_soft(mix)


def test_validate_shape_and_hardness(space):
    with pytest.raises(ConditionError, match="shape"):
        space.validate(np.zeros(3))
    v = space.mix({"disease": "syndrome_a", "age": "infant"}, {"disease": "syndrome_b", "age": "infant"}, 0.5)
    with pytest.raises(ConditionError, match="one-hot"):
        space.validate(v, soft=False)


def test_tied_levels():
    s = ConditionSpace.default(["stage"]).with_ties(parse_tie("stage:intermediate=early+late"))
    t = s.factor("stage").tie_matrix()
    onehot = s.encode({"stage": "intermediate"})
    # The tied level's effective mix is the mean of its sources: with any embedding table the
    # tied embedding equals the mean of the early and late rows.
    table = np.random.default_rng(0).normal(size=(3, 7)).astype(np.float32)
    eff = onehot @ t @ table
    np.testing.assert_allclose(eff, 0.5 * (table[0] + table[2]), rtol=1e-6)
    np.testing.assert_allclose(s.encode({"stage": "early"}) @ t @ table, table[0])
    assert s.tie_matrix().shape == (3, 3)


def test_tie_errors():
    with pytest.raises(ConditionError, match="expected FACTOR:LEVEL"):
        parse_tie("stage-intermediate")
    s = ConditionSpace.default(["stage"])
    with pytest.raises(ConditionError, match="not a level"):
        s.with_ties({"stage": {"intermediate": ["early", "latest"]}})
    with pytest.raises(ConditionError, match="itself tied"):
        Factor("x", ("a", "b", "c"), ties={"a": ("b",), "b": ("c",)})
    with pytest.raises(ConditionError, match="unknown factor"):
        s.with_ties({"age": {"child": ["infant"]}})


def test_json_and_yaml_roundtrip(tmp_path):
    s = ConditionSpace.from_levels(
        {"disease": ["ws", "22q", "control", "unaffected"], "age": KNOWN_LEVELS["age"]},
        embed_dims=[128, 384],
        ties={"age": {"adolescent": ["child", "young_adult"]}},
    )
    assert ConditionSpace.from_json(s.to_json()) == s
    for name in ("space.yaml", "space.json"):
        s.save(tmp_path / name)
        assert ConditionSpace.load(tmp_path / name) == s
    d = json.loads(s.to_json())
    assert d["factors"][0]["levels"] == ["ws", "22q", "control", "unaffected"]  # order kept
    assert d["factors"][1]["ties"] == {"adolescent": ["child", "young_adult"]}


def test_schema_errors(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("factors: [{name: age, levels: [a, a]}]\n")
    with pytest.raises(ConditionError, match=r"bad.yaml: factor 'age' repeats level\(s\) a"):
        ConditionSpace.load(p)
    p.write_text("factors: [ {name: age\n")
    with pytest.raises(ConditionError, match="bad.yaml: not a valid condition schema"):
        ConditionSpace.load(p)
    with pytest.raises(ConditionError, match="cannot read"):
        ConditionSpace.load(tmp_path / "missing.yaml")
    with pytest.raises(ConditionError, match="no known levels for factor"):
        ConditionSpace.default(["colour"])


def test_cells_and_affected(space):
    cells = space.cells()
    assert len(cells) == 20 and cells[0] == ("syndrome_a", "infant") and cells[-1] == ("unaffected", "older_adult")
    assert space.is_affected({"disease": "syndrome_a", "age": "child"})
    assert not space.is_affected({"disease": "unaffected", "age": "child"})


def test_parse_cond_assignments():
    assert parse_cond_assignments("disease=syndrome_a, age=child") == {"disease": "syndrome_a", "age": "child"}
    with pytest.raises(ConditionError):
        parse_cond_assignments("disease")
    with pytest.raises(ConditionError, match="twice"):
        parse_cond_assignments("age=child,age=infant")
