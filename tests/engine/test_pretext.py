"""Pretext-task methods: their label generators checked directly, their shortcut defences,
k-means, and a few training steps of each on the sample images with a decreasing loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.backbones import build_backbone
from engine.color import rgb_to_lab
from engine.errors import UserError
from engine.kmeans import kmeans, pca_whiten
from engine.methods.base import Method
from engine.methods.colorization import Colorization, ColorizationConfig, colorize
from engine.methods.deepcluster import DeepCluster, DeepClusterConfig
from engine.methods.inpainting import (
    Inpainting,
    InpaintingConfig,
    center_hole,
    reconstruction_weights,
    weighted_l2,
)
from engine.methods.jigsaw import (
    Jigsaw,
    JigsawConfig,
    max_hamming_permutations,
    shuffle_tiles,
    unshuffle_tiles,
)
from engine.methods.relpatch import OFFSETS, RelPatch, RelPatchConfig, patch_layout, sample_pairs
from engine.methods.rotation import Rotation, RotationConfig, rotate_all
from engine.methods.splitbrain import SplitBrain, SplitBrainConfig
from engine.methods.tiles import crop_patches, drop_color_channels, normalize_patches
from engine.registry import list_methods
from tests.engine.method_runs import tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_vit(size: int, patch: int = 4):
    """A one-block ViT-Tiny: the methods are backbone-agnostic and this keeps the steps cheap."""
    return build_backbone(f"vit_tiny_p{patch}", size, depth=1)


@pytest.fixture(scope="module")
def sample_images(tmp_path_factory) -> torch.Tensor:
    """12 sample images (2 per class), 64 px uint8, generated into a temp folder."""
    from engine.data import load_images
    from engine.sample import ensure_sample, sample_files

    root = tmp_path_factory.mktemp("sample")
    ensure_sample(root, {"train": 2})
    return load_images(sample_files(root, {"train": 2}), 64)


def coord_image(b: int, size: int) -> torch.Tensor:
    """Channel 0 = row, channel 1 = column, channel 2 = image index: a patch tells where it is."""
    r = torch.arange(size, dtype=torch.float32)
    rows, cols = r.view(1, size, 1).expand(b, size, size), r.view(1, 1, size).expand(b, size, size)
    idx = torch.arange(b, dtype=torch.float32).view(b, 1, 1).expand(b, size, size)
    return torch.stack([rows, cols, idx], dim=1)


def stepper(seed: int = 0, step: int = 0) -> Method:
    m = Method()
    m.set_step_context(seed, step)
    return m


def train_steps(
    method: Method, images: torch.Tensor, steps: int, lr: float = 1e-3, key: str = "loss"
) -> list[float]:
    """Steps on one batch with the same random views every step: the loss must go down."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(method.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        method.set_step_context(0, 0)
        out = method({"image": images, "label": torch.full((images.shape[0],), -1)})
        assert all(torch.isfinite(v).all() for v in out.values())
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out[key].item())
    return losses


def assert_decreasing(losses: list[float], factor: float = 0.95) -> None:
    assert losses[-1] < factor * losses[0], losses


# ----------------------------------------------------------------------------- rotation


def test_rotation_labels_match_rot90_made_of_flips_and_transposes():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    rots, labels = rotate_all(x)
    assert rots.shape == (8, 3, 4, 4)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # every image once with every k
    quarter = x.transpose(-1, -2).flip(-2)  # one counter-clockwise quarter turn: exact pixel moves
    for k in range(4):
        block = rots[labels == k]
        assert torch.equal(block, torch.rot90(x, k, dims=(-2, -1)))
        assert torch.equal(torch.rot90(block, -k, dims=(-2, -1)), x)  # undoing k turns restores it
        assert torch.equal(
            block.flatten(1).sort(1).values, x.flatten(1).sort(1).values
        )  # no interpolation
    assert torch.equal(rots[labels == 1], quarter)
    assert torch.equal(rots[labels == 2], x.flip(-1).flip(-2))


