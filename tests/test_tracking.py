"""Tracking of variables and sublayers: attributes, containers, order, locking, paths."""

import gc
import weakref

import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
from layers import Dense, Layer, Sequential
from layers._base import _ownership
from layers._base._tracking import TrackedDict, TrackedList, contains_state, iter_state, unique
from tests._layers_for_tests import Linear


def make_variable(name):
    return dp.Variable(jnp.zeros(()), name=name)


class Holder(Layer):
    def __init__(self):
        super().__init__(name="holder")
        self.first = make_variable("first")
        self.group = [make_variable("in_list"), {"deep": make_variable("in_dict")}]
        self.pair = (make_variable("in_tuple"), Linear(2, name="tuple_layer"))
        self.table = {"sub": Linear(2, name="dict_layer")}
        self.last = make_variable("last")


def test_attributes_and_containers_are_tracked_in_creation_order():
    holder = Holder()
    assert [v.name for v in holder.variables] == ["first", "in_list", "in_dict", "in_tuple", "last"]
    assert [layer.name for layer in holder._flatten_layers(include_self=False)] == ["tuple_layer", "dict_layer"]
    assert [v.path for v in holder.variables][:2] == ["holder/first", "holder/in_list"]


def test_later_appends_and_setitems_are_tracked():
    holder = Holder()
    assert isinstance(holder.group, TrackedList) and isinstance(holder.table, TrackedDict)
    holder.group.append(make_variable("appended"))
    holder.group[1]["deeper"] = make_variable("set_in_nested_dict")
    holder.table["another"] = Linear(2, name="another")
    holder.group.extend([make_variable("extended")])
    names = [v.name for v in holder.variables]
    assert names[-3:] == ["appended", "set_in_nested_dict", "extended"]
    assert holder.table["another"].path == "holder/another"


def test_sublayer_variables_appear_after_building_and_weights_list_trainable_first():
    class Parent(Layer):
        def __init__(self):
            super().__init__(name="parent")
            self.counter = dp.Variable(jnp.zeros((), jnp.int32), trainable=False, name="counter")
            self.dense = Linear(2, name="dense")

        def call(self, x):
            return self.dense(x)

    parent = Parent()
    assert [v.name for v in parent.weights] == ["counter"]
    parent(jnp.ones((1, 3)))
    assert [v.path for v in parent.weights] == ["parent/dense/kernel", "parent/dense/bias", "parent/counter"]
    assert [v.path for v in parent.variables] == ["parent/counter", "parent/dense/kernel", "parent/dense/bias"]


def test_shared_layers_and_variables_count_once_and_keep_their_first_parent():
    shared = Linear(2, name="shared")

    class Twice(Layer):
        def __init__(self):
            super().__init__(name="twice")
            self.a = shared
            self.b = shared
            self.more = [shared]

        def call(self, x):
            return self.b(self.a(x))

    model = Twice()
    model(jnp.ones((1, 2)))
    assert len(model.weights) == 2 and shared.path == "twice/shared"


def test_deleting_an_attribute_untracks_its_state():
    holder = Holder()
    del holder.last
    assert "last" not in [v.name for v in holder.variables]


def test_locked_containers_refuse_new_state():
    class Built(Layer):
        def __init__(self):
            super().__init__(name="built_layer")
            self.items = []

        def call(self, x):
            return x

    layer = Built()
    layer(jnp.ones(1))
    layer.items.append(3)  # plain values are fine
    with pytest.raises(ValueError, match="'built_layer' is already built"):
        layer.items.append(make_variable("late"))
    with pytest.raises(ValueError, match="already built"):
        layer.items.insert(0, Layer())
    assert layer.items == [3]


def test_helpers():
    variable, layer = make_variable("v"), Layer()
    structure = {"a": [variable, (1, layer)], "b": "text"}
    assert list(iter_state(structure)) == [variable, layer]
    assert contains_state(structure) and not contains_state([1, "x", {"k": 2.0}])
    assert unique(iter([variable, layer, variable])) == [variable, layer]
    cyclic = []
    cyclic.append(cyclic)
    assert list(iter_state(cyclic)) == []


# ---------------------------------------------------------------- removal follows the containers


