"""landscape.py's pieces that need no training, each against a formula, a hand count or the plain
way: flat parameter vectors, the directions (filter-normalised random, PCA of a path), the batched
grid against a loop through the module's own forward, the memory plan's arithmetic, the settings'
checks, the grid's axes and window, and the numbers the figures print. Fast (no run, no data), so
`make mutants ARGS=landscape` runs every mutant against this file (test_landscape.py trains)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from src.errors import CheckpointError, ConfigError
from src.landscape import (
    Layout,
    _draw_path,
    _epochs_done,
    _fmt_loss,
    _linear_params,
    _loss_norm,
    _loss_ticks,
    _pair,
    _rel,
    _window,
    evaluate_family,
    evaluate_loop,
    evaluate_points,
    first_nonfinite,
    fixed_subset,
    grid_axis,
    linear_and_activations,
    memory_plan,
    path_faithfulness,
    pca_of_path,
    per_point_bytes,
    plain_loss,
    point_label,
    random_directions,
    read_settings,
    short_name,
)
from src.model import BaseNetwork


def _net(seed=0) -> BaseNetwork:
    torch.manual_seed(seed)
    return BaseNetwork(hidden_sizes=[32, 16]).eval()


def _flat(net: nn.Module) -> tuple[Layout, torch.Tensor]:
    layout = Layout.of(net)
    return layout, layout.flatten(dict(net.named_parameters()))


class Tiny(nn.Module):
    """An MLP whose Linears may lack a bias, in BaseNetwork's shape (a `layers` list)."""

    def __init__(self, bias0: bool, bias1: bool, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.layers = nn.ModuleList([nn.Linear(6, 5, bias=bias0), nn.Tanh(), nn.Linear(5, 4, bias=bias1),
                                     nn.ReLU(), nn.Linear(4, 3)])

    def forward(self, x):
        for m in self.layers:
            x = m(x)
        return x


# ---------------------------------------------------------------------------------------------
# flat vectors


def test_layout_names_shapes_and_numel_of_the_mlp():
    layout = Layout.of(BaseNetwork(input_size=4, hidden_sizes=[3], num_classes=2))
    assert layout.names == ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"]
    assert layout.shapes == [(3, 4), (3,), (2, 3), (2,)]
    assert layout.numel == 12 + 3 + 6 + 2


def test_layout_split_and_flatten_are_inverse_in_parameter_order():
    net = _net()
    layout, w = _flat(net)
    assert w.dtype == torch.float32 and w.shape == (layout.numel,) and not w.requires_grad
    for (name, p), part in zip(net.named_parameters(), layout.split(w), strict=True):
        assert torch.equal(part, p.detach()), name
    # flatten follows the layout's order, not the dict's; doubles become float32 on the host
    backwards = {n: p.detach().double() for n, p in reversed(list(net.named_parameters()))}
    assert torch.equal(layout.flatten(backwards), w)
    # a [K, P] matrix splits row by row
    rows = torch.stack([w, 2 * w, -w])
    for k, part in enumerate(layout.split(rows)):
        assert part.shape == (3, *layout.shapes[k])
        for r, scale in enumerate((1, 2, -1)):
            assert torch.equal(part[r], scale * layout.split(w)[k])


def test_epochs_done_from_the_fit_loop_else_the_epoch_index():
    processed = {"loops": {"fit_loop": {"epoch_progress": {"current": {"processed": 3}}}}, "epoch": 2}
    assert _epochs_done(processed) == 3.0 and isinstance(_epochs_done(processed), float)
    assert _epochs_done({"epoch": 2}) == 2.0
    assert _epochs_done({"loops": None, "epoch": 5}) == 5.0
    assert _epochs_done({"loops": {"fit_loop": {}}}) == 0.0


def _loop_state(epoch, here, total, last=False, processed=None, **extra):
    """A checkpoint's loop counts as Lightning 2.6 writes them (only the keys _epochs_done reads)."""
    fit = {"epoch_loop.batch_progress": {"current": {"processed": here}, "total": {"processed": total},
                                         "is_last_batch": last},
           "epoch_progress": {"current": {"processed": epoch + 1 if processed is None else processed}}}
    return {"loops": {"fit_loop": fit}, "epoch": epoch, **extra}


def test_epochs_done_is_fractional_for_a_checkpoint_written_mid_epoch():
    """A stop by max_steps=15 with 10 batches an epoch: 1.5 epochs, not the 2 epochs the fit loop
    counts (landscape.json and the panel titles said 'after 2 epochs')."""
    assert _epochs_done(_loop_state(1, 5, 15, processed=2)) == 1.5
    assert _epochs_done(_loop_state(1, 5, 15, processed=2, batches_per_epoch=10)) == 1.5
    assert _epochs_done(_loop_state(3, 1, 31, batches_per_epoch=10)) == 3.1
    # in the first epoch only the stored length tells; without it, the fit loop's count
    assert _epochs_done(_loop_state(0, 5, 5, processed=1, batches_per_epoch=10)) == 0.5
    assert _epochs_done(_loop_state(0, 5, 5, processed=1)) == 1.0
    # written at an epoch's end (during its validation): whole epochs, the one in progress included
    assert _epochs_done(_loop_state(0, 10, 10, last=True)) == 1.0
    assert _epochs_done(_loop_state(2, 10, 30, last=False)) == 3.0  # all its batches done
    assert _epochs_done(_loop_state(39, 195, 7800, last=True, batches_per_epoch=195)) == 40.0


# ---------------------------------------------------------------------------------------------
# directions


def test_random_directions_are_filter_normalised_and_seeded():
    net = _net()
    layout, w = _flat(net)
    d1, d2 = random_directions(layout, w, seed=3)
    for name, wt, a, b in zip(layout.names, layout.split(w), layout.split(d1), layout.split(d2), strict=True):
        if wt.dim() == 1:
            assert not a.any() and not b.any(), name  # biases: zero in the direction
        else:
            torch.testing.assert_close(a.norm(dim=1), wt.norm(dim=1), rtol=1e-5, atol=0)
            torch.testing.assert_close(b.norm(dim=1), wt.norm(dim=1), rtol=1e-5, atol=0)
    assert not torch.equal(d1, d2)
    again = random_directions(layout, w, seed=3)
    assert torch.equal(again[0], d1) and torch.equal(again[1], d2)
    assert not torch.equal(random_directions(layout, w, seed=4)[0], d1)


def test_random_directions_are_the_seeded_draws_rescaled_row_by_row():
    """The recipe, by hand: one generator, a Gaussian per weight matrix in layout order, d1's
    matrices then d2's; each row times |w row| / |d row|. A zero row of w stays zero."""
    net = BaseNetwork(input_size=4, hidden_sizes=[3], num_classes=2)
    layout, w = _flat(net)
    w[:4] = 0  # the first unit's incoming weights
    d1, d2 = random_directions(layout, w, seed=7)
    gen = torch.Generator().manual_seed(7)
    weights = [t for t in layout.split(w) if t.dim() == 2]
    draws = [torch.randn(t.shape, generator=gen) for t in weights * 2]
    for d, raw in ((d1, draws[:2]), (d2, draws[2:])):
        parts = layout.split(d)
        for k, (wt, r) in zip((0, 2), zip(weights, raw, strict=True), strict=True):
            expected = r * wt.norm(dim=1, keepdim=True) / r.norm(dim=1, keepdim=True)
            torch.testing.assert_close(parts[k], expected, rtol=1e-6, atol=0)
        assert not parts[1].any() and not parts[3].any()
    assert torch.isfinite(d1).all() and not d1[:4].any()


def test_pca_of_a_straight_line_path_explains_everything(caplog):
    gen = torch.Generator().manual_seed(0)
    final, v = torch.randn(5000, generator=gen), torch.randn(5000, generator=gen)
    points = final + torch.linspace(3, 0, 12)[:, None] * v  # init far away, straight to the final weights
    with caplog.at_level(logging.WARNING, logger="src.landscape"):
        pca = pca_of_path(points, final)
    assert caplog.messages == ["the path is (numerically) a straight line: the second PCA direction is arbitrary"]
    assert pca.explained[0] == pytest.approx(1, abs=1e-6) and pca.explained[1] == pytest.approx(0, abs=1e-6)
    assert np.abs(pca.residual).max() < 1e-5
    assert abs(float(pca.d1 @ v / v.norm())) == pytest.approx(1, abs=1e-6)
    # coordinates along d1: the distances to the final weights
    np.testing.assert_allclose(np.abs(pca.coords[:, 0]), np.linspace(3, 0, 12) * float(v.norm()), rtol=1e-5)


def test_pca_residual_and_explained_variance_formulas(caplog):
    # a path in 3 orthogonal directions with known extents: the plane holds the first two
    e = torch.eye(3, 600)
    coords = torch.tensor([[4.0, 0, 0], [0, 2, 0], [0, 0, 1], [0, 0, 0]])
    with caplog.at_level(logging.WARNING, logger="src.landscape"):
        pca = pca_of_path(coords @ e, torch.zeros(600))
    assert caplog.text == ""  # a bent path: no straight-line warning
    assert pca.explained == pytest.approx((16 / 21, 4 / 21), rel=1e-9)
    assert pca.singular_values == pytest.approx([4, 2, 1, 0], abs=1e-9)
    np.testing.assert_allclose(pca.residual, [0, 0, 1, 0], atol=1e-6)  # the third point is off-plane
    np.testing.assert_allclose(np.abs(pca.coords), [[4, 0], [0, 2], [0, 0], [0, 0]], atol=1e-6)
    assert abs(float(pca.d1[0])) == pytest.approx(1) and abs(float(pca.d2[1])) == pytest.approx(1)


def test_pca_is_scale_free_and_a_flat_path_is_no_straight_line(caplog):
    """The same bent path ten million times smaller (weights move little late in training): the
    same unit directions, shares and residuals; a path in a plane: no warning, nothing off-plane."""
    e = torch.eye(3, 600)
    coords = torch.tensor([[4.0, 0, 0], [0, 2, 0], [0, 0, 1], [0, 0, 0]]) * 1e-7
    with caplog.at_level(logging.WARNING, logger="src.landscape"):
        small = pca_of_path(coords @ e, torch.zeros(600))
        planar = pca_of_path(torch.tensor([[3.0, 0, 0], [0, 2, 0], [1, 1, 0]]) @ e, torch.zeros(600))
    assert caplog.text == ""
    assert small.explained == pytest.approx((16 / 21, 4 / 21), rel=1e-6)
    np.testing.assert_allclose(small.residual, [0, 0, 1, 0], atol=1e-6)
    assert float(small.d1.norm()) == pytest.approx(1, rel=1e-6) and float(small.d2.norm()) == pytest.approx(1, rel=1e-6)
    assert sum(planar.explained) == pytest.approx(1, abs=1e-9) and planar.residual.max() < 1e-6


def test_pca_against_an_svd_and_in_any_chunking():
    gen = torch.Generator().manual_seed(1)
    final = torch.randn(300, generator=gen)
    points = final + torch.randn(14, 300, generator=gen) * torch.linspace(2, 0.1, 14)[:, None]
    pca = pca_of_path(points, final)
    m = (points - final).double()
    _, s, vh = torch.linalg.svd(m, full_matrices=False)
    assert pca.singular_values == pytest.approx(s[:10].tolist(), rel=1e-9)  # at most 10 of them
    assert pca.explained == pytest.approx(((s[0] ** 2 / (s ** 2).sum()).item(), (s[1] ** 2 / (s ** 2).sum()).item()))
    for d, v in ((pca.d1, vh[0]), (pca.d2, vh[1])):
        assert abs(float(d.double() @ v)) == pytest.approx(1, abs=1e-6)
        assert d.dtype == torch.float32
    dirs = torch.stack([pca.d1, pca.d2]).double()
    np.testing.assert_allclose(pca.coords, (m @ dirs.T).numpy(), rtol=1e-5, atol=1e-6)
    off = (m - m @ dirs.T @ dirs).norm(dim=1) / m.norm(dim=1)
    np.testing.assert_allclose(pca.residual, off.numpy(), rtol=1e-5, atol=1e-7)
    chunked = pca_of_path(points, final, chunk=7)  # columns in chunks: the same numbers
    np.testing.assert_allclose(np.abs(chunked.coords), np.abs(pca.coords), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(chunked.residual, pca.residual, rtol=1e-9, atol=1e-12)
    assert chunked.singular_values == pytest.approx(pca.singular_values, rel=1e-12)


def test_pca_needs_three_points_and_a_path_that_moved():
    with pytest.raises(CheckpointError, match=r"^the recorded path has 2 points; PCA needs at least 3: train more "
                                              r"epochs, or record more often: callbacks.weight_path.every_n_steps=N "):
        pca_of_path(torch.zeros(2, 10), torch.zeros(10))
    still = pca_of_path(torch.ones(3, 10), torch.ones(10))  # every point is the final weights
    assert still.explained == (1.0, 0.0)
    assert not still.residual.any() and not still.coords.any()


def test_pca_of_a_path_with_inf_or_nan_is_one_line_naming_the_point():
    """A float16 point that overflowed holds inf: eigh would fail as "ill-conditioned"."""
    gen = torch.Generator().manual_seed(2)
    final = torch.randn(50, generator=gen)
    points = final + torch.randn(5, 50, generator=gen)
    for bad in (float("inf"), float("-inf"), float("nan")):
        broken = points.clone()
        broken[3, 7], broken[4, 0] = bad, bad
        with pytest.raises(CheckpointError, match=r"^point 3 of the recorded path \(5 points\) holds NaN or inf; "
                                                  r"PCA needs finite weights: use directions=random$"):
            pca_of_path(broken, final, chunk=16)
        with pytest.raises(CheckpointError, match=r"^the final weights hold NaN or inf"):
            pca_of_path(points, torch.where(torch.arange(50) == 9, bad, final))
    assert first_nonfinite({"weights": points}) is None
    points[2, 49], points[4, 0] = float("inf"), float("nan")
    assert first_nonfinite({"weights": points}) == 2


# ---------------------------------------------------------------------------------------------
# the batched evaluation against the plain way


def test_the_network_must_be_linears_and_elementwise_activations():
    assert [type(m) for m in linear_and_activations(Tiny(True, True))] == \
        [nn.Linear, nn.Tanh, nn.Linear, nn.ReLU, nn.Linear]
    seq = nn.Module()
    seq.layers = nn.ModuleList([nn.ReLU(), nn.Linear(3, 2)])
    conv = nn.Module()
    conv.layers = nn.ModuleList([nn.Linear(3, 2), nn.Conv1d(1, 1, 1)])
    for bad in (nn.Sequential(nn.Linear(3, 2)), seq, conv):
        with pytest.raises(ConfigError, match=r"^landscape.py evaluates MLPs made of Linear layers and elementwise "
                                              r"activations \(src/model.py BaseNetwork\)$"):
            linear_and_activations(bad)


def test_linear_params_index_weights_and_missing_biases():
    assert _linear_params(_net(), Layout.of(_net())) == [(0, 1), (2, 3), (4, 5)]
    tiny = Tiny(bias0=False, bias1=True)
    assert Layout.of(tiny).names == ["layers.0.weight", "layers.2.weight", "layers.2.bias", "layers.4.weight",
                                     "layers.4.bias"]
    assert _linear_params(tiny, Layout.of(tiny)) == [(0, None), (1, 2), (3, 4)]


def test_per_point_bytes_by_hand():
    net = BaseNetwork(input_size=4, hidden_sizes=[3], num_classes=2)
    # activations: 2 tensors per layer output (3 + 2 wide) on 5 images; weights after the first layer: 6 + 2
    assert per_point_bytes(net, Layout.of(net), 5) == 4 * (2 * 5 * (3 + 2) + 8)
    tiny = Tiny(bias0=False, bias1=True)  # first layer 30 weights, no bias; later 20 + 4 + 12 + 3
    assert per_point_bytes(tiny, Layout.of(tiny), 5) == 4 * (2 * 5 * (5 + 4 + 3) + 39)
    big = _net()
    assert per_point_bytes(big, Layout.of(big), 100) == 4 * (2 * 100 * (32 + 16 + 10) + (32 * 16 + 16 + 16 * 10 + 10))


def test_vectorised_grid_equals_a_plain_loop():
    net = _net()
    layout, w = _flat(net)
    d1, d2 = random_directions(layout, w, seed=1)
    x, y = torch.randn(300, 784), torch.randint(0, 10, (300,))
    ticks = torch.tensor([-1.0, 0.0, 1.0])
    a, b = torch.meshgrid(ticks, ticks, indexing="xy")
    coefs = torch.stack([a.reshape(-1), b.reshape(-1)], 1)
    # small chunks on purpose: several chunks of parameter sets and of images
    loss, acc = evaluate_family(net, layout, w, [d1, d2], coefs, x, y, batch_points=4, batch_images=128)
    ref_loss, ref_acc = evaluate_loop(net, layout, w + coefs[:, :1] * d1 + coefs[:, 1:] * d2, x, y)
    assert loss.dtype == acc.dtype == np.float64 and loss.shape == acc.shape == (9,)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_array_equal(acc, ref_acc)
    assert loss[4] == pytest.approx(plain_loss(net, x, y), rel=1e-6)  # the centre: the net itself


@pytest.mark.parametrize("bias0,bias1", [(False, True), (True, False), (False, False)])
def test_grid_and_interpolation_without_biases_equal_a_plain_loop(bias0, bias1):
    net = Tiny(bias0, bias1).eval()
    layout, w = _flat(net)
    init = _flat(Tiny(bias0, bias1, seed=1))[1]
    d1, d2 = torch.randn(2, layout.numel, generator=torch.Generator().manual_seed(2))
    x, y = torch.randn(37, 6), torch.randint(0, 3, (37,))
    coefs = torch.tensor([[0.0, 0.0], [0.5, -1.0], [-2.0, 0.25], [1.0, 1.0], [3.0, 0.0]])
    loss, acc = evaluate_family(net, layout, w, [d1, d2], coefs, x, y, batch_points=2, batch_images=10)
    ref = evaluate_loop(net, layout, w + coefs[:, :1] * d1 + coefs[:, 1:] * d2, x, y)
    np.testing.assert_allclose(loss, ref[0], rtol=1e-5)
    np.testing.assert_array_equal(acc, ref[1])
    # the interpolation's family: no base, (1 - a) w_init + a w_final
    alphas = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.5])
    coefs = torch.stack([1 - alphas, alphas], 1)
    loss, acc = evaluate_family(net, layout, None, [init, w], coefs, x, y, batch_points=3, batch_images=16)
    ref = evaluate_loop(net, layout, coefs[:, :1] * init + coefs[:, 1:] * w, x, y)
    np.testing.assert_allclose(loss, ref[0], rtol=1e-5)
    np.testing.assert_array_equal(acc, ref[1])
    assert loss[3] == pytest.approx(plain_loss(net, x, y), rel=1e-6)


