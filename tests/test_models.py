"""Tests for ibstudy.models: block structure, shapes, width multiplier, forward contract."""

from __future__ import annotations

import pytest
import torch

from ibstudy.models import MODELS, BlockNet, build_model

# cheap widths for the CPU; lenet5 is small already
WIDTH = {"lenet5": 1.0, "resnet18": 0.125, "resnet34": 0.125, "resnet50": 0.25}
WIDTH.update({"vgg8b": 0.125, "vgg11b": 0.125})


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _expected_shapes(name: str, image_size: int) -> list[tuple[int, ...]]:
    """Hand-derived per-sample block output shapes at the widths of WIDTH."""
    if name == "lenet5":
        return [(6, 14, 14), (16, 5, 5), (120,), (84,)]
    w = WIDTH[name]
    if name.startswith("resnet"):
        counts = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3)}
        exp = 4 if name == "resnet50" else 1
        planes = [round(p * w) for p in (64, 128, 256, 512)]
        sides = [image_size, -(-image_size // 2), -(-image_size // 4), -(-image_size // 8)]
        shapes = [(planes[0], image_size, image_size)]
        for p, n, s in zip(planes, counts[name], sides, strict=True):
            shapes += [(p * exp, s, s)] * n
        return shapes
    c = lambda n: round(n * w)  # noqa: E731
    if name == "vgg8b":
        sides = [32, 16, 16, 8, 4, 2] if image_size == 32 else [28, 14, 14, 7, 4, 2]
        chans = [128, 256, 256, 512, 512, 512]
        fcs = [1024]
    else:
        sides = (
            [32, 32, 32, 16, 16, 8, 8, 4, 2]
            if image_size == 32
            else [28, 28, 28, 14, 14, 7, 7, 4, 2]
        )
        chans = [128, 128, 128, 256, 256, 512, 512, 512, 512]
        fcs = [1024, 1024]
    return [(c(ch), s, s) for ch, s in zip(chans, sides, strict=True)] + [(c(f),) for f in fcs]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("in_channels", "image_size"), [(3, 32), (1, 32), (1, 28)])
def test_block_output_shapes(name: str, in_channels: int, image_size: int) -> None:
    model = build_model(name, 10, in_channels, image_size, width=WIDTH[name])
    shapes = model.block_output_shapes(in_channels, image_size)
    assert shapes == _expected_shapes(name, image_size)
    assert len(model.block_names) == len(model.blocks) == len(shapes)
    # a real forward with batch 2 agrees with the dry run and gives (N, C) logits
    x = torch.randn(2, in_channels, image_size, image_size)
    logits, zs = model(x, return_blocks=True)
    assert logits.shape == (2, 10)
    assert [tuple(z.shape[1:]) for z in zs] == shapes


def test_lenet5_flatten_is_400_for_mnist_and_cifar() -> None:
    for c, s in [(3, 32), (1, 28), (1, 32)]:
        m = build_model("lenet5", 10, c, s)
        fc1 = m.blocks[2][1]
        assert (fc1.in_features, fc1.out_features) == (400, 120)
        assert m.classifier.in_features == 84
    assert build_model("lenet5", 10, 1, 28).blocks[0][0].padding == (2, 2)
    assert build_model("lenet5", 10, 3, 32).blocks[0][0].padding == (0, 0)


@pytest.mark.parametrize(
    ("name", "n_blocks", "last_channels"),
    [("lenet5", 4, 84), ("resnet18", 9, 512), ("resnet34", 17, 512), ("resnet50", 17, 2048)],
)
def test_block_counts_and_classifier_size(name: str, n_blocks: int, last_channels: int) -> None:
    model = build_model(name, 7, 3, 32)  # width 1: construction only, no forward
    assert len(model.blocks) == n_blocks
    linear = model.classifier if name == "lenet5" else model.classifier[-1]
    assert (linear.in_features, linear.out_features) == (last_channels, 7)


def test_block_names() -> None:
    r18 = build_model("resnet18", 10, 3, 32, width=0.125)
    assert r18.block_names == ["stem"] + [f"layer{s}.{i}" for s in range(1, 5) for i in range(2)]
    assert build_model("lenet5", 10, 3, 32).block_names == ["conv1", "conv2", "fc1", "fc2"]
    v8 = build_model("vgg8b", 10, 3, 32, width=0.125)
    assert v8.block_names == [f"conv{i}" for i in range(1, 7)] + ["fc1"]
    v11 = build_model("vgg11b", 10, 3, 32, width=0.125)
    assert v11.block_names == [f"conv{i}" for i in range(1, 10)] + ["fc1", "fc2"]


@pytest.mark.parametrize("name", MODELS)
def test_width_shrinks_parameters(name: str) -> None:
    small = _n_params(build_model(name, 10, 3, 32, width=0.25))
    big = _n_params(build_model(name, 10, 3, 32, width=0.5))
    assert small < big
    if name != "lenet5":  # conv weights scale ~ width^2
        assert big / small > 3.0


def test_width_rounds_and_keeps_at_least_one_channel() -> None:
    m = build_model("lenet5", 10, 3, 32, width=0.01)
    assert m.block_output_shapes(3, 32) == [(1, 14, 14), (1, 5, 5), (1,), (1,)]


@pytest.mark.parametrize("name", MODELS)
def test_return_blocks_last_block_feeds_classifier(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 10, 3, 32, width=WIDTH[name]).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        logits, zs = model(x, return_blocks=True)
        again = model.classifier(zs[-1])
        # chaining the blocks by hand reproduces every representation
        h = x
        for block, z in zip(model.blocks, zs, strict=True):
            h = block(h)
            torch.testing.assert_close(h, z)
    torch.testing.assert_close(plain, logits)
    torch.testing.assert_close(again, logits)


def test_forward_has_no_side_effects_in_eval_and_shapes_restore_mode() -> None:
    model = build_model("resnet18", 10, 3, 32, width=0.125)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.block_output_shapes(3, 32)
    assert model.training
    after = model.state_dict()
    for k, v in before.items():  # dry run did not touch BN running stats
        assert torch.equal(v, after[k]), k
    model.eval()
    model.block_output_shapes(3, 32)
    assert not model.training


def test_gradients_flow_through_all_blocks() -> None:
    model = build_model("resnet18", 10, 3, 32, width=0.125)
    loss = model(torch.randn(4, 3, 32, 32)).logsumexp(dim=1).mean()
    loss.backward()
    for name, block in zip(model.block_names, model.blocks, strict=True):
        grads = [p.grad for p in block.parameters()]
        assert all(g is not None for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name


def test_blocknet_is_generic() -> None:
    net = BlockNet([torch.nn.Linear(3, 4), torch.nn.ReLU()], ["a", "b"], torch.nn.Linear(4, 2))
    out, zs = net(torch.randn(5, 3), return_blocks=True)
    assert out.shape == (5, 2) and [z.shape for z in zs] == [(5, 4), (5, 4)]
    with pytest.raises(ValueError, match="block_names"):
        BlockNet([torch.nn.ReLU()], ["a", "b"], torch.nn.Identity())
    with pytest.raises(ValueError, match="unique"):
        BlockNet([torch.nn.ReLU(), torch.nn.ReLU()], ["a", "a"], torch.nn.Identity())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "resnet101"}, r"model must be one of .*lenet5.*vgg11b.*'resnet101'"),
        ({"name": "LeNet5"}, "model must be one of"),
        ({"width": 0}, "width"),
        ({"width": -0.5}, "width"),
        ({"width": float("nan")}, "width"),
        ({"num_classes": 0}, "num_classes"),
        ({"in_channels": 0}, "in_channels"),
        ({"image_size": 0}, "image_size"),
        ({"image_size": 8}, "image_size"),
    ],
)
def test_bad_input(kwargs: dict, match: str) -> None:
    args = {"name": "lenet5", "num_classes": 10, "in_channels": 3, "image_size": 32, "width": 1.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        build_model(**args)


def test_block_output_shapes_bad_input() -> None:
    model = build_model("lenet5", 10, 3, 32)
    with pytest.raises(ValueError, match="image_size"):
        model.block_output_shapes(3, 0)
    with pytest.raises(ValueError, match="in_channels"):
        model.block_output_shapes(-1, 32)
