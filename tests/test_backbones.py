"""SR backbones: registry info, shapes and input conventions, receptive fields measured by
perturbation, and the published SRCNN/VDSR weights against their published figures."""

from __future__ import annotations

import kmsr_backbones
import numpy as np
import pytest
import scipy.io as sio
import torch
import torch.nn.functional as F
from kmsr_backbones import published

from kmsr_cli.plugin_host import PluginHost
from kmsr_ops.colour import rgb2y
from kmsr_ops.errors import KmsrInputError
from kmsr_ops.image_io import read_image_array
from kmsr_ops.metrics import psnr
from kmsr_ops.resize import imresize, modcrop

INFO_KEYS = {"input", "channels", "scales", "receptive_field", "size_multiple", "options"}
BUILTINS = {"kmsr", "kmsr_lr", "srcnn", "vdsr", "edsr", "dbpn", "carn_m", "imdn"}

# Small configurations: every layer type of the real network, CPU-test sized.
TINY = {
    "kmsr": {"blocks": 2, "filters": 8},
    "srcnn": {},
    "vdsr": {"layers": 5, "filters": 8},
    "edsr": {"blocks": 2, "filters": 8},
    "dbpn": {"variant": "small", "stages": 3, "filters": 8, "feat": 8},
    "kmsr_lr": {"blocks": 2, "filters": 8},
    "carn_m": {"filters": 8, "groups": 2},
    "imdn": {"filters": 16, "modules": 2},
}


@pytest.fixture(scope="module")
def host():
    """A host with only the built-in backbone plugin loaded, as the CLI loads it."""
    h = PluginHost()
    h.pm.register(kmsr_backbones, name="backbones")
    h.check()
    h.collect()
    assert not h.errors, h.errors
    return h


# --------------------------------------------------------------------------- registry


def test_builtin_backbones_are_registered_through_the_entry_point(monkeypatch):
    monkeypatch.setenv("KMSR_PLUGINS", "backbones")
    h = PluginHost()
    h.load_entry_points()
    h.collect()
    assert not h.errors, h.errors
    assert set(h.names("backbones")) == BUILTINS


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_info_declares_the_feeding_convention(host, name):
    info = host.get("backbones", name).info
    assert INFO_KEYS <= set(info)
    assert info["input"] in ("upsampled", "lr") and info["channels"] in ("rgb", "y")
    expected = {"kmsr": ("upsampled", "rgb"), "srcnn": ("upsampled", "y"), "vdsr": ("upsampled", "y"),
                "edsr": ("lr", "rgb"), "dbpn": ("lr", "rgb"), "kmsr_lr": ("lr", "rgb"), "carn_m": ("lr", "rgb"),
                "imdn": ("lr", "rgb")}[name]
    assert (info["input"], info["channels"]) == expected
    # The info is written without importing torch; it must agree with what the networks build.
    rfs = []
    for s in info["scales"]:
        model = host.get("backbones", name).create(scale=s)
        opts = {k: v for k, v in info["options"].items() if k != "weights"}
        assert model.options == opts
        assert (model.input_kind, model.channels, model.size_multiple) == (info["input"], info["channels"], info["size_multiple"])
        rfs.append(model.receptive_field)
    assert info["receptive_field"] == max(rfs)