def test_points_in_groups_equal_a_plain_loop_and_the_loop_equals_the_forward():
    net = _net()
    layout, w = _flat(net)
    points = w + 0.3 * torch.randn(5, layout.numel, generator=torch.Generator().manual_seed(4))
    x, y = torch.randn(50, 784), torch.randint(0, 10, (50,))
    loss, acc = evaluate_points(net, layout, points, x, y, batch_points=2, batch_images=16)
    ref_loss, ref_acc = evaluate_loop(net, layout, points, x, y)
    assert loss.shape == (5,)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_array_equal(acc, ref_acc)
    # the loop's reference: each point loaded into a copy of the net, its own forward
    for p, loss_p, acc_p in zip(points, ref_loss, ref_acc, strict=True):
        other = _net(seed=9)
        with torch.no_grad():
            for q, part in zip(other.parameters(), layout.split(p), strict=True):
                q.copy_(part)
        logits = other(x)
        assert loss_p == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
        assert acc_p == (logits.argmax(1) == y).double().mean().item()


def test_plain_loss_is_the_mean_over_every_image_in_any_chunking():
    net = _net()
    x, y = torch.randn(23, 784), torch.randint(0, 10, (23,))
    with torch.no_grad():
        expected = F.cross_entropy(net(x), y).item()
    assert plain_loss(net, x, y, batch_images=5) == pytest.approx(expected, rel=1e-6)
    assert plain_loss(net, x, y) == pytest.approx(expected, rel=1e-6)


