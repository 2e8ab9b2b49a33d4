"""The shared lookup and serialization code, tested on a throwaway kind defined here."""

import json

import pytest

from layers._registry import Configurable, Registry, did_you_mean


class Shape(Configurable):
    def __call__(self):
        raise NotImplementedError


class Polygon(Shape):
    def __init__(self, sides=3, label="p"):
        self.sides = sides
        self.label = label

    def get_config(self):
        return {"sides": self.sides, "label": self.label}


class Circle(Shape):
    pass


class Unlisted(Shape):
    pass


SHAPES = Registry("shape", Shape, {"polygon": Polygon, "circle": Circle}, example="circle")
ITEMS = Registry("item", Shape, {"circle": Circle}, example="circle", article="an")


@pytest.mark.parametrize(
    ("name", "cls"),
    [("polygon", Polygon), ("Polygon", Polygon), ("circle", Circle), ("Circle", Circle)],
)
def test_class_for_finds_snake_and_class_names(name, cls):
    assert SHAPES.class_for(name) is cls
    assert type(SHAPES.get(name)) is cls


def test_get_builds_named_classes_with_defaults():
    assert SHAPES.get("polygon").get_config() == {"sides": 3, "label": "p"}


def test_unknown_name_lists_snake_then_class_names():
    with pytest.raises(ValueError) as info:
        SHAPES.class_for("hexagon")
    assert str(info.value) == (
        "Unknown shape 'hexagon'. Expected one of polygon, circle (or the class names Polygon, Circle)."
    )


@pytest.mark.parametrize(("typo", "hint"), [("polygn", "polygon"), ("Circel", "Circle"), ("circl", "circle")])
def test_unknown_name_suggests_the_closest(typo, hint):
    with pytest.raises(ValueError, match=rf"^Unknown shape '{typo}'\..* Did you mean '{hint}'\?$"):
        SHAPES.get(typo)


def test_did_you_mean():
    assert did_you_mean("rleu", ["relu", "gelu"]) == " Did you mean 'relu'?"
    assert did_you_mean("zzzz", ["relu", "gelu"]) == ""
    assert did_you_mean("relu", iter(["relu"])) == " Did you mean 'relu'?"


@pytest.mark.parametrize("shape", [Polygon(5, "pentagon"), Circle()], ids=["polygon", "circle"])
def test_serialize_round_trips_through_json(shape):
    config = json.loads(json.dumps(SHAPES.serialize(shape)))
    assert config == {"class_name": type(shape).__name__, "config": shape.get_config()}
    rebuilt = SHAPES.deserialize(config)
    assert type(rebuilt) is type(shape)
    assert rebuilt.get_config() == shape.get_config()
    assert repr(SHAPES.get(config)) == repr(shape)


def test_deserialize_accepts_snake_names_and_a_missing_config():
    assert type(SHAPES.deserialize({"class_name": "circle"})) is Circle


def test_repr_shows_the_config():
    assert repr(Polygon(4, "square")) == "Polygon(sides=4, label='square')"
    assert repr(Circle()) == "Circle()"


def test_from_config_passes_the_config_to_the_constructor():
    shape = Polygon.from_config({"sides": 6})
    assert type(shape) is Polygon
    assert shape.get_config() == {"sides": 6, "label": "p"}


def test_get_passes_through_none_instances_and_callables():
    shape = Circle()
    assert SHAPES.get(None) is None
    assert SHAPES.get(shape) is shape
    assert SHAPES.get(len) is len
    assert type(SHAPES.get(Unlisted)) is Unlisted


ERRORS = [
    (
        "from_config_unknown_key",
        lambda: Polygon.from_config({"sides": 4, "colour": "red"}),
        ValueError,
        r"^Polygon\.from_config received unknown keys \['colour'\]; expected keys among \['sides', 'label'\]\.$",
    ),
    ("from_config_not_dict", lambda: Circle.from_config([1]), TypeError, r"^Circle\.from_config expects a dict.*\[1\]"),
    (
        "get_bad_type",
        lambda: SHAPES.get(3.5),
        TypeError,
        r"^Cannot interpret 3\.5 of type float as a shape\. "
        r"Expected None, a name such as 'circle', a Shape, a config dict or a callable\.$",
    ),
    ("get_bad_type_article", lambda: ITEMS.get(3.5), TypeError, r"as an item\. .* an Shape, a config dict"),
    ("serialize_non_instance", lambda: SHAPES.serialize(len), TypeError, r"^serialize expects a Shape, received .*"),
    (
        "serialize_article",
        lambda: ITEMS.serialize(1),
        TypeError,
        r"^serialize expects an Shape, received 1 of type int",
    ),
    ("missing_class_name", lambda: SHAPES.get({"config": {}}), ValueError, r"^A shape config needs a string"),
    ("class_name_not_str", lambda: ITEMS.get({"class_name": 1}), ValueError, r"^An item config needs a string"),
    (
        "config_not_dict",
        lambda: SHAPES.get({"class_name": "Circle", "config": [1]}),
        ValueError,
        r"^A shape config needs a dict 'config', received \[1\] in ",
    ),
    ("unlisted_class_name", lambda: SHAPES.get({"class_name": "Unlisted"}), ValueError, r"^Unknown shape 'Unlisted'"),
]


@pytest.mark.parametrize(("make", "error", "match"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_name_the_bad_value(make, error, match):
    with pytest.raises(error, match=match):
        make()
