"""The analytic matmul FLOP counts of the benchmark models, against counts written out by hand."""

import pytest

from benchmarks import _flops


def test_mlp_forward_and_train_flops_written_out():
    # widths 4 -> 8 -> 3, batch 2: (2x4)@(4x8) is 2*2*4*8 = 128, (2x8)@(8x3) is 2*2*8*3 = 96.
    products = _flops.mlp_products((4, 8, 3), batch=2)
    assert _flops.forward_flops(products) == 128 + 96
    # Train: forward + weight grad of both, input grad of the second only (the first layer reads the batch).
    assert _flops.train_flops(products) == (128 + 128) + (96 + 96 + 96)
    assert [p.input_grad for p in products] == [False, True]


def test_mlp_of_equal_widths_matches_six_batch_weights_less_the_first_input_gradient():
    # 3 layers 16 -> 16 and a head 16 -> 10, batch 5: forward 2*5*(3*256 + 160) = 9280.
    products = _flops.mlp_products((16, 16, 16, 16, 10), batch=5)
    assert _flops.forward_flops(products) == 9280
    assert _flops.train_flops(products) == 3 * 9280 - 2 * 5 * 16 * 16


def test_transformer_classifier_products_written_out():
    # batch 2, time 3, width 4, 2 heads of 2, MLP 8, 5 classes; tokens = 6, heads*key_dim = 4.
    products = _flops.transformer_products(batch=2, time=3, width=4, num_heads=2, key_dim=2, mlp_dim=8, classes=5)
    by_name = {p.name: p.flops for p in products}
    assert by_name == {
        "query": 2 * 6 * 4 * 4,  # 192
        "key": 192,
        "value": 192,
        "scores": 2 * 3 * 2 * 3 * (2 * 2),  # time x key_dim x time per (batch, head): 144
        "context": 2 * 3 * 3 * 2 * (2 * 2),  # 144
        "attention_output": 2 * 6 * 4 * 4,  # 192
        "mlp_in": 2 * 6 * 4 * 8,  # 384
        "mlp_out": 2 * 6 * 8 * 4,  # 384
        "head": 2 * 2 * 4 * 5,  # 80
    }
    assert _flops.forward_flops(products) == 1904
    # Every input gradient is needed (the first products read the LayerNorm, whose gamma and beta train).
    assert _flops.train_flops(products) == 3 * 1904


def test_layer_products_of_one_transformer_layer():
    products = _flops.layer_products(tokens=8, hidden=4, ffn=16)
    assert [(p.name, p.m, p.k, p.n, p.flops) for p in products] == [
        ("qkv", 8, 4, 12, 2 * 8 * 4 * 12),
        ("attention_out", 8, 4, 4, 2 * 8 * 4 * 4),
        ("ffn_up", 8, 4, 16, 2 * 8 * 4 * 16),
        ("ffn_down", 8, 16, 4, 2 * 8 * 16 * 4),
    ]


@pytest.mark.parametrize("value", [0, -3, 2.0, True])
def test_product_refuses_a_shape_that_is_not_a_positive_int(value):
    with pytest.raises(ValueError, match=rf"'x': m must be a positive int, received {value!r}"):
        _flops.Product("x", value, 2, 2)


def test_mlp_products_needs_two_widths():
    with pytest.raises(ValueError, match=r"at least an input and an output width, received \[4\]"):
        _flops.mlp_products([4], batch=2)