def test_fixed_subset_is_seeded_sorted_and_all_when_it_asks_for_all():
    indices = torch.tensor([9, 2, 7, 4, 11, 0, 5])
    assert fixed_subset(indices, None, 0) is indices
    assert fixed_subset(indices, 7, 0) is indices and fixed_subset(indices, 8, 0) is indices
    picked = fixed_subset(indices, 4, seed=3)
    order = torch.randperm(7, generator=torch.Generator().manual_seed(3))
    assert picked.tolist() == sorted(indices[order[:4]].tolist())
    assert torch.equal(fixed_subset(indices, 4, seed=3), picked)
    assert any(not torch.equal(fixed_subset(indices, 4, seed=s), picked) for s in range(4, 8))


# ---------------------------------------------------------------------------------------------
# memory


def test_memory_limits_are_one_line_with_what_fits():
    net = _net()
    layout = Layout.of(net)
    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match=r"the largest grid that fits is landscape.resolution=\d+"):
        memory_plan(net, layout, 4000 ** 2, 4000, 256, "auto", 4096, cpu, available=200 << 20)
    with pytest.raises(ConfigError, match=r"the largest that fits is landscape.batch_points=\d+"):
        memory_plan(net, layout, 961, 31, 2048, 100_000, 4096, cpu, available=200 << 20)
    assert memory_plan(net, layout, 961, 31, 2048, "auto", 4096, cpu, available=16 << 30) == 32