class Bag(Layer):
    """Variables and layers in a list, a dict and plain attributes."""

    def __init__(self):
        super().__init__(name="bag")
        self.items = [make_variable(f"v{index}") for index in range(4)]
        self.table = {"a": make_variable("ta"), "b": Linear(2, name="tb"), "c": make_variable("tc")}
        self.alone = make_variable("alone")
        self.sub = Linear(2, name="sub")


def _expected_names(bag):
    """The Keras rule written out: what the attributes hold right now, in attribute order."""
    names = []
    for value in (*bag.items, *bag.table.values(), getattr(bag, "alone", None)):
        if isinstance(value, dp.Variable):
            names.append(value.name)
    return names


def _layer_names(bag):
    candidates = [*bag.table.values(), getattr(bag, "sub", None)]
    return [value.name for value in candidates if isinstance(value, Layer)]


@pytest.mark.parametrize(
    ("remove", "variables", "sublayers"),
    [
        pytest.param(
            lambda bag: bag.items.pop(), ["v0", "v1", "v2", "ta", "tc", "alone"], ["tb", "sub"], id="list_pop"
        ),
        pytest.param(
            lambda bag: bag.items.pop(0), ["v1", "v2", "v3", "ta", "tc", "alone"], ["tb", "sub"], id="list_pop_0"
        ),
        pytest.param(
            lambda bag: bag.items.__delitem__(1), ["v0", "v2", "v3", "ta", "tc", "alone"], ["tb", "sub"], id="list_del"
        ),
        pytest.param(
            lambda bag: bag.items.__delitem__(slice(0, 2)),
            ["v2", "v3", "ta", "tc", "alone"],
            ["tb", "sub"],
            id="list_del_slice",
        ),
        pytest.param(
            lambda bag: bag.items.remove(bag.items[2]),
            ["v0", "v1", "v3", "ta", "tc", "alone"],
            ["tb", "sub"],
            id="list_remove",
        ),
        pytest.param(
            lambda bag: bag.items.__setitem__(slice(1, 3), []),
            ["v0", "v3", "ta", "tc", "alone"],
            ["tb", "sub"],
            id="list_slice_assign",
        ),
        pytest.param(
            lambda bag: bag.items.__setitem__(0, "replaced"),
            ["v1", "v2", "v3", "ta", "tc", "alone"],
            ["tb", "sub"],
            id="list_setitem",
        ),
        pytest.param(lambda bag: bag.items.clear(), ["ta", "tc", "alone"], ["tb", "sub"], id="list_clear"),
        pytest.param(lambda bag: bag.items.__imul__(0), ["ta", "tc", "alone"], ["tb", "sub"], id="list_imul"),
        pytest.param(
            lambda bag: bag.table.__delitem__("a"),
            ["v0", "v1", "v2", "v3", "tc", "alone"],
            ["tb", "sub"],
            id="dict_del",
        ),
        pytest.param(
            lambda bag: bag.table.pop("b"), ["v0", "v1", "v2", "v3", "ta", "tc", "alone"], ["sub"], id="dict_pop"
        ),
        pytest.param(
            lambda bag: bag.table.popitem(), ["v0", "v1", "v2", "v3", "ta", "alone"], ["tb", "sub"], id="dict_popitem"
        ),
        pytest.param(lambda bag: bag.table.clear(), ["v0", "v1", "v2", "v3", "alone"], ["sub"], id="dict_clear"),
        pytest.param(
            lambda bag: bag.table.__setitem__("c", 3.0),
            ["v0", "v1", "v2", "v3", "ta", "alone"],
            ["tb", "sub"],
            id="dict_setitem",
        ),
        pytest.param(
            lambda bag: bag.table.update(a=None),
            ["v0", "v1", "v2", "v3", "tc", "alone"],
            ["tb", "sub"],
            id="dict_update",
        ),
        pytest.param(
            lambda bag: bag.table.__ior__({"b": None}),
            ["v0", "v1", "v2", "v3", "ta", "tc", "alone"],
            ["sub"],
            id="dict_ior",
        ),
        pytest.param(
            lambda bag: delattr(bag, "alone"),
            ["v0", "v1", "v2", "v3", "ta", "tc"],
            ["tb", "sub"],
            id="delattr_variable",
        ),
        pytest.param(
            lambda bag: setattr(bag, "alone", None),
            ["v0", "v1", "v2", "v3", "ta", "tc"],
            ["tb", "sub"],
            id="setattr_variable",
        ),
        pytest.param(
            lambda bag: delattr(bag, "sub"), ["v0", "v1", "v2", "v3", "ta", "tc", "alone"], ["tb"], id="delattr_layer"
        ),
        pytest.param(
            lambda bag: setattr(bag, "sub", "gone"),
            ["v0", "v1", "v2", "v3", "ta", "tc", "alone"],
            ["tb"],
            id="setattr_layer",
        ),
        pytest.param(
            lambda bag: setattr(bag, "items", []), ["ta", "tc", "alone"], ["tb", "sub"], id="setattr_container"
        ),
    ],
)
def test_removing_state_from_a_container_or_attribute_untracks_it(remove, variables, sublayers):
    # Every variable of the bag is a zero scalar: a removal that compared by value would drop the wrong one.
    bag = Bag()
    remove(bag)
    assert [v.name for v in bag.variables] == variables == _expected_names(bag)
    assert [layer.name for layer in bag._flatten_layers(include_self=False)] == sublayers == _layer_names(bag)