# ----------------------------------------------------------------------------- relative position


def test_relpatch_labels_match_patch_geometry():
    size = 64
    p, gap, jit = patch_layout(size, 0.5, 7 / 96)
    assert (p, gap, jit) == (15, 8, 1) and 3 * p + 2 * gap + 2 * jit <= size
    y0, x0, labels = sample_pairs(stepper(), 6, size, (p, gap, jit), 8, torch.device("cpu"))
    assert sorted(labels[0].tolist()) == list(range(8))
    patches = crop_patches(coord_image(6, size), y0, x0, p)  # [B, 9, 3, p, p]
    top_left = patches[:, :, :2, 0, 0]  # (row, col) of each patch's first pixel
    assert torch.equal(top_left, torch.stack([y0, x0], -1).float())
    assert (patches[:, :, 2] == torch.arange(6).view(6, 1, 1, 1)).all()  # nothing from other images
    centre = top_left[:, :1]
    for b in range(6):
        for j, lab in enumerate(labels[b].tolist()):
            d = top_left[b, 1 + j] - centre[b, 0]
            expect = torch.tensor(OFFSETS[lab], dtype=torch.float32) * (p + gap)
            assert (d - expect).abs().max() <= 2 * jit  # position from the label, up to jitter
    # the gap survives the jitter: no two patches of an image touch
    assert gap - 2 * jit >= 1


def test_relpatch_one_random_neighbour_per_image_covers_all_labels():
    _, _, labels = sample_pairs(
        stepper(), 400, 32, patch_layout(32, 0.5, 7 / 96), 1, torch.device("cpu")
    )
    counts = torch.bincount(labels.flatten(), minlength=8)
    assert counts.min() > 25  # 50 expected per label


def test_patch_normalisation_and_colour_dropping():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(5, 3, 6, 6, generator=g) * 3 + 2
    n = normalize_patches(p)
    assert n.mean(dim=(-2, -1)).abs().max() < 1e-5
    assert torch.allclose(n.pow(2).mean(dim=(1, 2, 3)), torch.ones(5), atol=1e-3)
    keep = torch.tensor([0, 1, 2, 0, 1])
    out = drop_color_channels(n, keep, torch.randn(5, 3, 6, 6, generator=g))
    for i, k in enumerate(keep.tolist()):
        assert torch.equal(out[i, k], n[i, k])
        for c in {0, 1, 2} - {k}:
            assert 0 < out[i, c].std() < 0.05 * n[i, k].std()  # noise at ~1/100 of the kept std


# ----------------------------------------------------------------------------- jigsaw


def test_permutation_set_has_promised_min_hamming_distance():
    perms = max_hamming_permutations(100, seed=0)
    assert perms.shape == (100, 9)
    assert (perms.sort(1).values == torch.arange(9)).all()  # each row a permutation of the tiles
    assert len({tuple(r) for r in perms.tolist()}) == 100  # no duplicates
    dist = (perms[:, None] != perms[None]).sum(-1) + 99 * torch.eye(100, dtype=torch.long)
    assert dist.min() == 6  # promised in the jigsaw module docstring
    mean = (dist.sum() - 99 * 100) / (100 * 99)
    assert mean > 8.0
    assert torch.equal(perms, max_hamming_permutations(100, seed=0))
    assert not torch.equal(perms, max_hamming_permutations(100, seed=1))
    # a random set of 100 permutations is far worse: greedy selection is doing its job
    rand = torch.stack(
        [torch.randperm(9, generator=torch.Generator().manual_seed(i)) for i in range(100)]
    )
    rd = (rand[:, None] != rand[None]).sum(-1) + 99 * torch.eye(100, dtype=torch.long)
    assert rd.min() < 6