def test_memory_plan_arithmetic_by_hand():
    """784... too big to count by hand: a 4-3-2 MLP (23 parameters) on 5 images. Half of what is
    available is usable. Fixed: the images (5 x 4), base and two directions (3 x 23), the first
    layer's three outputs (3 x 5 x 3), float32 = 536 bytes; per set 232 bytes
    (test_per_point_bytes_by_hand); results 16 bytes per grid point."""
    net = BaseNetwork(input_size=4, hidden_sizes=[3], num_classes=2)
    layout, cpu, gpu = Layout.of(net), torch.device("cpu"), torch.device("cuda")

    def plan(n_points, batch_points="auto", available=1 << 30, device=cpu, batch_images=4096):
        return memory_plan(net, layout, n_points, math.isqrt(n_points), 5, batch_points, batch_images, device,
                           available=available)

    need = 536 + 16 * 100 + 232
    assert plan(100, available=2 * need) == 1 and plan(100, available=2 * need + 1) == 1
    assert plan(100, available=2 * (need + 7 * 232 - 232)) == 7
    assert plan(100, 7, available=2 * (need + 6 * 232)) == 7
    with pytest.raises(ConfigError, match=r"landscape.batch_points=8 needs .* the largest that fits is "
                                          r"landscape.batch_points=7$"):
        plan(100, 8, available=2 * (need + 6 * 232))
    with pytest.raises(ConfigError, match=r"^landscape.resolution=10 \(100 points\) needs .* the largest grid "
                                          r"that fits is landscape.resolution=9$"):
        plan(100, available=2 * need - 2)
    assert plan(81, available=2 * need - 2) >= 1  # the grid it named fits
    # budget - fixed - one set = 1650 bytes: 10 x 10 results (1600) fit, 11 x 11 do not
    with pytest.raises(ConfigError, match=r"the largest grid that fits is landscape.resolution=10$"):
        plan(121, available=2 * (536 + 232 + 1650))
    with pytest.raises(ConfigError, match=r"the largest grid that fits is landscape.resolution=2$"):
        plan(9, available=2 * (536 + 232 + 100))  # 2 x 2 results fit: a grid, not "even one set"
    with pytest.raises(ConfigError, match=r"^even one parameter set on 5 images needs .* lower "
                                          r"landscape.batch_images \(now 4096\)$"):
        plan(4, available=2 * (536 + 232) - 2)
    # fewer images per pass: fixed 4 * (20 + 69 + 18) = 428, per set 4 * (2 * 2 * 5 + 8) = 112
    assert plan(4, available=2 * (428 + 64 + 112), batch_images=2) == 1
    with pytest.raises(ConfigError, match="on 2 images"):
        plan(4, available=2 * (428 + 64 + 112) - 2, batch_images=2)
    # auto: never more than the grid; at most 32 per chunk on a CPU, 4096 on a GPU
    assert plan(9) == 9 and plan(100) == 32 and plan(100, None) == 32
    assert plan(100, device=gpu) == 100 and plan(100 ** 2, device=gpu) == 4096
    assert plan(100, 500) == 500  # asked for, and it fits
    # no bias in the first layer (6 -> 5): fixed 4 * (5 x 6 + 3 x 69 + 3 x 5 x 5) = 1248, per set 636
    tiny = Tiny(bias0=False, bias1=True)
    assert memory_plan(tiny, Layout.of(tiny), 4, 2, 5, "auto", 4096, cpu, available=2 * (1248 + 64 + 636)) == 1
    with pytest.raises(ConfigError, match="even one parameter set"):
        memory_plan(tiny, Layout.of(tiny), 4, 2, 5, "auto", 4096, cpu, available=2 * (1248 + 64 + 636) - 2)
    # what is available, from the machine when not given
    assert memory_plan(net, layout, 9, 3, 5, "auto", 4096, cpu) == 9