def test_removed_layers_leave_weights_and_count_params_and_become_top_level():
    class Stack(Layer):
        def __init__(self):
            super().__init__(name="stack")
            self.blocks = [Linear(3, name="b0"), Linear(3, name="b1")]
            self.head = Linear(1, name="head")

        def call(self, x):
            for block in self.blocks:
                x = block(x)
            return self.head(x)

    stack = Stack()
    stack(jnp.ones((1, 3)))
    assert stack.count_params() == 2 * (3 * 3 + 3) + (3 + 1)
    removed = stack.blocks.pop()
    assert stack.count_params() == (3 * 3 + 3) + (3 + 1)
    assert removed.path == "b1" and [v.path for v in removed.weights] == ["b1/kernel", "b1/bias"]
    del stack.head
    assert stack.count_params() == 3 * 3 + 3
    assert [v.path for v in stack.weights] == ["stack/b0/kernel", "stack/b0/bias"]


def test_state_still_held_elsewhere_stays_tracked():
    class Twice(Layer):
        def __init__(self):
            super().__init__(name="twice")
            self.shared = make_variable("shared")
            self.dense = Linear(2, name="dense")
            self.more = [self.shared, self.dense]

    twice = Twice()
    twice.more.clear()
    assert [v.name for v in twice.variables] == ["shared"] and twice.dense.path == "twice/dense"
    del twice.shared
    assert twice.variables == []


def test_add_weight_variables_without_an_attribute_stay_tracked():
    layer = Layer(name="plain")
    kernel = layer.add_weight(shape=(2,), name="kernel")
    layer.note = [1, 2]
    layer.note.pop()
    assert layer.variables == [kernel]


# ---------------------------------------------------------------- cycles and re-parenting


def test_two_layers_that_reference_each_other_raise_and_change_nothing():
    a, b = Layer(name="cycle_a"), Layer(name="cycle_b")
    a.other = b
    message = r"Layer 'cycle_b' cannot track layer 'cycle_a'.*'cycle_a' already contains 'cycle_b'.*cycle"
    with pytest.raises(ValueError, match=message):
        b.other = a
    assert not hasattr(b, "other") and a.path == "cycle_a" and b.path == "cycle_a/cycle_b"
    b.items = []
    with pytest.raises(ValueError, match=message):
        b.items.append(a)
    with pytest.raises(ValueError, match=message):
        b.items.extend([Layer(name="innocent"), a])
    with pytest.raises(ValueError, match=message):
        b.table = {"x": a}
    assert b.items == [] and not hasattr(b, "table") and b._flatten_layers(include_self=False) == []
    c = Layer(name="cycle_c")
    b.c = c
    with pytest.raises(ValueError, match=r"Layer 'cycle_c' cannot track layer 'cycle_a'"):
        c.back = a
    assert a.path == "cycle_a" and c.path == "cycle_a/cycle_b/cycle_c"


