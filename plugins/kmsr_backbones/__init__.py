"""Built-in plugin: super-resolution backbones (KMSR, SRCNN, VDSR, EDSR, D-DBPN, CARN-M, IMDN).

Registered through the ``kmsr`` entry-point group like any third-party plugin. Importing this
package is cheap (torch loads when a network is built), so ``kmsr plugins`` stays quick.

Each backbone's registry ``info`` says how it is fed and what it accepts:

- ``input``: ``"upsampled"`` (the MATLAB-bicubic-upscaled image; output has the input's size)
  or ``"lr"`` (the LR image; output is ``scale`` times larger);
- ``channels``: ``"rgb"`` (3 channels) or ``"y"`` (1 channel: BT.601 studio-range Y in [0, 1],
  as MATLAB ``rgb2ycbcr`` gives, i.e. values in [16/255, 235/255]);
- ``scales``: the supported factors; ``receptive_field``: width in input pixels of the window one
  output pixel depends on, for the default options (the largest over ``scales`` where it depends
  on the scale; the built module's ``receptive_field`` is exact for its own options);
  ``size_multiple``: input sides must be multiples of it (1 for every built-in);
- ``options``: constructor options with their defaults;
- ``published_weights``: present when ``weights=PATH`` loads published weights (what file);
- ``init_allowed``: False when those published weights may serve only for comparison (no
  licence): ``kmsr train`` then refuses to start from them (``--init NAME:FILE`` or
  ``--option weights=FILE``); ``weights_licence`` says why;
- ``global_context``: True when the network pools over the whole input (IMDN's channel
  attention), so tiles with a ``receptive_field`` margin are close to, not equal to, untiled output.

Every command takes how a backbone is fed from this registration; attributes of the built
module (below) may refine the numbers for its own options but must not contradict the kinds
(:func:`kmsr_cli.models.backbone_convention`).

Factories are called as ``factory(scale=S, **options)`` and return a
:class:`~kmsr_backbones.base.SRBackbone` (a ``torch.nn.Module`` mapping a float (N, C, H, W)
tensor in [0, 1] to the output), which also carries ``scale``, ``options`` (resolved, enough to
rebuild it), ``input_kind``, ``channels``, ``receptive_field`` and ``size_multiple``.

``srcnn``, ``vdsr``, ``carn_m`` and ``imdn`` also take ``weights=PATH`` to load the published
weights (see :mod:`kmsr_backbones.published`; the files are not part of kmsr). ``imdn``'s are for
comparison only: the weights are never redistributed and kmsr never initialises a shipped model
from them.
"""

from __future__ import annotations

from kmsr_cli.hookspecs import hookimpl

from . import receptive_field as rf

# Option defaults, repeated here so that registering does not import torch; the tests check
# that they match the network classes.
KMSR_OPTIONS = {"variant": "edsr", "blocks": 16, "filters": 64, "res_scale": 1.0}
KMSR_LR_OPTIONS = {"blocks": 16, "filters": 64, "res_scale": 1.0}
SRCNN_OPTIONS = {"variant": "955", "padding": "replicate"}
VDSR_OPTIONS = {"layers": 20, "filters": 64}
EDSR_OPTIONS = {"blocks": 16, "filters": 64, "res_scale": 1.0}
DBPN_OPTIONS = {"variant": "d-dbpn", "stages": 7, "filters": 64, "feat": 256}
DBPN_PROJECTION = {2: (6, 2, 2), 4: (8, 4, 2), 8: (12, 8, 2)}
CARN_M_OPTIONS = {"filters": 64, "groups": 4, "multi_scale": False}
IMDN_OPTIONS = {"filters": 64, "modules": 6}
IMDN_LICENCE = ("comparison only: the weights are never redistributed and kmsr never initialises a shipped "
                "model from them (no licence is stated for the published IMDN weights)")