def test_memory_messages_in_gib():
    """2^26 images, 2^22 per pass: fixed 4 * (2^26 x 4 + 69 + 3 x 2^22 x 3) = 1,224,737,044 bytes,
    one set 4 * (2 x 2^22 x 5 + 8) = 167,772,192 bytes."""
    net = BaseNetwork(input_size=4, hidden_sizes=[3], num_classes=2)
    layout, cpu = Layout.of(net), torch.device("cpu")
    fixed, one = 1_224_737_044, 167_772_192

    def message(n_points, batch_points, available):
        with pytest.raises(ConfigError) as e:
            memory_plan(net, layout, n_points, 2, 2 ** 26, batch_points, 2 ** 22, cpu, available=available)
        return str(e.value)

    assert message(4, "auto", 2 * fixed) == ("even one parameter set on 4194304 images needs 1.30 GiB, 1.14 GiB "
                                             "usable on cpu: lower landscape.batch_images (now 4194304)")
    roomy = 2 * (fixed + 64 + 3 * one)
    assert message(4, 5, roomy) == ("landscape.batch_points=5 needs 0.8 GiB on 4194304 images, 0.5 GiB usable "
                                    "on cpu: the largest that fits is landscape.batch_points=3")
    assert message(10 ** 8, "auto", roomy) == ("landscape.resolution=2 (100000000 points) needs 2.8 GiB, 1.6 GiB "
                                               "usable on cpu: the largest grid that fits is landscape.resolution=4579")