def test_a_second_reference_inside_the_same_model_keeps_the_first_parent():
    class Model(Layer):
        def __init__(self):
            super().__init__(name="model")
            self.encoder = Layer(name="encoder")
            self.encoder.norm = Layer(name="norm")
            self.final_norm = self.encoder.norm

    model = Model()
    assert model.final_norm.path == "model/encoder/norm"
    assert [layer.path for layer in model._flatten_layers()] == ["model", "model/encoder", "model/encoder/norm"]


def test_a_layer_taken_by_another_model_follows_it():
    first, second = Layer(name="first"), Layer(name="second")
    first.dense = Linear(2, name="dense")
    first.dense(jnp.ones((1, 2)))
    second.dense = first.dense
    assert first.dense.path == "second/dense"
    assert [v.path for v in first.dense.weights] == ["second/dense/kernel", "second/dense/bias"]


def test_failed_container_operations_change_nothing():
    bag = Bag()
    before = [v.name for v in bag.variables]
    extra = make_variable("extra")
    with pytest.raises(ValueError, match="extended slice of size 2"):
        bag.items[0:4:2] = [extra]
    with pytest.raises(IndexError):
        bag.items[10] = extra
    assert [v.name for v in bag.variables] == before and extra.path == "extra"
    bag.build()  # locked from here on
    with pytest.raises(ValueError, match="'bag' is already built"):
        bag.items[0] = extra
    with pytest.raises(ValueError, match="already built"):
        bag.table.update(a=1.0, z=extra)
    assert [v.name for v in bag.variables] == before and bag.table["a"].name == "ta"
    bag.items[0] = None  # removing is allowed after build
    assert [v.name for v in bag.variables] == before[1:]


def test_a_tied_layer_passed_to_a_sibling_keeps_its_path_in_the_model():
    class TiedHead(Layer):
        def __init__(self, embedding, **kwargs):
            super().__init__(**kwargs)
            self.embedding = embedding  # tracked here first, while the head is not in the model yet

    class LanguageModel(Layer):
        def __init__(self):
            super().__init__(name="lm")
            self.embedding = Linear(2, name="embedding")
            self.head = TiedHead(self.embedding, name="head")

    model = LanguageModel()
    assert model.embedding.path == "lm/embedding" and model.head.path == "lm/head"
    assert [layer.path for layer in model.sublayers()] == ["lm/embedding", "lm/head"]


# ---------------------------------------------------------------- finding state in a container compares identity


class Zeros(Layer):
    """Three variables with equal values: `==` between them is elementwise True."""

    def __init__(self):
        super().__init__(name="zeros")
        self.vs = [make_variable(f"v{index}") for index in range(3)]


def test_remove_finds_the_very_variable_not_an_equal_one():
    layer = Zeros()
    layer.vs.remove(layer.vs[2])
    assert [v.name for v in layer.vs] == ["v0", "v1"]
    assert [v.name for v in layer.variables] == ["v0", "v1"]
    layer.vs.remove(layer.vs[1])
    assert [v.name for v in layer.variables] == ["v0"]


def test_remove_of_a_variable_with_another_shape_does_not_compare_values():
    layer = Layer(name="shapes")
    layer.vs = [dp.Variable(jnp.zeros(3), name="a"), dp.Variable(jnp.ones(4), name="b")]
    layer.vs.remove(layer.vs[1])  # `a == b` would be a broadcasting TypeError
    assert [v.name for v in layer.variables] == ["a"]


def test_remove_of_state_the_list_does_not_hold_is_a_value_error_that_changes_nothing():
    layer = Zeros()
    stranger = make_variable("stranger")  # equal in value to every item, but not one of them
    with pytest.raises(ValueError, match=r"'stranger'.*is not in the list"):
        layer.vs.remove(stranger)
    with pytest.raises(ValueError, match=r"'stranger'.*is not in the list"):
        layer.vs.index(stranger)
    assert [v.name for v in layer.variables] == ["v0", "v1", "v2"]