def test_jigsaw_inverse_permutation_restores_tiles():
    perms = max_hamming_permutations(100, seed=0)
    tiles = torch.randn(4, 9, 3, 5, 5)
    chosen = perms[torch.tensor([0, 17, 42, 99])]
    shuffled = shuffle_tiles(tiles, chosen)
    for b in range(4):
        for j in range(9):
            assert torch.equal(shuffled[b, j], tiles[b, chosen[b, j]])
    assert torch.equal(unshuffle_tiles(shuffled, chosen), tiles)


def test_jigsaw_tiles_come_from_their_cells_with_gap_and_jitter():
    m = Jigsaw(tiny_vit(64, 8), 64, JigsawConfig(num_permutations=10))
    m.set_step_context(0, 0)
    assert (m.cell, m.tile, m.shift) == (21, 18, 1)
    x = coord_image(64, 63)
    y0, x0 = m.tile_corners(64, torch.device("cpu"))
    coords = crop_patches(x, y0, x0, m.tile)  # [B, 9, 3, t, t]; planes read their own corners
    assert torch.equal(coords[:, :, 0, 0, 0], y0[..., 0].float())
    red = torch.stack([y0[..., 0], x0[..., 0]], -1)  # [B, 9, 2] red plane's corner
    for i in range(9):
        cell = torch.tensor(divmod(i, 3)) * 21
        assert (
            (red[:, i] >= cell - 1) & (red[:, i] + 18 <= cell + 21 + 1)
        ).all()  # inside its cell
    gaps = red[:, 1, 1] - (red[:, 0, 1] + 18)  # horizontal gap between tiles 0 and 1
    assert gaps.min() >= -2 and gaps.float().std() > 0.5  # random gap, never a real overlap
    shifts = torch.stack([y0, x0], -1)[:, :, 1:] - torch.stack([y0, x0], -1)[:, :, :1]
    assert 0 < shifts.abs().max() <= 2 * m.shift  # planes moved independently, each by <= 1 px
    assert m.tiles(x).shape == (64, 9, 3, 18, 18)


# ----------------------------------------------------------------------------- colour methods


def test_colorization_sees_only_lightness_and_colorize_keeps_it(sample_images):
    m = Colorization(build_backbone("resnet18", 16), 16, ColorizationConfig()).eval()
    x = F.interpolate(sample_images[:4].float() / 255, size=(16, 16), mode="area")
    gray = x.mean(1, keepdim=True).expand_as(x)  # another image with different colours
    lab, lab_g = rgb_to_lab(x), rgb_to_lab(gray)
    recoloured = torch.cat([lab[:, :1], lab_g[:, 1:]], 1)  # x's lightness, grey's colours
    from engine.color import lab_to_rgb

    y = lab_to_rgb(recoloured)
    with torch.no_grad():
        assert torch.allclose(m.logits(x), m.logits(y), atol=1e-4)  # colour never reaches the net
    out = colorize(m, (x * 255).to(torch.uint8))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert (
        rgb_to_lab(out)[:, 0] - rgb_to_lab((x * 255).to(torch.uint8).float() / 255)[:, 0]
    ).abs().max() < 1.5


def test_splitbrain_halves_see_disjoint_channels_and_export():
    bb = build_backbone("splitbrain_resnet18", 16).eval()
    assert bb.embed_dim == 512 and bb.arch["name"] == "splitbrain_resnet18"
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    lab = rgb_to_lab(x)
    from engine.color import lab_to_rgb

    y = lab_to_rgb(torch.cat([lab[:, :1], lab[:, 1:] * 0.3], 1))  # same L, other colours
    with torch.no_grad():
        fl_x, fab_x = bb.halves(x)
        fl_y, fab_y = bb.halves(y)
    assert torch.allclose(fl_x, fl_y, atol=1e-3) and not torch.allclose(fab_x, fab_y, atol=1e-2)
    rebuilt = build_backbone(**bb.arch)
    rebuilt.load_state_dict(bb.state_dict())
    norm = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(
            rebuilt.eval()(norm), torch.cat([fl_x, fab_x], 1).mean((2, 3)), atol=1e-4
        )