# ---------------------------------------------------------------------------------------------
# settings


def test_settings_on_a_machine_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert read_settings(OmegaConf.create({"landscape": {}})).device == torch.device("cuda")
    assert read_settings(OmegaConf.create({"landscape": {"device": "cuda:1"}})).device == torch.device("cuda:1")
    assert read_settings(OmegaConf.create({"landscape": {"device": "cpu"}})).device == torch.device("cpu")


def test_int_and_pair_accept_what_they_say_and_nothing_else():
    from src.errors import integer as _int  # the shared check the settings use

    assert _int("k", 1) == 1 and _int("k", 0, low=0) == 0
    for bad, low in ((0, 1), (-1, 0), (True, 0), (1.0, 1), ("3", 1)):
        with pytest.raises(ConfigError, match=rf"^k={bad!r} must be an integer >= {low}$"):
            _int("k", bad, low)
    assert _pair("r", [-1, 2]) == (-1.0, 2.0) and isinstance(_pair("r", (0, 1))[0], float)
    assert _pair("r", OmegaConf.create([0.5, 1.5])) == (0.5, 1.5)
    assert _pair("r", [1, -1], ordered=False) == (1.0, -1.0)
    for bad in ([1, 1], [2, 1], [0, math.nan], [0, math.inf], [True, 2], [0, 1, 2], [1], "0,1", None, [0, "1"]):
        with pytest.raises(ConfigError, match=r"^r=.* must be \[low, high\] with low < high, e.g. \[-1, 1\]$"):
            _pair("r", bad)