def test_in_index_and_count_compare_state_by_identity_and_other_values_by_equality():
    layer = Zeros()
    layer.vs.extend([3, (4, "x")])
    first, last = layer.vs[0], layer.vs[2]
    assert last in layer.vs and make_variable("equal") not in layer.vs
    assert layer.vs.index(last) == 2 and layer.vs.index(first) == 0
    assert layer.vs.count(first) == 1 and layer.vs.count(make_variable("equal")) == 0
    assert 3.0 in layer.vs and layer.vs.index(3) == 3 and layer.vs.count(3) == 1  # plain values: ==
    assert layer.vs.index((4, "x")) == 4
    layer.vs.remove(3)  # the variables before it are skipped, not compared
    assert [v.name for v in layer.variables] == ["v0", "v1", "v2"] and layer.vs[3:] == [(4, "x")]
    with pytest.raises(ValueError, match="is not in the list"):
        layer.vs.remove(7)


def test_tuples_holding_state_are_found_by_the_identity_of_their_state():
    layer = Zeros()
    pair = (layer.vs[1], 1)
    layer.pairs = [(layer.vs[0], 1), pair]
    assert layer.pairs.index((layer.vs[1], 1)) == 1  # an equal tuple of the same variables
    layer.pairs.remove((layer.vs[1], 1))
    assert len(layer.pairs) == 1 and layer.pairs[0][0] is layer.vs[0]
    assert (make_variable("other"), 1) not in layer.pairs


# ---------------------------------------------------------------- owners that are gone


def test_a_throwaway_container_that_is_collected_gives_the_layers_back_to_their_model():
    old = Sequential(
        [Dense(3, name="first"), Dense(2, name="last")],
        name="old",
        dtype=dp.DTypePolicyMap("float32", {"old/first": "mixed_bfloat16"}),
    )
    old(np.ones((1, 4)))

    def peek():
        view = Sequential(old.layers[:1], name="peek")  # goes out of scope at once
        view(np.ones((1, 4)))
        return weakref.ref(view)

    gone = peek()
    gc.collect()
    assert gone() is None  # neither the layers nor a call keep the throwaway container alive
    assert [(layer.path, layer.dtype_policy.name) for layer in old.layers] == [
        ("old/first", "mixed_bfloat16"),
        ("old/last", "float32"),
    ]
    assert [v.path for v in old.weights] == ["old/first/kernel", "old/first/bias", "old/last/kernel", "old/last/bias"]


def test_deleting_the_layer_that_took_a_sublayer_gives_it_back_to_its_first_owner():
    a, b = Layer(name="a"), Layer(name="b")
    a.d = Linear(2, name="d")
    a.d(jnp.ones((1, 2)))
    b.d = a.d
    assert a.d.path == "b/d"
    gone = weakref.ref(b)
    del b
    gc.collect()
    assert gone() is None  # the sublayer does not keep the layer that took it alive
    assert a.d.path == "a/d" and [v.path for v in a.d.weights] == ["a/d/kernel", "a/d/bias"]


def test_a_collected_owner_hands_the_model_to_the_latest_owner_still_alive():
    x, p, y, q = (Layer(name=name) for name in ("x", "p", "y", "q"))
    shared = Linear(2, name="shared")
    shared(jnp.ones((1, 2)))
    x.shared = shared  # model x
    p.shared = shared  # model p
    y.shared = shared  # model y
    q.shared = shared  # model q: the latest decides
    assert shared.path == "q/shared"
    del q
    gc.collect()
    assert shared.path == "y/shared" and shared.kernel.path == "y/shared/kernel"
    del y
    gc.collect()
    assert shared.path == "p/shared"
    del p, x
    gc.collect()
    assert shared.path == "shared" and shared.kernel.path == "shared/kernel"


def test_a_collected_outer_model_leaves_its_nested_layers_to_the_old_model():
    old, block = Layer(name="old"), Layer(name="block")
    block.inner = Linear(2, name="inner")
    old.block = block
    block.inner(jnp.ones((1, 2)))
    outer, wrapper = Layer(name="outer"), Layer(name="wrapper")
    wrapper.block = block
    outer.wrapper = wrapper  # outer > wrapper > block: block's model is outer now
    assert block.inner.path == "outer/wrapper/block/inner"
    del outer, wrapper
    gc.collect()
    assert block.inner.path == "old/block/inner" and block.inner.kernel.path == "old/block/inner/kernel"