# ----------------------------------------------------------------------------- context encoder


def test_inpainting_hole_weights_and_loss_by_hand():
    hole = center_hole(1, 16, 0.5, 1, "cpu")  # centre 8x8, hole 6x6, 1 px overlap ring
    assert hole.sum() == 36 and hole[0, 0, 5:11, 5:11].all()
    w = reconstruction_weights(hole, 1, 10.0)
    assert (w[0, 0, 5:11, 5:11] == 1).all() and w[0, 0, 4, 4] == 10 and w[0, 0, 4, 8] == 10
    assert w.sum() == 36 + 10 * 28 and (w > 0).sum() == 64  # predicted region: the centre 8x8
    pred, target = torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16)
    target[..., 5, 5] = 1.0  # hole pixel, error 1 in 3 channels
    target[..., 4, 4] = 0.5  # ring pixel, error 0.25 in 3 channels, weight 10
    target[..., 0, 0] = 9.0  # outside: ignored
    expect = (3 * 1.0 + 10 * 3 * 0.25) / (64 * 3)
    assert torch.allclose(weighted_l2(pred, target, w), torch.tensor(expect))


def test_inpainting_prediction_ignores_the_hidden_pixels():
    m = Inpainting(build_backbone("resnet18", 16), 16, InpaintingConfig()).eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    hole = m.holes(2, torch.device("cpu"))
    other = torch.where(hole, torch.rand_like(x), x)
    with torch.no_grad():
        assert torch.equal(m.reconstruct(x, hole), m.reconstruct(other, hole))
    rnd = Inpainting(tiny_vit(16), 16, InpaintingConfig(mask="random"))
    rnd.set_step_context(0, 3)
    frac = rnd.holes(64, torch.device("cpu")).float().mean()
    assert 0.15 < frac < 0.4  # about a quarter of the image


def test_inpainting_adversarial_terms_train_only_their_player(sample_images):
    m = Inpainting(tiny_vit(16), 16, InpaintingConfig(adversarial=True))
    m.set_step_context(0, 0)
    out = m({"image": sample_images[:4]})
    out["adv_g"].backward(retain_graph=True)
    assert all(p.grad is None for p in m.disc.parameters())  # G's adversarial term leaves D alone
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.decoder.parameters())
    m.zero_grad(set_to_none=True)
    out["adv_d"].backward()
    assert all(p.grad is None for p in m.backbone.parameters())  # D's loss leaves G alone
    assert any(p.grad is not None for p in m.disc.parameters())


# ----------------------------------------------------------------------------- k-means / DeepCluster


def test_kmeans_recovers_separable_blobs():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 8, generator=g) * 10
    truth = torch.arange(5).repeat_interleave(40)
    x = centres[truth] + torch.randn(200, 8, generator=g) * 0.3
    res = kmeans(x, 5, iters=20, seed=1)
    pairs = set(zip(truth.tolist(), res.assignments.tolist()))
    assert len(pairs) == 5  # one cluster per blob and one blob per cluster: perfect recovery
    assert res.inertia < 200 * 8 * 0.3**2 * 1.5


def test_kmeans_reassigns_empty_clusters():
    x = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]).repeat_interleave(10, 0)
    # 30 points at 3 locations into 6 clusters: initial centroids coincide, clusters go empty
    res = kmeans(x, 6, iters=10, seed=0)
    counts = torch.bincount(res.assignments, minlength=6)
    assert res.reassigned > 0
    assert (counts > 0).all() and counts.sum() == 30


def test_pca_whiten_gives_unit_rows_of_the_requested_dim():
    x = torch.randn(100, 32, generator=torch.Generator().manual_seed(0)) * torch.linspace(
        0.1, 10, 32
    )
    z = pca_whiten(x, 8)
    assert z.shape == (100, 8) and torch.allclose(z.norm(dim=1), torch.ones(100), atol=1e-5)