def test_settings_defaults_and_each_bad_value():
    s = read_settings(OmegaConf.create({"landscape": {}}))
    assert (s.directions, s.checkpoint, s.resolution, s.range, s.subset, s.seed) == ("auto", "last", 31, None, 2048, 0)
    assert (s.alpha_range, s.alpha_points, s.batch_points, s.batch_images) == ((-0.5, 1.5), 41, "auto", 4096)
    assert s.device == torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def settings(**ls):
        top = {k: ls.pop(k) for k in ("directions", "checkpoint") if k in ls}
        return read_settings(OmegaConf.create({"landscape": ls, **top}))

    s = settings(directions="pca", checkpoint="best", resolution=2, range=[-2, 3], subset="full", seed=5,
                 alpha_range=[0, 1], alpha_points=2, batch_points=3, batch_images=1, device="cpu")
    assert (s.directions, s.checkpoint, s.resolution, s.range, s.subset, s.seed) == ("pca", "best", 2, (-2.0, 3.0), None, 5)
    assert (s.alpha_range, s.alpha_points, s.batch_points, s.batch_images, s.device) == \
        ((0.0, 1.0), 2, 3, 1, torch.device("cpu"))
    assert settings(subset=None).subset is None and settings(subset=1).subset == 1
    assert settings(directions="random").directions == "random"
    for bad, message in [(dict(directions="pcaa"), "directions=pcaa is not one of: auto, random, pca"),
                         (dict(subset=0), "landscape.subset=0 must be an integer >= 1"),
                         (dict(subset="half"), "landscape.subset='half' must be"),
                         (dict(device="tpu"), "landscape.device=tpu is not one of: auto, cpu, cuda"),
                         (dict(batch_points=0), "landscape.batch_points=0 must be an integer >= 1"),
                         (dict(resolution=1), "landscape.resolution=1 must be an integer >= 2"),
                         (dict(seed=-1), "landscape.seed=-1 must be an integer >= 0"),
                         (dict(alpha_points=1), "landscape.alpha_points=1 must be an integer >= 2"),
                         (dict(batch_images=0), "landscape.batch_images=0 must be an integer >= 1"),
                         (dict(range=[1, -1]), r"landscape.range=\[1, -1\] must be"),
                         (dict(alpha_range=[1, 1]), r"landscape.alpha_range=\[1, 1\] must be")]:
        with pytest.raises(ConfigError, match=message):
            settings(**bad)
    if not torch.cuda.is_available():
        for device in ("cuda", "cuda:1"):
            with pytest.raises(ConfigError, match=r"^landscape.device=cuda, but no CUDA device is available; "
                                                  r"use landscape.device=cpu$"):
                settings(device=device)


# ---------------------------------------------------------------------------------------------
# the grid's axes and window