def test_many_throwaway_containers_leave_no_dead_owner_records():
    model = Layer(name="model")
    model.dense = Linear(2, name="dense")
    for _ in range(50):
        holder = Layer(name="holder")
        holder.dense = model.dense
        del holder
    gc.collect()
    assert len(model.dense._owners) == 1 and model.dense.path == "model/dense"


def test_a_parent_reference_found_dead_before_its_callback_ran_is_re_derived_on_read():
    model = Layer(name="model", dtype="mixed_bfloat16")
    model.dense = Linear(2, name="dense")
    gone = Layer(name="gone")
    dead = weakref.ref(gone)
    del gone
    object.__setattr__(model.dense, "_parent_ref", dead)  # as while the collector runs the callbacks
    assert model.dense.dtype_policy.name == "mixed_bfloat16" and model.dense.path == "model/dense"
    object.__setattr__(model.dense, "_parent_ref", dead)
    assert model.dense.path == "model/dense" and model.dense._parent is model


def _collect_inside_owner_ref(monkeypatch):
    """Runs the cycle collector at the exact point where tracking allocates an owner's reference."""
    real = _ownership.owner_ref

    def owner_ref_after_a_collection(holder, layer):
        gc.collect()  # what any allocation there may trigger
        return real(holder, layer)

    monkeypatch.setattr(_ownership, "owner_ref", owner_ref_after_a_collection)


def _garbage_owner_of(layer):
    # A container holding a tracked list is in a reference cycle: garbage, but only freed by the collector.
    view = Sequential([layer], name="view")
    assert view.layers[0] is layer


def test_an_owner_collected_while_another_starts_tracking_leaves_no_dead_record(monkeypatch):
    dense = Linear(2, name="dense")
    gc.disable()
    try:
        _garbage_owner_of(dense)
        _collect_inside_owner_ref(monkeypatch)
        keep = Sequential([dense], name="keep")
        # Checked before any later collection could tidy up: exactly the live owner, no dead entry.
        assert [ref() is keep for _, ref in dense._owners] == [True]
    finally:
        gc.enable()
    assert dense.path == "keep/dense"


def test_a_write_back_never_undoes_what_a_callback_changed_while_the_new_value_was_computed():
    # As when the collector runs owner_gone (which hands a layer over to this one) in the middle of a step.
    layer = Layer(name="layer")
    runs = []

    def add_two(ids):
        runs.append(set(ids))
        if len(runs) == 1:
            object.__setattr__(layer, "_frozen_layer_ids", frozenset({1}))  # the callback's change
        return ids | {2}

    _ownership._update(layer, "_frozen_layer_ids", add_two)
    assert layer._frozen_layer_ids == {1, 2} and runs == [set(), {1}]


def test_owners_collected_in_the_middle_of_other_tracking_steps_leave_consistent_paths(monkeypatch):
    model = Sequential([Linear(2, name=f"l{index}") for index in range(4)], name="model")
    model(jnp.ones((1, 2)))
    gc.disable()
    try:
        _collect_inside_owner_ref(monkeypatch)
        for round_ in range(8):
            Sequential(model.layers[round_ % 4 :], name=f"view{round_}")  # garbage at once, collected mid-step
            if round_ == 5:
                kept = Sequential(model.layers[:1], name="keep")
            # After each step (no collection since): one record per live owner, paths from live owners only.
            for layer in model.layers:
                assert all(ref() is not None for _, ref in layer._owners), (round_, layer.name, layer._owners)
        assert [len(layer._owners) for layer in model.layers] == [2, 1, 1, 2]  # model, keep; model, the last view
    finally:
        gc.enable()
    gc.collect()
    assert [layer.path for layer in model.layers] == ["keep/l0", "model/l1", "model/l2", "model/l3"]
    assert [v.path for v in model.weights][2:] == [f"model/l{i}/{n}" for i in (1, 2, 3) for n in ("kernel", "bias")]
    del kept
    gc.collect()
    assert [v.path for v in model.weights][:2] == ["model/l0/kernel", "model/l0/bias"]
    assert all(len(layer._owners) == 1 for layer in model.layers)


# ---------------------------------------------------------------- a collected frozen owner gives the flags back


def _trained_pair():
    dense = Linear(2, name="dense")
    old = Sequential([dense], name="old")
    old(jnp.ones((1, 3)))
    return dense, old


