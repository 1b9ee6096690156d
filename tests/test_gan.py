"""Kernel GAN: the paper's architecture, output constraints, the gradient penalty, training,
resume, checkpoints, sampling with provenance, and bad inputs."""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from scipy.stats import wasserstein_distance

from kmsr_cli.errors import CliError
from kmsr_cli.gan import augment_batch, gradient_penalty, state_path_for, train_gan
from kmsr_cli.plugin_host import PluginHost
from kmsr_ops.errors import KmsrInputError
from kmsr_ops.kernels import gaussian_kernel, kernel_moments

TINY = 1 / 32  # channel multiplier of the test networks: 32/16/8 generator, 8/16/32 critic channels


@pytest.fixture(scope="module")
def host():
    h = PluginHost()
    h.load_entry_points()
    h.check()
    h.collect()
    return h


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny networks are overhead-bound; one thread is as fast and keeps runs reproducible.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def gaussian_set(path, write_set, n=200, seed=0, lo=1.0, hi=2.0):
    rng = np.random.default_rng(seed)
    sig = rng.uniform(lo, hi, n)
    ks = np.stack([gaussian_kernel(25, s) for s in sig]).astype(np.float32)
    return write_set(path, ks, scale=2), sig


def widths(kernels):
    out = []
    for k in kernels:
        m = kernel_moments(k)
        out.append(np.sqrt(0.5 * (m["sigma_major"] ** 2 + m["sigma_minor"] ** 2)))
    return np.array(out)


def tiny_settings(**kw):
    return {"width_mult": TINY, "seed": 0, **kw}


def train_killed_at(host, data, out, settings, *, iters, killed, **kw):
    """A run of ``iters`` iterations interrupted (KeyboardInterrupt) after iteration ``killed``."""

    def kill(event):
        if event.stage == "gan.iteration" and event.done == killed:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_gan(host, [data], out, iters=iters, settings=settings, device="cpu", progress=kill, **kw)


def folder_names(folder):
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- architecture