def test_grid_axis_has_zero_as_a_node_when_the_window_holds_it():
    np.testing.assert_allclose(grid_axis(-1, 1, 5), [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(grid_axis(-1, 2, 4), [-1, 0, 1, 2])
    shifted = grid_axis(-0.3, 1.0, 3)  # step 0.65: shifted by -0.3 so that 0 is a node
    np.testing.assert_allclose(shifted, [0, 0.65, 1.3])
    shifted = grid_axis(-0.7, 1.0, 3)  # 0.7 / 0.85 rounds to 1 step below 0
    np.testing.assert_allclose(shifted, [-0.85, 0, 0.85])
    assert 0.0 in grid_axis(-0.37, 1.91, 31)
    np.testing.assert_allclose(grid_axis(0.5, 1.5, 3), [0.5, 1.0, 1.5])  # no 0 in the window: as asked
    np.testing.assert_allclose(grid_axis(0.3, 1.3, 3), [0.3, 0.8, 1.3])
    assert grid_axis(-0.9, 0.0, 4)[-1] == 0.0  # exactly, not -0.9 + 3 x 0.3
    np.testing.assert_allclose(grid_axis(-2, -1, 3), [-2, -1.5, -1])


def test_window_is_the_range_else_the_papers_else_the_path_with_a_margin():
    coords = np.array([[1.0, 2.0], [3.0, -1.0]])
    assert _window(coords, (-3.0, 2.0), "pca") == ((-3.0, 2.0), (-3.0, 2.0))
    assert _window(coords, None, "random") == ((-1.0, 1.0), (-1.0, 1.0))
    assert _window(None, None, "pca") == ((-1.0, 1.0), (-1.0, 1.0))
    # the origin always inside; 20 % of the extent added on each side
    x, y = _window(coords, None, "pca")
    assert x == pytest.approx((-0.6, 3.6)) and y == pytest.approx((-1.6, 2.6))
    x, y = _window(np.array([[-4.0, -1.0], [-2.0, -3.0]]), None, "pca")
    assert x == pytest.approx((-4.8, 0.8)) and y == pytest.approx((-3.6, 0.6))
    # a path that never left the origin on an axis: a tiny window, not an empty one
    x, y = _window(np.array([[0.0, 0.0], [2.0, 0.0]]), None, "pca")
    assert y == pytest.approx((-2e-10, 2e-10), rel=1e-6, abs=0)
    assert isinstance(x[0], float)


def test_relative_difference():
    assert _rel(1.1, 1.0) == pytest.approx(0.1)
    assert _rel(-2.0, -1.0) == 1.0 and _rel(0.5, 1.0) == 0.5
    assert _rel(0.0, 0.0) == 0.0 and _rel(1e-13, 0.0) == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------
# what the figures print


def test_path_faithfulness_lines_by_hand():
    r = {"global_step": 30, "directions": {"explained_total": 0.875},
         "path": {"steps": [0, 10, 20, 30], "epochs": [0, 0.5, 1.0, 1.5], "residual": [0.1, 0.9, 0.8, 0.0],
                  "loss": [2.0, 1.5, 0.5, 0.4], "loss_on_plane": [3.2, 1.5, 0.9, 0.1]}}
    # the final point (w_final, step 30) is left out: its residual is 0 by construction
    assert path_faithfulness(r) == [
        "the plane holds 87.5 % of the path's variance",
        "off the plane: median 80 % of a point's way to the end, max 90 % (step 10)",
        "colour under the path = loss on the plane: median 60 % off the network's; init 3.2 vs 2"]  # 1.2 / 2, 0 / 1.5, 0.4 / 0.5


def test_path_points_are_labelled_with_epochs_counted_from_0():
    """The path stores epochs completed (1.0 at the end of epoch 0); the app numbers epochs from 0,
    so that point is `after epoch 0`, not `epoch 1` (docs/reliability.md)."""
    assert point_label(0, 0.0) == "init"
    assert point_label(19, 1.0) == "after epoch 0 (step 19)"
    assert point_label(38, 2.0) == "after epoch 1 (step 38)"
    assert point_label(6, 1.2) == "step 6, in epoch 1"  # 20 % into the second epoch
    assert point_label(3, 0.6) == "step 3, in epoch 0"
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    r = {"path": {"x": [-2.0, -1.0, -0.5, 0.0], "y": [1.0, 0.5, 0.2, 0.0], "steps": [0, 19, 38, 57],
                  "epochs": [0.0, 1.0, 2.0, 3.0], "loss": [2.3, 0.6, 0.5, 0.4]},
         "checks": {"centre": {"checkpoint": 0.4}}}
    _draw_path(ax, r)  # the whole epochs between the ends are labelled
    assert [t.get_text() for t in ax.texts] == ["after epoch 0 (step 19)", "after epoch 1 (step 38)"]


def test_loss_labels_ticks_and_colour_scale():
    assert [_fmt_loss(v) for v in (0.123456, 2.0, 1234.5, -0.0, 0.0, -1e-5)] == \
        ["0.123", "2", "1.23e+03", "0", "0", "-1e-05"]
    assert _loss_ticks(0.01, 100) == pytest.approx([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100])
    assert _loss_ticks(0.3, 3) == pytest.approx([0.3, 0.5, 0.7, 1, 2, 3])  # finer: 1, 2, 3, 5, 7
    assert _loss_ticks(1.1, 4.5) == pytest.approx([1.5, 2, 3, 4])  # finer still
    assert _loss_ticks(4.1, 9.5) == pytest.approx([5, 6, 7, 8, 9])
    assert _loss_ticks(0.1, 1.0) == pytest.approx([0.1, 0.2, 0.5, 1])  # four are enough
    assert _loss_ticks(0.95, 1.6) == pytest.approx([1, 1.5])  # two are enough to draw
    assert _loss_ticks(1.0, 1.05) == [1.0, 1.05] and _loss_ticks(2.0, 2.9) == [2.0, 2.9]  # too short: the ends
    norm = _loss_norm([{"grid": {"loss": [[np.nan, 0.0, 0.5], [2.0, np.inf, 1.0]]}}, {"grid": {"loss": [[0.7]]}}])
    assert (norm.vmin, norm.vmax) == (0.5, 2.0)  # over every panel; non-finite and non-positive left out


def test_short_names_for_panel_titles():
    assert short_name("2026-11-29_10-00-00") == "2026-11-29_10-00-00"
    assert short_name("x" * 28) == "x" * 28
    assert short_name("x" * 29) == "x" * 27 + "…" and len(short_name("x" * 29)) == 28
    assert short_name("12_optim=sgd,init=xavier,trainer.max_epochs=3") == "job 12"
    assert short_name("run_optim=sgd,init=xavier,trainer.max_epochs=3") == "run_optim=sgd,init=xavier,t…"
    assert short_name("abcdefghij", limit=5) == "abcd…"