def test_a_collected_frozen_container_gives_back_the_flags_its_freezing_switched_off():
    dense, old = _trained_pair()
    new = Sequential(old.layers, name="new")
    new.trainable = False
    assert dense.trainable is False and len(old.trainable_weights) == 0
    del new
    gc.collect()
    assert dense.trainable is True and [v.trainable for v in dense.weights] == [True, True]
    assert [v.path for v in old.trainable_weights] == ["old/dense/kernel", "old/dense/bias"]


def test_a_container_frozen_when_it_took_the_layer_gives_the_flags_back_when_collected():
    dense, old = _trained_pair()
    new = Layer(name="new", trainable=False)
    new.items = [dense]  # frozen on the way in
    assert dense.trainable is False
    del new
    gc.collect()
    assert dense.trainable is True and len(old.trainable_weights) == 2


def test_a_collected_frozen_container_thaws_exactly_what_its_freezing_switched_off():
    block = Layer(name="block")
    block.items = [Linear(2, name="a"), Linear(2, name="b")]
    block.items[1].trainable = False  # by hand: stays off
    for layer in block.items:
        layer.build((None, 3))
    old = Layer(name="old")
    old.block = block
    new = Layer(name="new")
    new.items = [block]
    new.trainable = False
    del new
    gc.collect()
    assert [(layer.path, layer.trainable) for layer in block._flatten_layers()] == [
        ("old/block", True),
        ("old/block/a", True),
        ("old/block/b", False),
    ]
    assert [v.trainable for v in block.variables] == [True, True, False, False]


def test_a_layer_set_trainable_false_by_hand_stays_off_when_the_frozen_container_goes():
    dense, old = _trained_pair()
    new = Sequential(old.layers, name="new")
    new.trainable = False
    dense.trainable = False  # the user's decision now
    del new
    gc.collect()
    assert dense.trainable is False and len(old.trainable_weights) == 0


def test_a_collected_frozen_container_hands_the_layer_over_to_another_frozen_owner():
    dense, old = _trained_pair()
    first = Sequential(old.layers, name="first")
    first.trainable = False
    second = Layer(name="second", trainable=False)
    second.items = [dense]
    del first
    gc.collect()
    assert dense.trainable is False  # second still freezes it
    del second.items[0]
    assert dense.trainable is True and len(old.trainable_weights) == 2


def test_the_last_of_two_frozen_containers_collected_gives_the_flags_back():
    dense, old = _trained_pair()
    first = Sequential(old.layers, name="first")
    first.trainable = False
    second = Sequential(old.layers, name="second", trainable=False)
    del first
    gc.collect()
    assert dense.trainable is False
    del second
    gc.collect()
    assert dense.trainable is True and [v.trainable for v in dense.weights] == [True, True]


def test_an_unfrozen_container_collected_leaves_the_flags_alone():
    dense, old = _trained_pair()
    new = Sequential(old.layers, name="new")
    new.trainable = False
    new.trainable = True
    dense.trainable = False  # by hand, after the container let go of its freezing
    del new
    gc.collect()
    assert dense.trainable is False


def test_a_variable_of_another_layer_gets_its_flag_back_when_the_frozen_layer_holding_it_is_collected():
    dense = Linear(2, name="dense")
    dense.build((None, 3))
    keep = Layer(name="keep")
    keep.dense = dense
    view = Layer(name="view", trainable=False)
    view.w = dense.kernel
    view.items = []  # a tracked list: view is in a cycle, freed by the collector
    assert dense.kernel.trainable is False
    del view
    gc.collect()
    assert [v.trainable for v in dense.variables] == [True, True]
    assert [v.path for v in keep.trainable_weights] == ["keep/dense/kernel", "keep/dense/bias"]


def test_a_variable_switched_back_on_before_the_frozen_layer_goes_is_left_alone_after():
    dense = Linear(2, name="dense")
    dense.build((None, 3))
    view = Layer(name="view", trainable=False)
    view.w = dense.kernel
    view.trainable = True  # gives the flag back
    dense.kernel.trainable = False  # by hand, afterwards
    del view
    gc.collect()
    assert dense.kernel.trainable is False