def test_paper_architecture_shapes(host):
    gan = host.get("generators", "wgan-gp").create()
    G, D = gan.generator.eval(), gan.critic.eval()
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((type(m).__name__, tuple(o.shape[1:]))))
             for m in list(G.body) + list(D.body) if isinstance(m, (torch.nn.ConvTranspose2d, torch.nn.Conv2d))]
    with torch.no_grad():
        k = G(torch.randn(3, 100))
        score = D(k)
    for h in hooks:
        h.remove()
    assert k.shape == (3, 1, 25, 25)
    assert score.shape == (3,)
    assert seen == [
        ("ConvTranspose2d", (1024, 4, 4)),
        ("ConvTranspose2d", (512, 8, 8)),
        ("ConvTranspose2d", (256, 16, 16)),
        ("ConvTranspose2d", (1, 32, 32)),
        ("Conv2d", (1, 25, 25)),
        ("Conv2d", (256, 12, 12)),
        ("Conv2d", (512, 6, 6)),
        ("Conv2d", (1024, 3, 3)),
        ("Conv2d", (1, 1, 1)),
    ]
    convt = [m for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [m.kernel_size for m in convt] == [(4, 4)] * 4
    assert [m.kernel_size for m in G.modules() if type(m) is torch.nn.Conv2d] == [(8, 8)]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in G.modules()) == 3
    assert sum(isinstance(m, torch.nn.ReLU) for m in G.modules()) == 3
    strided = [m for m in D.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert [m.out_channels for m in strided] == [256, 512, 1024]
    assert sum(isinstance(m, torch.nn.InstanceNorm2d) for m in D.modules()) == 3
    slopes = [m.negative_slope for m in D.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert slopes == [0.2] * 3
    assert not any(isinstance(m, (torch.nn.Sigmoid, torch.nn.BatchNorm2d)) for m in D.modules())


@pytest.mark.parametrize("output", ["relu", "clip", "softmax"])
def test_outputs_are_kernels_for_random_weights(host, output):
    torch.manual_seed(1)
    gan = host.get("generators", "wgan-gp").create(width_mult=TINY, output=output)
    for std in (0.02, 1.0, 30.0):  # small, unit and huge weights
        for p in gan.generator.parameters():
            torch.nn.init.normal_(p, 0.0, std)
        k = gan.generator(torch.randn(16, 100)).detach().double()
        assert torch.isfinite(k).all()
        assert (k >= 0).all()
        np.testing.assert_allclose(k.sum(dim=(1, 2, 3)).numpy(), 1.0, atol=1e-5)
    # Every pre-activation negative: relu/clip give the uniform kernel, never 0/0.
    last = gan.generator.body[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.constant_(last.bias, -5.0)
    k = gan.generator(torch.randn(4, 100)).detach().double()
    np.testing.assert_allclose(k.numpy(), 1.0 / 625, rtol=1e-5)


def test_other_kernel_sizes_are_refused(host, tmp_path, write_set, random_kernels):
    gan = host.get("generators", "wgan-gp").create(width_mult=TINY)
    with pytest.raises(KmsrInputError, match="25x25.*size 31"):
        gan.sample(2, size=31, rng=np.random.default_rng(0))
    path = write_set(tmp_path / "k31.h5", random_kernels(40, 31))
    with pytest.raises(CliError, match=r"k31.h5: holds 31x31 kernels.*25x25"):
        train_gan(host, [path], tmp_path / "g.safetensors", iters=1, settings=tiny_settings())
    assert folder_names(tmp_path) == ["k31.h5"]


def test_untrained_generator_refuses_to_sample(host):
    gan = host.get("generators", "wgan-gp").create(width_mult=TINY)
    with pytest.raises(KmsrInputError, match="no checkpoint"):
        gan.sample(2, size=25, rng=np.random.default_rng(0))


# --------------------------------------------------------------------------- losses


class LinearCritic(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return (x.flatten(1) * self.w.flatten()).sum(1)


class QuadraticCritic(torch.nn.Module):
    def forward(self, x):
        return 0.5 * (x.flatten(1) ** 2).sum(1)


def test_gradient_penalty_linear_critic():
    # D(x) = <w, x> has gradient w everywhere: GP = (||w|| - 1)^2 whatever the samples.
    w = torch.zeros(1, 5, 5, dtype=torch.float64)
    w[0, 1, 2], w[0, 3, 3] = 2.0, 2.0 * np.sqrt(2.0)  # ||w|| = sqrt(4 + 8) = sqrt(12)
    real = torch.rand(6, 1, 5, 5, dtype=torch.float64)
    fake = torch.rand(6, 1, 5, 5, dtype=torch.float64)
    eps = torch.rand(6, 1, 1, 1, dtype=torch.float64)
    gp = gradient_penalty(LinearCritic(w), real, fake, eps)
    assert float(gp.detach()) == pytest.approx((np.sqrt(12.0) - 1.0) ** 2, rel=1e-12)
    # It trains the critic: d GP / d w = 2 (||w|| - 1) w / ||w||.
    critic = LinearCritic(w.clone())
    gradient_penalty(critic, real, fake, eps).backward()
    expected = 2 * (np.sqrt(12.0) - 1.0) * w / np.sqrt(12.0)
    np.testing.assert_allclose(critic.w.grad.numpy(), expected.numpy(), rtol=1e-12)


def test_gradient_penalty_quadratic_critic():
    # D(x) = ||x||^2 / 2 has gradient x: GP = mean_i (||x_hat_i|| - 1)^2 with x_hat by hand.
    real = torch.rand(4, 1, 3, 3, dtype=torch.float64)
    fake = torch.rand(4, 1, 3, 3, dtype=torch.float64)
    eps = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64).reshape(4, 1, 1, 1)
    x_hat = [fake[0], 0.25 * real[1] + 0.75 * fake[1], 0.5 * real[2] + 0.5 * fake[2], real[3]]
    expected = np.mean([(float(torch.linalg.norm(x)) - 1.0) ** 2 for x in x_hat])
    assert float(gradient_penalty(QuadraticCritic(), real, fake, eps).detach()) == pytest.approx(expected, rel=1e-12)


def test_augmentation_only_applies_symmetries_of_the_square():
    x = torch.rand(64, 1, 5, 5)
    g = torch.Generator().manual_seed(0)
    y = augment_batch(x, g)
    seen = set()
    for a, b in zip(x[:, 0], y[:, 0]):
        images = [a, a.T, a.flip(0), a.flip(1), a.flip(0).flip(1), a.T.flip(0), a.T.flip(1), a.T.flip(0).flip(1)]
        matches = [j for j, t in enumerate(images) if torch.equal(t, b)]
        assert matches, "not a flip/transpose of its input"
        seen.add(matches[0])
    assert len(seen) == 8


# --------------------------------------------------------------------------- training


# Learning rate 1e-3 (not the paper's 1e-4): a tiny network has to move within 100 iterations.
TRAIN_ITERS = 100
TRAIN_LR = 1e-3


def test_training_moves_widths_towards_the_data(host, tmp_path, write_set):
    """Gaussians with sigma in [1, 2]: the generated width distribution gets much closer."""
    data, _ = gaussian_set(tmp_path / "g.h5", write_set, n=200)
    with h5py.File(data, "r") as f:
        target = widths(f["kernels"][...].astype(np.float64))
    backend = host.get("generators", "wgan-gp")
    torch.manual_seed(0)
    before_gan = backend.create(width_mult=TINY)
    before = widths(before_gan.draw(200, rng=np.random.default_rng(5)))
    out = tmp_path / "g.safetensors"
    summary = train_gan(host, [data], out, iters=TRAIN_ITERS, settings=tiny_settings(lr=TRAIN_LR), device="cpu")
    after = widths(backend.create(checkpoint=out).sample(200, size=25, rng=np.random.default_rng(5)))
    d_before = wasserstein_distance(before, target)
    d_after = wasserstein_distance(after, target)
    assert d_after < 0.35 * d_before, (d_before, d_after, np.percentile(after, [5, 50, 95]))
    assert summary["iterations"] == TRAIN_ITERS and np.isfinite(summary["wasserstein"])


def test_resume_is_equivalent_to_one_run(host, tmp_path, write_set):
    data, _ = gaussian_set(tmp_path / "g.h5", write_set, n=64)
    settings = tiny_settings(augment=True)
    straight = tmp_path / "straight.safetensors"
    train_gan(host, [data], straight, iters=6, settings=settings, device="cpu")
    split = tmp_path / "split.safetensors"
    first = train_gan(host, [data], split, iters=3, settings=settings, device="cpu")
    assert first["iterations"] == 3
    # The state file is plain tensors and numbers: it loads with weights_only=True.
    state = torch.load(state_path_for(split), weights_only=True)
    assert int(state["iteration"]) == 3
    halfway = load_file(str(split))
    second = train_gan(host, [data], split, iters=6, settings={}, device="cpu", resume=True)
    assert second["start_iteration"] == 3 and second["iterations"] == 6
    a, b = load_file(str(straight)), load_file(str(split))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    moved = max(float((a[k].double() - halfway[k].double()).abs().max()) for k in a if a[k].is_floating_point())
    assert moved > 1e-4, "the last three iterations changed nothing: the comparison would be vacuous"
    with safe_open(str(split), "pt") as f:
        assert f.metadata()["iteration"] == "6"


def test_resume_refuses_other_settings_or_data(host, tmp_path, write_set):
    data, _ = gaussian_set(tmp_path / "g.h5", write_set, n=40)
    other, _ = gaussian_set(tmp_path / "h.h5", write_set, n=40, seed=1)
    out = tmp_path / "g.safetensors"
    train_gan(host, [data], out, iters=1, settings=tiny_settings(), device="cpu")
    with pytest.raises(CliError, match="--loss clip"):
        train_gan(host, [data], out, iters=2, settings={"loss": "clip"}, resume=True)
    with pytest.raises(CliError, match="another kernel set"):
        train_gan(host, [other], out, iters=2, settings={}, resume=True)
    with pytest.raises(CliError, match="no checkpoint to resume"):
        train_gan(host, [data], tmp_path / "none.safetensors", iters=2, settings={}, resume=True)


def test_clip_loss_keeps_critic_weights_clipped(host, tmp_path, write_set):
    data, _ = gaussian_set(tmp_path / "g.h5", write_set, n=40)
    out = tmp_path / "c.safetensors"
    summary = train_gan(host, [data], out, iters=2, settings=tiny_settings(loss="clip"), device="cpu")
    assert summary["settings"]["lr"] == 5e-5
    tensors = load_file(str(out))
    critic = {k: v for k, v in tensors.items() if k.startswith("critic.")}
    assert critic and all(float(v.abs().max()) <= 0.01 + 1e-9 for v in critic.values())
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["loss"] == "clip"


# --------------------------------------------------------------------------- checkpoints through the CLI


@pytest.fixture(scope="module")
def trained(tmp_path_factory, host):
    """A tiny checkpoint trained for a few iterations, its training set, and the folder."""
    from conftest import write_test_set

    folder = tmp_path_factory.mktemp("gan")
    data, _ = gaussian_set(folder / "train.h5", write_test_set, n=64)
    out = folder / "gan.safetensors"
    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(1)
        train_gan(host, [data], out, iters=2, settings=tiny_settings(), device="cpu")
    return folder, data, out


def test_cli_train_writes_checkpoint_metadata_state_and_grid(run_kmsr, tmp_path, write_set):
    data, _ = gaussian_set(tmp_path / "train.h5", write_set, n=50)
    out = tmp_path / "gan.safetensors"
    proc = run_kmsr("gan", "train", data, "-o", out, "--iters", "2", "--width-mult", str(TINY), "--device", "cpu",
                    "--checkpoint-every", "1", "--sample-every", "2", "--samples-png", "grid.png", "--json",
                    env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["iterations"] == 2 and doc["path"] == str(out)
    # the end-of-run check of the samples measures the training kernels' widths (Gaussians of known sigma)
    _, sig = gaussian_set(tmp_path / "again.h5", write_set, n=50)
    check = doc["sample_check"]
    assert check["width_median_estimated"] == pytest.approx(float(np.median(sig)), rel=0.03)
    assert ("do not look like its training kernels" in proc.stderr) == (not check["passed"])
    assert doc["settings"]["loss"] == "gp" and doc["settings"]["lr"] == 1e-4 and doc["settings"]["gp_lambda"] == 10
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    with h5py.File(data, "r") as f:
        ks = np.ascontiguousarray(f["kernels"][...], dtype=np.float32)
    fingerprint = hashlib.sha256(json.dumps(list(ks.shape)).encode() + ks.tobytes()).hexdigest()
    assert meta["format"] == "kmsr-gan" and meta["architecture"] == "kmsr-wgan-gp"
    assert meta["kernel_size"] == "25" and meta["loss"] == "gp" and meta["iteration"] == "2"
    assert meta["training_set_sha256"] == fingerprint
    assert meta["kmsr_version"] and meta["scale"] == "2"
    assert float(meta["width_mult"]) == TINY
    assert state_path_for(out).is_file()
    from PIL import Image

    with Image.open(tmp_path / "grid.png") as im:
        assert im.size == (8 * 100 + 9 * 2, 8 * 100 + 9 * 2)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cli_sample_writes_provenance(run_kmsr, trained, tmp_path):
    folder, _, ckpt = trained
    out = tmp_path / "gen.h5"
    proc = run_kmsr("gan", "sample", ckpt, "-n", "12", "-o", out, "--seed", "7", "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    with h5py.File(out, "r") as f:
        ks = f["kernels"][...]
        g = f["provenance"]
        origins = [s.decode() for s in g["origin"][...]]
        sources = [s.decode() for s in g["source"][...]]
        params = [json.loads(p) for p in g["params"][...]]
        seeds, index = g["seed"][...], g["index"][...]
        assert int(f.attrs["scale"]) == 2
    assert ks.shape == (12, 25, 25)
    assert (ks >= 0).all()
    np.testing.assert_allclose(ks.astype(np.float64).sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert origins == ["generated"] * 12 and sources == [str(ckpt)] * 12
    assert all(p["checkpoint_sha256"] == digest and p["iteration"] == 2 for p in params)
    assert seeds.tolist() == [7] * 12 and index.tolist() == list(range(12))
    # Same seed, same kernels; kernel i does not depend on how many are drawn.
    from kmsr_cli.gan import sample_from_checkpoint

    again, *_ = sample_from_checkpoint(_host(), ckpt, 5, seed=7)
    np.testing.assert_allclose(again, ks[:5], atol=1e-6)


def _host():
    from kmsr_cli.plugin_host import get_host

    return get_host()


def _rewrite(src, dst, *, meta=None, drop=None, tensors=None):
    t = load_file(str(src))
    with safe_open(str(src), "pt") as f:
        m = dict(f.metadata())
    m.update(meta or {})
    for k in drop or ():
        m.pop(k, None)
    save_file(tensors(t) if tensors else t, str(dst), metadata=m)
    return dst


@pytest.mark.parametrize(
    "case,pattern",
    [
        ("architecture", r"another architecture: architecture='edsr'"),
        ("kernel_size", r"another architecture: kernel_size='31'"),
        ("format", r"not a kmsr kernel-GAN checkpoint"),
        ("width", r"tensor generator\.body\.0\.weight has shape"),
        ("garbage", r"not a readable safetensors checkpoint"),
    ],
)
def test_wrong_checkpoint_is_named(host, trained, tmp_path, case, pattern):
    _, _, ckpt = trained
    bad = tmp_path / "bad.safetensors"
    if case == "architecture":
        _rewrite(ckpt, bad, meta={"architecture": "edsr"})
    elif case == "kernel_size":
        _rewrite(ckpt, bad, meta={"kernel_size": "31"})
    elif case == "format":
        _rewrite(ckpt, bad, drop=["format"])
    elif case == "width":
        _rewrite(ckpt, bad, meta={"width_mult": "0.0625"})
    else:
        bad.write_bytes(b"\x00\x01 not safetensors at all")
    with pytest.raises(KmsrInputError, match=pattern) as exc:
        host.get("generators", "wgan-gp").create(checkpoint=bad)
    assert str(bad) in str(exc.value)


def test_cli_wrong_checkpoint_is_one_line_and_writes_nothing(run_kmsr, trained, tmp_path):
    _, _, ckpt = trained
    bad = _rewrite(ckpt, tmp_path / "other.safetensors", meta={"architecture": "edsr"})
    proc = run_kmsr("gan", "sample", bad, "-n", "3", "-o", tmp_path / "g.h5", "--device", "cpu")
    assert proc.returncode == 1
    assert str(bad) in proc.stderr and "another architecture" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert folder_names(tmp_path) == ["other.safetensors"]


# --------------------------------------------------------------------------- bad training inputs


def _bad_set(path, case):
    from kmsr_cli.kernelset import FORMAT_NAME

    ks = np.stack([gaussian_kernel(25, 1.5)] * 40).astype(np.float32)
    if case == "nan":
        ks[3, 4, 4] = np.nan
    elif case == "negative":
        ks[5, 0, 0] = -0.05
    elif case == "empty":
        ks = np.zeros((0, 25, 25), np.float32)
    with h5py.File(path, "w") as f:
        if case != "not-a-set":
            f.attrs.update({"format": FORMAT_NAME, "format_version": 1, "scale": 2})
        f.create_dataset("kernels", data=ks)
    return path


@pytest.mark.parametrize(
    "case,pattern",
    [("nan", r"kernels\[3\]: expected finite"), ("negative", r"kernels\[5\]: expected entries >= 0"),
     ("empty", "holds no kernels"), ("not-a-set", "not a kmsr kernel set")],
)
def test_bad_training_sets_are_named_and_leave_nothing(host, tmp_path, case, pattern):
    bad = _bad_set(tmp_path / f"{case}.h5", case)
    with pytest.raises(CliError, match=pattern) as exc:
        train_gan(host, [bad], tmp_path / "g.safetensors", iters=1, settings=tiny_settings(), device="cpu")
    assert str(bad) in str(exc.value)
    assert folder_names(tmp_path) == [bad.name]


def test_cli_bad_training_set(run_kmsr, tmp_path):
    bad = _bad_set(tmp_path / "nan.h5", "nan")
    proc = run_kmsr("gan", "train", bad, "-o", tmp_path / "g.safetensors", "--iters", "1", "--width-mult", "0.05",
                    "--device", "cpu")
    assert proc.returncode == 1
    assert f"{bad}: kernels[3]: expected finite" in proc.stderr and "Traceback" not in proc.stderr
    assert folder_names(tmp_path) == ["nan.h5"]


def test_linear_lr_decay_follows_its_schedule_and_resumes_exactly(host, tmp_path, write_set, monkeypatch):
    """--lr-decay linear: iteration i (0-based) steps with lr * (1 - i / iters), both networks;
    a run killed halfway and resumed with the same --iters ends with the same weights."""
    data, _ = gaussian_set(tmp_path / "g.h5", write_set, n=64)
    settings = tiny_settings(lr_decay="linear", lr=1e-3)
    seen = []

    def record(event):
        if event.stage == "gan.iteration":
            seen.append(event.data.iteration)

    import kmsr_cli.gan as gan_mod

    lrs = []
    real_step = gan_mod.GanTrainer.step

    def spy(self):
        out = real_step(self)
        lrs.append((self.opt_g.param_groups[0]["lr"], self.opt_d.param_groups[0]["lr"]))
        return out

    with monkeypatch.context() as m:
        m.setattr(gan_mod.GanTrainer, "step", spy)
        straight = tmp_path / "straight.safetensors"
        train_gan(host, [data], straight, iters=6, settings=settings, device="cpu", progress=record)
    assert seen == [1, 2, 3, 4, 5, 6]
    for i, (g, d) in enumerate(lrs):
        assert g == pytest.approx(1e-3 * (6 - i) / 6, rel=1e-12) and d == g

    split = tmp_path / "split.safetensors"

    train_killed_at(host, data, split, settings, iters=6, killed=3)
    resumed = train_gan(host, [data], split, iters=6, settings={}, device="cpu", resume=True)
    assert resumed["start_iteration"] == 3 and resumed["settings"]["lr_decay"] == "linear"
    a, b = load_file(str(straight)), load_file(str(split))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_lr_decay_rejects_unknown_schedules(host, tmp_path, write_set):
    data, _ = gaussian_set(tmp_path / "g.h5", write_set, n=40)
    with pytest.raises(KmsrInputError, match="lr_decay: expected one of none, linear, found 'cosine'"):
        train_gan(host, [data], tmp_path / "x.safetensors", iters=2, settings=tiny_settings(lr_decay="cosine"),
                  device="cpu")


# --------------------------------------------------------------------------- --ema (weight averaging)


def test_ema_saves_the_moving_average_of_the_live_weights(host, tmp_path, write_set, monkeypatch):
    """--ema B: the file's generator parameters are a_t = d a_(t-1) + (1 - d) w_t with
    d = min(B, (1 + t) / (10 + t)) over the live weights w_t after each generator update, started
    from the initial weights; the state keeps the live weights; the critic is the live one."""
    data, _ = gaussian_set(tmp_path / "g.h5", write_set, n=64)
    import kmsr_cli.gan as gan_mod

    live: list[dict] = []
    real_step = gan_mod.GanTrainer.generator_step
    initial: dict = {}

    def spy(self):
        if not initial:
            initial.update({n: p.detach().double().clone() for n, p in self.gan.generator.named_parameters()})
        out = real_step(self)
        live.append({n: p.detach().double().clone() for n, p in self.gan.generator.named_parameters()})
        return out

    out = tmp_path / "ema.safetensors"
    with monkeypatch.context() as m:
        m.setattr(gan_mod.GanTrainer, "generator_step", spy)
        train_gan(host, [data], out, iters=5, settings=tiny_settings(ema=0.5, lr=1e-3), device="cpu")
    avg = dict(initial)
    for t, w in enumerate(live):
        d = min(0.5, (1 + t) / (10 + t))
        avg = {n: d * avg[n] + (1 - d) * w[n] for n in avg}
    saved = load_file(str(out))
    for n, a in avg.items():
        torch.testing.assert_close(saved[f"generator.{n}"].double(), a, rtol=0, atol=1e-6, msg=n)
    state = torch.load(state_path_for(out), weights_only=True)
    for n, w in live[-1].items():
        torch.testing.assert_close(state["generator_live"][n].double(), w, rtol=0, atol=0, msg=n)
    assert max(float((live[-1][n] - avg[n]).abs().max()) for n in avg) > 1e-4, "average == live: vacuous"
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["averaged_weights"] == "ema"


def test_ema_batch_norm_statistics_are_those_of_the_averaged_weights(host, tmp_path, write_set):
    """The saved running mean and variance of each batch-norm layer estimate the statistics of that
    layer's input under the averaged weights: checked against 8192 fresh z (another seed)."""
    data, _ = gaussian_set(tmp_path / "g.h5", write_set, n=64)
    out = tmp_path / "ema.safetensors"
    train_gan(host, [data], out, iters=8, settings=tiny_settings(ema=0.9, lr=3e-3), device="cpu")
    gan = host.get("generators", "wgan-gp").create(checkpoint=out, device="cpu")
    G = gan.generator.eval()
    inputs = {}
    norms = [m for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    hooks = [m.register_forward_hook(lambda m, i, o: inputs.__setitem__(m, i[0].detach())) for m in norms]
    with torch.no_grad():
        G(torch.randn(8192, 100, generator=torch.Generator().manual_seed(12345)))
    for h in hooks:
        h.remove()
    for m in norms:
        x = inputs[m].transpose(0, 1).flatten(1)
        mean, var = x.mean(1), x.var(1)
        assert torch.all((m.running_mean - mean).abs() <= 0.15 * var.sqrt() + 1e-6)
        assert torch.all((m.running_var / var - 1).abs() <= 0.2)


def test_ema_resumes_exactly(host, tmp_path, write_set):
    """Killed and resumed, an --ema run ends bit for bit like an uninterrupted one, with the averaged
    weights scored (watch), previewed and saved after every iteration in between."""
    data, _ = gaussian_set(tmp_path / "g.h5", write_set, n=64)
    settings = tiny_settings(ema=0.9, lr=1e-3)
    every = {"checkpoint_every": 1, "watch_every": 1, "sample_every": 1}
    straight = tmp_path / "straight.safetensors"
    train_gan(host, [data], straight, iters=6, settings=settings, device="cpu", samples_png=tmp_path / "a.png", **every)
    split = tmp_path / "split.safetensors"
    train_killed_at(host, data, split, settings, iters=6, killed=3, samples_png=tmp_path / "b.png", **every)
    halfway = load_file(str(split))
    resumed = train_gan(host, [data], split, iters=6, settings={}, device="cpu", resume=True,
                        samples_png=tmp_path / "b.png", **every)
    assert resumed["start_iteration"] == 3 and resumed["settings"]["ema"] == 0.9
    a, b = load_file(str(straight)), load_file(str(split))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    sa, sb = torch.load(state_path_for(straight), weights_only=True), torch.load(state_path_for(split), weights_only=True)
    for part in ("generator_live", "generator_average"):
        for key in sa[part]:
            torch.testing.assert_close(sa[part][key], sb[part][key], rtol=0, atol=0, msg=f"{part}.{key}")
    assert torch.equal(sa["rng_state"], sb["rng_state"])
    assert max(float((a[k].double() - halfway[k].double()).abs().max()) for k in a if a[k].is_floating_point()) > 1e-5


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), "fast", True])
def test_ema_rejects_decays_outside_0_1(host, tmp_path, write_set, bad):
    data, _ = gaussian_set(tmp_path / "g.h5", write_set, n=40)
    with pytest.raises(KmsrInputError, match=r"ema: expected a decay in \[0, 1\) \(0: off\)"):
        train_gan(host, [data], tmp_path / "x.safetensors", iters=2, settings=tiny_settings(ema=bad), device="cpu")
    assert folder_names(tmp_path) == ["g.h5"]


def test_ema_run_restored_by_the_watch_resumes_from_the_restored_weights(host, tmp_path, write_set, monkeypatch):
    """When the collapse watch puts back earlier (averaged) weights, the state's live weights and
    average become those weights, so --resume continues from them, as a run without --ema does."""
    import kmsr_cli.gan_watch as watch_mod

    data, _ = gaussian_set(tmp_path / "g.h5", write_set, n=64)
    real = watch_mod.CollapseWatch
    # ratio 0: any final score counts as a collapse, so the best checkpoint is always put back
    monkeypatch.setattr(watch_mod, "CollapseWatch", lambda *a, **kw: real(*a, **{**kw, "ratio": 0.0}))
    out = tmp_path / "ema.safetensors"
    run = train_gan(host, [data], out, iters=6, settings=tiny_settings(ema=0.5, lr=3e-3), device="cpu", watch_every=2)
    assert run["collapse_watch"]["restored"]
    saved = load_file(str(out))
    state = torch.load(state_path_for(out), weights_only=True)
    for key, value in state["generator_live"].items():
        torch.testing.assert_close(value, saved[f"generator.{key}"], rtol=0, atol=0, msg=key)
    for key, value in state["generator_average"].items():
        torch.testing.assert_close(value, saved[f"generator.{key}"], rtol=0, atol=0, msg=key)
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["weights_from_iteration"] == str(run["collapse_watch"]["best_iteration"])


def test_a_run_saved_before_ema_existed_resumes_without_an_average(host, tmp_path, write_set):
    """A state whose settings have no "ema" key (written before the option, when every run saved
    its last weights) resumes as such, although the default is now an average."""
    data, _ = gaussian_set(tmp_path / "g.h5", write_set, n=64)
    out = tmp_path / "old.safetensors"
    train_gan(host, [data], out, iters=2, settings=tiny_settings(ema=0.0), device="cpu")
    state_file = state_path_for(out)
    state = torch.load(state_file, weights_only=True)
    settings = json.loads(state["settings"])
    del settings["ema"]
    state["settings"] = json.dumps(settings, sort_keys=True)
    torch.save(state, state_file)
    resumed = train_gan(host, [data], out, iters=4, settings={}, device="cpu", resume=True)
    assert resumed["start_iteration"] == 2 and resumed["settings"]["ema"] == 0.0
    assert "generator_live" not in torch.load(state_file, weights_only=True)


def test_new_runs_average_by_default(host, tmp_path, write_set):
    data, _ = gaussian_set(tmp_path / "g.h5", write_set, n=40)
    run = train_gan(host, [data], tmp_path / "x.safetensors", iters=2, settings=tiny_settings(), device="cpu")
    assert run["settings"]["ema"] == 0.999
    with safe_open(str(tmp_path / "x.safetensors"), "pt") as f:
        assert f.metadata()["averaged_weights"] == "ema"