def test_deepcluster_reclusters_every_epoch_with_the_trainer(shapes_dir, tmp_path):
    from engine.data import ImageFolderDataset
    from engine.trainer import Trainer

    cfg = tiny_run("deepcluster", shapes_dir, tmp_path / "run", 0, epochs=2, device="cpu")
    m = DeepCluster(tiny_vit(16), 16, DeepClusterConfig(num_clusters=6, pca_dim=16), seed=0)
    seen = []
    orig = m.recluster

    def spy(features, epoch):
        orig(features, epoch)
        seen.append(
            (
                epoch,
                m.assignments.clone(),
                m.classifier.weight.detach().clone(),
                m.sample_weights.clone(),
            )
        )

    m.recluster = spy
    out = Trainer(cfg, m, ImageFolderDataset(shapes_dir, load_size=16), tmp_path / "run").fit()
    assert [e for e, *_ in seen] == [0, 1] and out["step"] == 6
    for _, assign, weight, w in seen:
        counts = torch.bincount(assign, minlength=6)
        assert assign.shape == (36,) and (counts > 0).all()  # no empty cluster
        assert torch.allclose(w[assign].mean(), torch.tensor(1.0))  # re-weighting keeps the mean
        assert weight.std() < 0.02  # freshly initialised top layer, N(0, 0.01)
    # resume rebuilds the dataset-sized buffer
    m2 = DeepCluster(tiny_vit(16), 16, DeepClusterConfig(num_clusters=6, pca_dim=16))
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m2.assignments, m.assignments)
    with pytest.raises(UserError):
        m2.recluster(torch.randn(4, 8), 0)  # fewer images than clusters: one clear line


# ----------------------------------------------------------------------------- training steps


@pytest.mark.parametrize(
    "name,make,size",
    [
        ("rotation", lambda s: Rotation(tiny_vit(s), s, RotationConfig(head_hidden_dim=64)), 16),
        ("relpatch", lambda s: RelPatch(tiny_vit(s, 2), s, RelPatchConfig(head_hidden_dim=64)), 32),
        (
            "jigsaw",
            lambda s: Jigsaw(
                tiny_vit(s, 2),
                s,
                JigsawConfig(num_permutations=24, tile_dim=32, head_hidden_dim=64),
            ),
            24,
        ),
        (
            "colorization",
            lambda s: Colorization(tiny_vit(s), s, ColorizationConfig(head_dim=32)),
            16,
        ),
        (
            "splitbrain",
            lambda s: SplitBrain(
                build_backbone("splitbrain_resnet18", s), s, SplitBrainConfig(head_dim=32)
            ),
            16,
        ),
        ("inpainting", lambda s: Inpainting(tiny_vit(s), s, InpaintingConfig(decoder_dim=64)), 16),
        (
            "inpainting-random-gan",
            lambda s: Inpainting(
                tiny_vit(s), s, InpaintingConfig(mask="random", adversarial=True, decoder_dim=64)
            ),
            16,
        ),
    ],
)
def test_method_trains_on_sample(sample_images, name, make, size):
    torch.manual_seed(0)
    m = make(size)
    # with a GAN the total oscillates by design; its reconstruction term must still improve
    losses = train_steps(
        m, sample_images[:8], 8, lr=3e-3, key="rec" if name.endswith("gan") else "loss"
    )
    assert_decreasing(losses)


def test_pretext_methods_are_registered():
    names = {s.name: s for s in list_methods()}
    for n in (
        "rotation",
        "relpatch",
        "jigsaw",
        "colorization",
        "splitbrain",
        "inpainting",
        "deepcluster",
    ):
        assert n in names and names[n].family == "pretext" and names[n].description


def test_jigsaw_permutation_count_is_checked():
    with pytest.raises(UserError):
        max_hamming_permutations(1)