def test_paper_sizes():
    # KMSR: 16 blocks of 64 filters, 3x3, head and tail: 34 convs. VDSR: 20 layers, no biases.
    kmsr = kmsr_backbones.make_kmsr(2)
    convs = [m for m in kmsr.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 34 and {c.kernel_size for c in convs} == {(3, 3)}
    assert convs[0].in_channels == 3 and convs[-1].out_channels == 3 and convs[1].out_channels == 64
    assert kmsr.receptive_field == 69
    vdsr = kmsr_backbones.make_vdsr(2)
    convs = [m for m in vdsr.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 20 and all(c.bias is None for c in convs)
    # EDSR-baseline at x4: 1.5 M parameters (Lim et al. 2017, Table 1).
    n = sum(p.numel() for p in kmsr_backbones.make_edsr(4).parameters())
    assert 1.45e6 < n < 1.55e6
    # D-DBPN: 7 up- and 6 down-projection units, 3 projection convs each (8x8, stride 4 at x4),
    # 64 filters, 1x1 squeezes before every unit that reads more than one map.
    dbpn = kmsr_backbones.make_dbpn(4)
    ups = [m for m in dbpn.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    downs = [m for m in dbpn.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (4, 4)]
    assert len(ups) == 7 * 2 + 6 and len(downs) == 7 + 6 * 2
    assert {(m.kernel_size, m.stride, m.padding, m.out_channels) for m in ups + downs} == {((8, 8), (4, 4), (2, 2), 64)}
    squeezes = [m for unit in [*dbpn.up, *dbpn.down] for m in unit.modules()
                if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)]
    # Up-projection t (1-based) reads t - 1 LR maps, down-projection t reads t HR maps.
    assert sorted(m.in_channels // 64 for m in squeezes) == sorted([*range(2, 7), *range(2, 7)])


# --------------------------------------------------------------------------- shapes and conventions


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_shapes_and_input_conventions(host, name):
    backend = host.get("backbones", name)
    info = backend.info
    c = 3 if info["channels"] == "rgb" else 1
    torch.manual_seed(0)
    for s in info["scales"]:
        model = backend.create(scale=s, **TINY[name]).eval()
        assert model.scale == s and model.in_channels == c
        x = torch.rand(2, c, 13, 11)
        with torch.no_grad():
            y = model(x)
        factor = s if info["input"] == "lr" else 1
        assert y.shape == (2, c, 13 * factor, 11 * factor)
        assert y.dtype == torch.float32 and torch.isfinite(y).all()
        model.check_input(x)
        with pytest.raises(KmsrInputError, match="channel"):
            model.check_input(torch.rand(2, 4 - c if c == 3 else 3, 13, 11))
    bad = 5 if 5 not in info["scales"] else 7
    with pytest.raises(KmsrInputError, match="scale"):
        backend.create(scale=bad)


def test_kmsr_variants_differ_only_in_forward():
    torch.manual_seed(0)
    edsr = kmsr_backbones.make_kmsr(2, variant="edsr", blocks=2, filters=8)
    rel = kmsr_backbones.make_kmsr(2, variant="release", blocks=2, filters=8)
    rel.load_state_dict(edsr.state_dict())  # same keys and shapes
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        # With zero weights the global skip returns the input; the release variant returns 0.
        for m in (edsr, rel):
            for p in m.parameters():
                p.zero_()
        assert torch.equal(edsr(x), x)
        assert torch.equal(rel(x), torch.zeros_like(x))


def test_bad_options_are_named():
    with pytest.raises(KmsrInputError, match="variant"):
        kmsr_backbones.make_kmsr(2, variant="nope")
    with pytest.raises(KmsrInputError, match="blocks"):
        kmsr_backbones.make_edsr(2, blocks=-1)
    with pytest.raises(KmsrInputError, match="padding"):
        kmsr_backbones.make_srcnn(2, padding="circular")
    with pytest.raises(TypeError):
        kmsr_backbones.make_vdsr(2, depth=3)


# --------------------------------------------------------------------------- receptive fields


def measured_halo(model, size: int) -> int:
    """Largest distance (input pixels) from a perturbed input pixel to an output that changes.

    float64 and exact comparison: outside the receptive field the output is bit-identical.
    For LR-input models, an HR output pixel counts for the LR pixel whose s x s block holds it.
    """
    model = model.double().eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, model.in_channels, size, size, generator=gen, dtype=torch.float64)
    x2 = x.clone()
    m = size // 2
    x2[..., m, m] += 0.5
    with torch.no_grad():
        d = (model(x2) - model(x)).abs().amax(dim=(0, 1))
    if model.input_kind == "lr":
        s = model.scale
        d = d.reshape(size, s, size, s).amax(dim=(1, 3))
    rows = torch.nonzero(d.amax(dim=1) > 0).flatten()
    cols = torch.nonzero(d.amax(dim=0) > 0).flatten()
    assert len(rows) and len(cols), "the perturbation changed nothing"
    ext = [m - int(rows.min()), int(rows.max()) - m, m - int(cols.min()), int(cols.max()) - m]
    assert max(ext) < m, "the image is too small to see the whole receptive field"
    return max(ext)


RF_CASES = [
    ("kmsr", 2, {"blocks": 3, "filters": 8}),
    ("kmsr", 2, {"variant": "release", "blocks": 3, "filters": 8}),
    ("vdsr", 3, {"layers": 7, "filters": 8}),
    ("srcnn", 3, {"variant": "955"}),
    ("srcnn", 3, {"variant": "915"}),
    ("edsr", 2, {"blocks": 2, "filters": 8}),
    ("edsr", 3, {"blocks": 2, "filters": 8}),
    ("edsr", 4, {"blocks": 2, "filters": 8}),
    ("dbpn", 2, {"variant": "small", "filters": 8, "feat": 8}),
    ("dbpn", 4, {"variant": "small", "stages": 2, "filters": 8, "feat": 8}),
]


@pytest.mark.parametrize("name,scale,opts", RF_CASES)
def test_receptive_field_matches_a_one_pixel_perturbation(host, name, scale, opts):
    torch.manual_seed(0)
    model = host.get("backbones", name).create(scale=scale, **opts)
    size = model.receptive_field + 8
    assert measured_halo(model, size) == model.halo == model.receptive_field // 2


def test_kmsr_receptive_field_is_the_count_of_3x3_convs():
    # Independent of the formula: 2 + 2 * blocks convs of 3x3 grow the field by 2 each.
    torch.manual_seed(0)
    for blocks in (1, 4):
        model = kmsr_backbones.make_kmsr(2, blocks=blocks, filters=8)
        assert measured_halo(model, 40) == 2 + 2 * blocks


# --------------------------------------------------------------------------- published weights: format


def _fake_srcnn_npz(path, k2=1, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "conv1.weight": rng.normal(0, 0.1, (64, 1, 9, 9)), "conv1.bias": rng.normal(0, 0.1, 64),
        "conv2.weight": rng.normal(0, 0.1, (32, 64, k2, k2)), "conv2.bias": rng.normal(0, 0.1, 32),
        "conv3.weight": rng.normal(0, 0.1, (1, 32, 5, 5)), "conv3.bias": rng.normal(0, 0.1, 1),
    }
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    np.savez(path, **arrays)
    return arrays


def _fake_vdsr_npz(path, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {"input.weight": rng.normal(0, 0.2, (64, 1, 3, 3))}
    arrays.update({f"residual_layer.{i}.conv.weight": rng.normal(0, 0.05, (64, 64, 3, 3)) for i in range(18)})
    arrays["output.weight"] = rng.normal(0, 0.05, (1, 64, 3, 3))
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    np.savez(path, **arrays)
    return arrays


def test_srcnn_loader_wires_the_published_layout(tmp_path):
    # Reference: the three correlations written out with F.conv2d and explicit edge padding.
    path = tmp_path / "srcnn_915_x3_oihw.npz"
    a = {k: torch.from_numpy(v) for k, v in _fake_srcnn_npz(path).items()}
    model = published.load_srcnn_weights(path)
    assert model.scale == 3 and model.options == {"variant": "915", "padding": "replicate"}
    x = torch.rand(1, 1, 20, 17)
    h = F.relu(F.conv2d(F.pad(x, (4, 4, 4, 4), mode="replicate"), a["conv1.weight"], a["conv1.bias"]))
    h = F.relu(F.conv2d(h, a["conv2.weight"], a["conv2.bias"]))
    ref = F.conv2d(F.pad(h, (2, 2, 2, 2), mode="replicate"), a["conv3.weight"], a["conv3.bias"])
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-6)
    # A 9-5-5 file loads as 9-5-5.
    _fake_srcnn_npz(tmp_path / "s955.npz", k2=5)
    assert published.load_srcnn_weights(tmp_path / "s955.npz", scale=2).options["variant"] == "955"


def test_vdsr_loader_wires_the_published_layout(tmp_path):
    path = tmp_path / "vdsr.npz"
    a = {k: torch.from_numpy(v) for k, v in _fake_vdsr_npz(path).items()}
    model = published.load_vdsr_weights(path)
    x = torch.rand(1, 1, 15, 18)
    h = F.relu(F.conv2d(x, a["input.weight"], padding=1))
    for i in range(18):
        h = F.relu(F.conv2d(h, a[f"residual_layer.{i}.conv.weight"], padding=1))
    ref = F.conv2d(h, a["output.weight"], padding=1) + x
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-6)


def test_weights_loaders_name_the_file_on_errors(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(KmsrInputError, match="nope.npz: no such file"):
        published.load_srcnn_weights(missing)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    with pytest.raises(KmsrInputError, match="corrupt.npz: not a readable .npz"):
        published.load_vdsr_weights(corrupt)
    vdsr = tmp_path / "vdsr.npz"
    _fake_vdsr_npz(vdsr)
    with pytest.raises(KmsrInputError, match="vdsr.npz: not SRCNN weights"):
        published.load_srcnn_weights(vdsr)
    srcnn = tmp_path / "srcnn.npz"
    _fake_srcnn_npz(srcnn)
    with pytest.raises(KmsrInputError, match="srcnn.npz: not VDSR weights"):
        published.load_vdsr_weights(srcnn)
    with pytest.raises(KmsrInputError, match="is a folder"):
        published.load_vdsr_weights(tmp_path)
    # Truncating a real archive makes it unreadable, and the message still names it.
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(srcnn.read_bytes()[:3000])
    with pytest.raises(KmsrInputError, match="truncated.npz"):
        published.load_srcnn_weights(truncated)


def test_weights_option_of_the_factories(tmp_path, host):
    path = tmp_path / "srcnn_x2.npz"
    _fake_srcnn_npz(path)
    model = host.get("backbones", "srcnn").create(scale=2, variant="915", weights=str(path))
    assert model.options["variant"] == "915" and model.scale == 2
    with pytest.raises(KmsrInputError, match="variant"):
        host.get("backbones", "srcnn").create(scale=2, variant="955", weights=str(path))
    vpath = tmp_path / "v.npz"
    _fake_vdsr_npz(vpath)
    with pytest.raises(KmsrInputError, match="layers"):
        host.get("backbones", "vdsr").create(scale=2, layers=10, weights=str(vpath))


# --------------------------------------------------------------------------- published weights: figures


def _weights(shared_data, *parts):
    path = shared_data.joinpath("weights", *parts)
    if not path.exists():
        pytest.skip(f"published weights {path} are missing")
    return path


def _sr_y(model, y_up: np.ndarray) -> np.ndarray:
    """Run a Y-channel model on an upscaled Y (in [0, 1]); output clipped to [0, 1], times 255."""
    x = torch.from_numpy(y_up).float()[None, None]
    with torch.inference_mode():
        out = model(x)[0, 0].double().numpy()
    return np.clip(out, 0.0, 1.0) * 255.0


@pytest.mark.parametrize("name,expected", [("butterfly", 27.58), ("woman", 30.92)])
def test_published_srcnn_x3_on_matlab_inputs(shared_data, name, expected):
    model = published.load_srcnn_weights(_weights(shared_data, "srcnn", "srcnn_915_x3_oihw.npz"))
    mat = shared_data / "matlab" / f"{name}_GT_x3.mat"
    if not mat.exists():
        pytest.skip(f"golden MATLAB array {mat} is missing")
    d = sio.loadmat(mat)
    out = _sr_y(model, d["im_b_y"] / 255.0)
    assert abs(psnr(out, d["im_gt_y"], crop_border=3) - expected) < 0.01
    # The padding convention matters: zero padding loses more than a dB on these images.
    zero = published.load_srcnn_weights(_weights(shared_data, "srcnn", "srcnn_915_x3_oihw.npz"), padding="zero")
    assert psnr(_sr_y(zero, d["im_b_y"] / 255.0), d["im_gt_y"], crop_border=3) < expected - 1.0


VDSR_IMAGES = ("bird", "butterfly", "head", "woman")
VDSR_PUBLISHED = {2: 37.36, 3: 33.35, 4: 30.97}
# The published x4 figure is measured on test arrays cropped to multiples of 12, not 4: the
# shipped butterfly_GT_x4.mat is 252x252 (modcrop(256, 4) would be 256). With a crop to
# multiples of 4 the mean is 30.95 dB.
VDSR_CROP = {2: 2, 3: 3, 4: 12}


def vdsr_test_input(png, scale: int, crop: int):
    """The pytorch-vdsr test arrays, rebuilt: HR modcropped (uint8), its Y, and the bicubic
    upscaling of the Y of MATLAB's unrounded, unclipped bicubic LR (all Y in [0, 255])."""
    gt = modcrop(np.round(read_image_array(png) * 255).astype(np.uint8), crop).astype(np.float64)
    lr = imresize(gt, 1.0 / scale)
    return rgb2y(gt / 255.0) * 255.0, imresize(rgb2y(lr / 255.0), scale) * 255.0


def test_vdsr_test_inputs_match_the_matlab_arrays(shared_data):
    checked = 0
    for mat in sorted((shared_data / "matlab").glob("*_GT_x*.mat")):
        name, scale = mat.stem.split("_GT_x")
        png = shared_data / "sr" / "Set5" / f"{name}.png"
        if not png.exists():
            continue
        d = sio.loadmat(mat)
        gt_y, b_y = vdsr_test_input(png, int(scale), VDSR_CROP[int(scale)])
        np.testing.assert_allclose(gt_y, d["im_gt_y"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(b_y, d["im_b_y"], rtol=0, atol=1e-9)
        checked += 1
    if not checked:
        pytest.skip("no golden MATLAB arrays with a Set5 image next to them")


@pytest.mark.slow
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_published_vdsr_on_set5(shared_data, scale):
    model = published.load_vdsr_weights(_weights(shared_data, "vdsr", "vdsr_model_epoch_50_state_dict.npz"), scale=scale)
    scores = []
    for name in VDSR_IMAGES:
        png = shared_data / "sr" / "Set5" / f"{name}.png"
        if not png.exists():
            pytest.skip(f"Set5 image {png} is missing")
        gt_y, b_y = vdsr_test_input(png, scale, VDSR_CROP[scale])
        scores.append(psnr(_sr_y(model, b_y / 255.0), gt_y, crop_border=scale))
    assert abs(np.mean(scores) - VDSR_PUBLISHED[scale]) <= 0.02, scores


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for torch")
@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_cuda_matches_cpu(host, name):
    torch.manual_seed(0)
    model = host.get("backbones", name).create(scale=2 if name != "dbpn" else 4, **TINY[name]).eval()
    x = torch.rand(2, model.in_channels, 24, 20)
    with torch.no_grad():
        ref = model(x)
        out = model.cuda()(x.cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-3, atol=1e-4)  # TF32 and cuDNN reorderings