_LAZY = {
    "SRBackbone": "base",
    "KMSRNet": "kmsr_net",
    "KMSRNetLR": "kmsr_net",
    "SRCNN": "srcnn",
    "VDSR": "vdsr",
    "EDSR": "edsr",
    "DBPN": "dbpn",
    "CARNM": "carn",
    "IMDN": "imdn",
    "load_srcnn_weights": "published",
    "load_vdsr_weights": "published",
    "load_carn_m_weights": "published",
    "load_imdn_weights": "published",
}

# the keys of _LAZY are names (ruff cannot see that)
__all__ = [*_LAZY, "make_kmsr", "make_kmsr_lr", "make_srcnn", "make_vdsr", "make_edsr", "make_dbpn",  # noqa: PLE0604
           "make_carn_m", "make_imdn"]


def _lazy(name: str):
    """``name`` from its submodule (see ``_LAZY``), importing it (and torch) on first use."""
    import importlib

    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


def __getattr__(name: str):
    if name in _LAZY:
        return _lazy(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- factories


def make_kmsr(scale: int | None = None, **options):
    """The paper's network; options ``variant`` (``edsr``/``release``), ``blocks``, ``filters``, ``res_scale``."""
    from .kmsr_net import KMSRNet

    return KMSRNet(scale, **options)


def make_kmsr_lr(scale: int = 4, **options):
    """The KMSR body on the LR image with a pixel-shuffle upsampler; options ``blocks``, ``filters``, ``res_scale``."""
    from .kmsr_net import KMSRNetLR

    return KMSRNetLR(scale, **options)


def _check_weights_options(path, model, options: dict) -> None:
    from kmsr_ops.errors import KmsrInputError

    for k, v in options.items():
        if model.options.get(k) != v:
            raise KmsrInputError(f"{k}: the weights in {path} are for {k}={model.options.get(k)!r}, found {k}={v!r}")


def _published_or_new(cls: str, loader: str, scale, weights, options: dict, **load_options):
    """The network ``cls(scale, **options)``, or, given ``weights``, the published weights loaded
    by ``loader`` (:mod:`kmsr_backbones.published`) with ``options`` checked against them."""
    if weights is not None:
        model = _lazy(loader)(weights, scale=scale, **load_options)
        _check_weights_options(weights, model, options)
        return model
    return _lazy(cls)(scale, **options)


def make_srcnn(scale: int | None = None, *, weights=None, **options):
    """SRCNN; options ``variant`` (``955``/``915``), ``padding`` (``replicate``/``zero``), ``weights`` (a published .npz)."""
    return _published_or_new("SRCNN", "load_srcnn_weights", scale, weights, options,
                             padding=options.get("padding", "replicate"))


def make_vdsr(scale: int | None = None, *, weights=None, **options):
    """VDSR; options ``layers``, ``filters``, ``weights`` (the published .npz)."""
    return _published_or_new("VDSR", "load_vdsr_weights", scale, weights, options)


def make_edsr(scale: int = 4, **options):
    """EDSR (baseline by default); options ``blocks``, ``filters``, ``res_scale``."""
    from .edsr import EDSR

    return EDSR(scale, **options)


def make_dbpn(scale: int = 4, **options):
    """D-DBPN; options ``variant`` (``d-dbpn``/``small``), ``stages``, ``filters``, ``feat``."""
    from .dbpn import DBPN

    return DBPN(scale, **options)


def make_carn_m(scale: int = 4, *, weights=None, **options):
    """CARN-M; options ``filters``, ``groups``, ``multi_scale``, ``weights`` (the published .npz)."""
    return _published_or_new("CARNM", "load_carn_m_weights", scale, weights, options,
                             multi_scale=bool(options.get("multi_scale", False)))


def make_imdn(scale: int = 4, *, weights=None, **options):
    """IMDN; options ``filters``, ``modules``, ``weights`` (a published per-scale .npz, comparison only)."""
    return _published_or_new("IMDN", "load_imdn_weights", scale, weights, options)


@hookimpl
def kmsr_register_backbones(register):
    register(
        "kmsr",
        make_kmsr,
        description="KMSR network: residual blocks restoring the bicubic-upscaled RGB image "
        "(variant 'edsr' with a global skip by default, or the release's 'release')",
        input="upsampled", channels="rgb", scales=[2, 3, 4],
        receptive_field=rf.kmsr_rf(KMSR_OPTIONS["blocks"]), size_multiple=1,
        options=dict(KMSR_OPTIONS), variants=["edsr", "release"],
    )
    register(
        "kmsr_lr",
        make_kmsr_lr,
        description="KMSR's body (16 residual blocks, 64 filters) on the LR RGB image with pixel-shuffle "
        "upsampling at the end: cost grows with the LR pixel count (scale^2 less than 'kmsr')",
        input="lr", channels="rgb", scales=[2, 3, 4],
        receptive_field=max(rf.edsr_rf(s, KMSR_LR_OPTIONS["blocks"]) for s in (2, 3, 4)), size_multiple=1,
        options=dict(KMSR_LR_OPTIONS),
    )
    register(
        "srcnn",
        make_srcnn,
        description="SRCNN 9-5-5 (or 9-1-5, the published weights) on the Y of the bicubic-upscaled image",
        input="upsampled", channels="y", scales=[2, 3, 4],
        receptive_field=rf.srcnn_rf(5), size_multiple=1,
        options={**SRCNN_OPTIONS, "weights": None}, variants=["955", "915"],
        published_weights="srcnn_915_x{2,3,4}_oihw.npz (weights=PATH)",
    )
    register(
        "vdsr",
        make_vdsr,
        description="VDSR: 20 bias-free 3x3 convs with a global residual, Y of the bicubic-upscaled image",
        input="upsampled", channels="y", scales=[2, 3, 4],
        receptive_field=rf.vdsr_rf(VDSR_OPTIONS["layers"]), size_multiple=1,
        options={**VDSR_OPTIONS, "weights": None},
        published_weights="vdsr_model_epoch_50_state_dict.npz (weights=PATH)",
    )
    register(
        "edsr",
        make_edsr,
        description="EDSR-baseline: residual blocks and a pixel-shuffle upsampler on the LR RGB image",
        input="lr", channels="rgb", scales=[2, 3, 4],
        receptive_field=max(rf.edsr_rf(s, EDSR_OPTIONS["blocks"]) for s in (2, 3, 4)), size_multiple=1,
        options=dict(EDSR_OPTIONS),
    )
    register(
        "dbpn",
        make_dbpn,
        description="D-DBPN: dense up/down back-projection units on the LR RGB image ('small' variant for CPUs)",
        input="lr", channels="rgb", scales=[2, 4, 8],
        receptive_field=max(rf.dbpn_rf(s, DBPN_OPTIONS["stages"], *DBPN_PROJECTION[s]) for s in (2, 4, 8)),
        size_multiple=1, options=dict(DBPN_OPTIONS), variants=["d-dbpn", "small"],
    )
    register(
        "carn_m",
        make_carn_m,
        description="CARN-M (Ahn et al. 2018): cascading residual network with grouped convs and a "
        "pixel-shuffle upsampler on the LR RGB image; MIT-licensed published weights",
        input="lr", channels="rgb", scales=[2, 3, 4],
        receptive_field=max(rf.carn_m_rf(s) for s in (2, 3, 4)), size_multiple=1,
        options={**CARN_M_OPTIONS, "weights": None},
        published_weights="carn_m_state_dict.npz (weights=PATH; one file for x2/x3/x4)",
    )
    register(
        "imdn",
        make_imdn,
        description="IMDN (Hui et al. 2019): information multi-distillation modules with contrast-aware "
        "channel attention and a pixel-shuffle upsampler on the LR RGB image; published weights for "
        f"{IMDN_LICENCE}",
        input="lr", channels="rgb", scales=[2, 3, 4],
        receptive_field=max(rf.imdn_rf(s, IMDN_OPTIONS["modules"]) for s in (2, 3, 4)), size_multiple=1,
        options={**IMDN_OPTIONS, "weights": None}, global_context=True,
        published_weights="IMDN_x{2,3,4}_state_dict.npz (weights=PATH; one file per scale; comparison only)",
        init_allowed=False, weights_licence=IMDN_LICENCE,
    )
