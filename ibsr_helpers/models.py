"""Model factory: every network of the course, 2D and 3D, built by name or from its spec.

The engine never imports a network class itself: :func:`build_network` turns a
:class:`ModelSpec` (made from a config by :func:`ibsr_helpers.plan.specs`) into the network
(its input channels, constructor settings and memory layout), in the style of smp's
``create_model``; :attr:`ModelSpec.divisor` says how much the preprocessing pads the
input, :attr:`ModelSpec.fixed_size` the one size a network takes if it takes only one
(UNETR), :func:`spatial_dims` how to feed it. Extra keyword arguments (from a YAML config's
``model`` section) go to the constructor.

==================  ====  ===========================================================
name                dims  network
==================  ====  ===========================================================
``unet2d``          2     smp ``Unet``, ResNet encoder (``encoder_name="resnet18"``)
``efficientunet2d`` 2     smp ``Unet``, EfficientNet encoder (``"timm-efficientnet-b0"``)
``unet3d``          3     MONAI ``UNet`` with residual units
``unetr``           3     MONAI ``UNETR`` (a ViT encoder; needs ``img_size``)
``segresnet``       3     MONAI ``SegResNet``
==================  ====  ===========================================================

2.5D models are the 2D ones with ``in_channels = 2k + 1`` neighbouring slices. The smp
U-Nets and ``unet3d`` take ``full_resolution_skip=True`` for a last stage that also sees the
input (:class:`FullResolutionUnet`, :class:`FullResolutionUNet3d`).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ibsr_helpers import environment
from ibsr_helpers.errors import IBSRError

__all__ = [
    "model_settings",
    "MODEL_NAMES",
    "build_model",
    "ModelSpec",
    "build_network",
    "fixed_size_setting",
    "spatial_dims",
    "size_divisor",
    "count_parameters",
    "FullResolutionUnet",
    "FullResolutionUNet3d",
]


# --------------------------------------------------------------------------- pretrained weights
def _with_pretrained_weights(
    build: Callable[[], nn.Module], encoder: str, weights: Any
) -> nn.Module:
    """Run ``build`` (which downloads encoder weights), failing fast when it cannot.

    Offline (``HF_HUB_OFFLINE=1``) or with the Hub unreachable
    (:func:`ibsr_helpers.environment.hub_offline`), the hub client is put in offline mode,
    so weights already in the local cache still load and nothing retries.
    """
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    if environment.hub_offline():
        constants.HF_HUB_OFFLINE = True  # read by huggingface_hub at every request
    try:
        return build()
    except OSError as exc:  # every huggingface_hub download error is an OSError
        raise IBSRError(
            f"pretrained encoder weights for {encoder!r} ({weights}) could not be downloaded; "
            "set encoder_weights: null, or run where the internet is reachable "
            f"({type(exc).__name__})"
        ) from exc
    finally:
        constants.HF_HUB_OFFLINE = saved


# --------------------------------------------------------------------------- builders
class FullResolutionUnet(nn.Module):
    """An smp ``Unet`` whose last decoder block also sees the input slices (full resolution).

    smp's ``UnetDecoder`` drops the encoder's first, full-resolution feature (the input
    itself): its last block upsamples from half resolution with no skip, so every tissue
    edge is drawn from features a voxel coarser than the image. This adds one more smp
    ``UnetDecoderBlock`` at full resolution, fed the decoder's output and the input
    slices, before the segmentation head (``model.full_resolution_skip: true``).
    """

    def __init__(self, unet: nn.Module, in_channels: int) -> None:
        """Wrap ``unet`` (an smp ``Unet``), whose input has ``in_channels`` channels."""
        super().__init__()
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoderBlock

        self.unet = unet
        width = unet.segmentation_head[0].in_channels
        self.full_resolution = UnetDecoderBlock(width, in_channels, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, classes, H, W)`` of slices ``(B, in_channels, H, W)``."""
        decoded = self.unet.decoder(self.unet.encoder(x))
        refined = self.full_resolution(decoded, x.shape[-2], x.shape[-1], skip_connection=x)
        return self.unet.segmentation_head(refined)


class FullResolutionUNet3d(nn.Module):
    """A MONAI ``UNet`` whose last stage also sees the input volume (full resolution).

    MONAI's ``UNet`` downsamples in its first layer and keeps no feature at the input's
    resolution: its last layer is a transposed convolution from half resolution straight
    to the class logits (4 channels), so, as in smp's 2D decoder, every tissue edge is drawn
    from features a voxel coarser than the image. This replaces that layer with a
    transposed convolution to ``width`` feature channels, concatenates the input, and adds
    one 3x3x3 convolution at full resolution and a 1x1x1 one to the logits
    (``model.full_resolution_skip: true`` for ``unet3d``). Full-resolution 3D convolutions
    are dear on a CPU: with ``width`` 8 a training step of four 64^3 patches costs a third
    more, with 16 two and a half times as much (2 cores, bf16).
    """

    def __init__(self, unet: nn.Module, in_channels: int, out_channels: int, width: int) -> None:
        """Wrap ``unet`` (a MONAI ``UNet`` of ``in_channels`` -> ``out_channels``)."""
        super().__init__()
        from monai.networks.blocks import Convolution

        down, middle, up = unet.model
        self.down, self.middle = down, middle
        last = next(m for m in up.modules() if isinstance(m, nn.ConvTranspose3d))
        norm, act, dropout = unet.norm, unet.act, unet.dropout
        self.up = Convolution(
            3,
            last.in_channels,
            width,
            strides=last.stride,
            kernel_size=unet.up_kernel_size,
            act=act,
            norm=norm,
            dropout=dropout,
            is_transposed=True,
        )
        self.refine = Convolution(
            3, width + in_channels, width, kernel_size=3, act=act, norm=norm, dropout=dropout
        )
        self.head = Convolution(3, width, out_channels, kernel_size=1, conv_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, classes, D, H, W)`` of volumes ``(B, in_channels, D, H, W)``."""
        features = self.up(self.middle(self.down(x)))
        return self.head(self.refine(torch.cat([features, x], dim=1)))


def _smp_unet(
    in_channels: int,
    out_channels: int,
    encoder_name: str,
    encoder_weights: str | bool | None = None,
    full_resolution_skip: bool = False,
    **kwargs: Any,
) -> nn.Module:
    smp = environment.import_smp()
    if not (encoder_name.startswith("tu-") or encoder_name in smp.encoders.get_encoder_names()):
        raise IBSRError(
            f"encoder_name {encoder_name!r} is not an encoder of segmentation_models_pytorch "
            "(see segmentation_models_pytorch.encoders.get_encoder_names())"
        )

    def build() -> nn.Module:
        return smp.Unet(
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            in_channels=in_channels,
            classes=out_channels,
            **kwargs,
        )

    if encoder_weights is None or encoder_weights is False:
        unet = build()
    else:
        unet = _with_pretrained_weights(build, encoder_name, encoder_weights)
    return FullResolutionUnet(unet, in_channels) if full_resolution_skip else unet


def _unet2d(
    in_channels: int, out_channels: int, encoder_name: str = "resnet18", **kwargs: Any
) -> nn.Module:
    """Build an smp ``Unet`` with a ResNet encoder (14.3 M parameters for ``resnet18``)."""
    return _smp_unet(in_channels, out_channels, encoder_name, **kwargs)


def _efficientunet2d(
    # timm's B0 keeps BatchNorm momentum 0.1; smp's own "efficientnet-b0" uses 0.01, whose
    # running statistics are still far off after a short (quick-profile) run: Dice 0.
    in_channels: int,
    out_channels: int,
    encoder_name: str = "timm-efficientnet-b0",
    **kwargs: Any,
) -> nn.Module:
    """Build an smp ``Unet`` with an EfficientNet encoder, 6.3 M parameters for ``b0``.

    smp 0.6 ships ``efficientnet-b0`` … ``-b7`` itself and ``timm-efficientnet-b0`` …
    ``-b8`` / ``-l2`` through timm; neither needs an extra package.
    """
    return _smp_unet(in_channels, out_channels, encoder_name, **kwargs)


def _unet3d(
    in_channels: int,
    out_channels: int,
    channels: tuple[int, ...] = (16, 32, 64, 128, 256),
    strides: tuple[int, ...] | None = None,
    num_res_units: int = 2,
    dropout: float = 0.0,
    norm: str | tuple = "instance",
    full_resolution_skip: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a MONAI ``UNet`` (4.8 M parameters); ``strides`` default to 2 between levels.

    ``full_resolution_skip`` adds a last stage at the input's resolution, ``channels[0] // 2``
    wide (:class:`FullResolutionUNet3d`).
    """
    from monai.networks.nets import UNet

    unet = UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=channels,
        strides=_unet3d_strides(channels, strides),
        num_res_units=num_res_units,
        dropout=dropout,
        norm=norm,
        **kwargs,
    )
    if not full_resolution_skip:
        return unet
    return FullResolutionUNet3d(unet, in_channels, out_channels, width=max(channels[0] // 2, 1))


def _unetr(
    in_channels: int,
    out_channels: int,
    img_size: int | tuple[int, ...] | None = None,
    feature_size: int = 16,
    hidden_size: int = 384,
    mlp_dim: int = 1536,
    num_heads: int = 6,
    **kwargs: Any,
) -> nn.Module:
    """Build a MONAI ``UNETR`` with a ViT-Small-sized encoder (26 M parameters).

    MONAI's defaults (768 / 3072 / 12 heads, ViT-Base) give 92 M parameters.

    ``img_size`` is the patch the model is trained on; each side must be divisible by 16
    (the ViT patch size). Attention needs the ``einops`` package.
    """
    from monai.networks.nets import UNETR

    if img_size is None:
        raise IBSRError("model 'unetr' needs img_size: the training patch size, e.g. [96, 96, 96]")
    sides = (img_size,) * 3 if isinstance(img_size, int) else tuple(img_size)
    if any(side % _UNETR_PATCH for side in sides):
        raise IBSRError(f"img_size {list(sides)} of model 'unetr' must be divisible by 16")
    return UNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        img_size=sides,
        feature_size=feature_size,
        hidden_size=hidden_size,
        mlp_dim=mlp_dim,
        num_heads=num_heads,
        spatial_dims=3,
        **kwargs,
    )


def _segresnet(
    in_channels: int,
    out_channels: int,
    init_filters: int = 16,
    blocks_down: tuple[int, ...] = (1, 2, 2, 4),
    blocks_up: tuple[int, ...] = (1, 1, 1),
    **kwargs: Any,
) -> nn.Module:
    """Build a MONAI ``SegResNet`` (Myronenko 2018 without the VAE branch), 4.7 M parameters."""
    from monai.networks.nets import SegResNet

    return SegResNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        init_filters=init_filters,
        blocks_down=blocks_down,
        blocks_up=blocks_up,
        **kwargs,
    )


# --------------------------------------------------------------------------- size divisors
_UNETR_PATCH = 16


def _unet3d_strides(channels: Any, strides: Any) -> tuple:
    return tuple(strides) if strides is not None else (2,) * (len(channels) - 1)


def _unet3d_divisor(kwargs: dict[str, Any]) -> int:
    channels = kwargs.get("channels", (16, 32, 64, 128, 256))
    per_axis = [1, 1, 1]
    for stride in _unet3d_strides(channels, kwargs.get("strides")):
        steps = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        per_axis = [a * s for a, s in zip(per_axis, steps, strict=True)]
    return math.lcm(*per_axis)


@dataclass(frozen=True)
class _Spec:
    build: Callable[..., nn.Module]
    dims: int
    divisor: Callable[[dict[str, Any]], int]
    #: The callables ``build`` passes its further keywords on to (imported when asked).
    passes_to: Callable[[], tuple[Callable[..., Any], ...]]
    #: The constructor setting that fixes the input size (UNETR's ``img_size``); None for a
    #: network that takes any size divisible by ``divisor``.
    fixed_size_setting: str | None = None


def _smp_targets() -> tuple[Callable[..., Any], ...]:
    return (_smp_unet, environment.import_smp().Unet)


def _monai(name: str) -> Callable[[], tuple[Callable[..., Any], ...]]:
    def targets() -> tuple[Callable[..., Any], ...]:
        from monai.networks import nets

        return (getattr(nets, name),)

    return targets


def _smp_divisor(kwargs: dict[str, Any]) -> int:
    return 2 ** int(kwargs.get("encoder_depth", 5))


_REGISTRY: dict[str, _Spec] = {
    "unet2d": _Spec(_unet2d, 2, _smp_divisor, _smp_targets),
    "efficientunet2d": _Spec(_efficientunet2d, 2, _smp_divisor, _smp_targets),
    "unet3d": _Spec(_unet3d, 3, _unet3d_divisor, _monai("UNet")),
    "unetr": _Spec(_unetr, 3, lambda kw: _UNETR_PATCH, _monai("UNETR"), "img_size"),
    "segresnet": _Spec(
        _segresnet,
        3,
        lambda kw: 2 ** (len(kw.get("blocks_down", (1, 2, 2, 4))) - 1),
        _monai("SegResNet"),
    ),
}

MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)


# --------------------------------------------------------------------------- public API
def _spec(name: str) -> _Spec:
    if name not in _REGISTRY:
        raise IBSRError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    return _REGISTRY[name]


def _tuples(value: Any) -> Any:
    """YAML gives lists where MONAI wants tuples: convert, recursively."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def build_model(name: str, in_channels: int = 1, out_channels: int = 4, **kwargs: Any) -> nn.Module:
    """Build a segmentation network by name, with randomly initialised weights by default.

    Args:
        name: One of ``MODEL_NAMES``.
        in_channels: Input channels: 1 for one slice or volume, ``2k + 1`` for 2.5D.
        out_channels: Classes predicted (4: background, CSF, GM, WM).
        **kwargs: Passed to the constructor (lists become tuples), e.g. ``encoder_name``,
            ``encoder_weights="imagenet"``, ``full_resolution_skip``, ``channels``,
            ``strides``, ``num_res_units``, ``dropout``, ``norm`` (``unet3d``), ``img_size``,
            ``feature_size``, ``hidden_size``, ``mlp_dim``, ``num_heads`` (``unetr``),
            ``init_filters``, ``blocks_down``, ``blocks_up`` (``segresnet``).

    Returns:
        A ``torch.nn.Module`` mapping ``(B, in_channels, *spatial)`` to logits
        ``(B, out_channels, *spatial)``; ``spatial`` is ``(H, W)`` or ``(D, H, W)``.

    Raises:
        IBSRError: Unknown name, a setting the network does not accept or cannot use,
            or pretrained weights that cannot be downloaded.

    Example:
        >>> model = build_model("unet3d", channels=[8, 16, 32], strides=[2, 2])

    """
    spec = _spec(name)
    for setting, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise IBSRError(
                f"{setting} of model {name!r} must be a positive integer, got {value!r}"
            )
    try:
        return spec.build(in_channels, out_channels, **_tuples(kwargs))
    except ImportError as exc:  # e.g. UNETR's attention needs einops
        reason = str(exc).strip().splitlines()[0]
        raise IBSRError(f"model {name!r} needs a package that is not installed: {reason}") from exc
    except (TypeError, ValueError, KeyError) as exc:
        raise IBSRError(f"model {name!r} could not be built with {kwargs}: {exc}") from exc


#: Keywords a config cannot set: the engine passes them (input and output channels, dims).
_PASSED_BY_ENGINE = frozenset(
    {"self", "in_channels", "out_channels", "classes", "spatial_dims", "kwargs", "args"}
)


@functools.cache
def model_settings(name: str) -> frozenset[str]:
    """The ``model.*`` settings a config may give network ``name`` (``name`` included).

    The keywords of the course's builder and of the library class it passes the rest on to
    (smp's ``Unet``, MONAI's ``UNet``, ``UNETR``, ``SegResNet``).

    Raises:
        IBSRError: Unknown name.
    """
    spec = _spec(name)
    found = {"name"}
    for target in (spec.build, *spec.passes_to()):
        found |= set(inspect.signature(target).parameters)
    return frozenset(found - _PASSED_BY_ENGINE)


def spatial_dims(name: str) -> int:
    """Return 2 for slice models (fed ``(B, C, H, W)``), 3 for volume ones (``(B, C, D, H, W)``).

    Raises:
        IBSRError: Unknown name.

    """
    return _spec(name).dims


def size_divisor(name: str, **kwargs: Any) -> int:
    """Return the factor every spatial input size must be divisible by (pad inputs to it).

    Args:
        name: One of ``MODEL_NAMES``.
        **kwargs: The same keyword arguments as given to ``build_model``.

    Returns:
        ``2 ** encoder_depth`` (32) for the smp U-Nets, the product of ``strides`` (16) for
        ``unet3d``, ``2 ** (len(blocks_down) - 1)`` (8) for ``segresnet``, 16 for ``unetr``.

    Raises:
        IBSRError: Unknown name.

    """
    return _spec(name).divisor(kwargs)


def fixed_size_setting(name: str) -> str | None:
    """The constructor setting of a network's one input size (UNETR's ``img_size``), or None.

    None: the network takes any size divisible by :func:`size_divisor`.

    Raises:
        IBSRError: Unknown name.
    """
    return _spec(name).fixed_size_setting


@dataclass(frozen=True)
class ModelSpec:
    """The network a run trains, as :func:`build_network` builds it.

    Made from a config's ``model`` (and ``data``) sections by :func:`ibsr_helpers.plan.specs`.

    Attributes:
        name: One of ``MODEL_NAMES``.
        in_channels: ``2k + 1`` for 2.5D slices, else 1.
        settings: The constructor's keyword arguments; a network with a fixed input size
            has it here (UNETR's ``img_size``: the training patch or the brain box unless set).
        channels_last: 2D networks in NHWC layout where that is faster
            (``train.channels_last``; see :meth:`channels_last_on`).
    """

    name: str
    in_channels: int = 1
    settings: dict[str, Any] = field(default_factory=dict)
    channels_last: bool = True

    @property
    def dims(self) -> int:
        """2 for slice models, 3 for volume ones (:func:`spatial_dims`)."""
        return spatial_dims(self.name)

    @property
    def fixed_size(self) -> tuple[int, int, int] | None:
        """The one input size ``(X, Y, Z)`` the network takes (UNETR), else None.

        Example:
            >>> ModelSpec("unetr", settings={"img_size": 64}).fixed_size
            (64, 64, 64)
        """
        setting = fixed_size_setting(self.name)
        if setting is None:
            return None
        size = self.settings[setting]
        sides = (size,) * 3 if isinstance(size, int) else size
        return tuple(int(side) for side in sides)  # type: ignore[return-value]

    @property
    def divisor(self) -> int:
        """The multiple every input side must be (:func:`size_divisor`)."""
        return size_divisor(self.name, **self.settings)

    def channels_last_on(self, device: str | torch.device) -> bool:
        """Whether inputs go channels-last on ``device``: 2D networks on CUDA and CPU.

        NHWC convolutions are faster on CUDA and with oneDNN on the CPU (a 2D U-Net training
        step: 0.73 s -> 0.52 s fp32, 0.31 s -> 0.26 s bf16 on a 2-core AMD EPYC).
        """
        on = torch.device(device).type in ("cuda", "cpu")
        return self.channels_last and self.dims == 2 and on


def build_network(spec: ModelSpec, device: str | torch.device = "cpu") -> nn.Module:
    """The spec's network on ``device``, in the memory layout that is fastest there.

    2D networks are channels-last (see :meth:`ModelSpec.channels_last_on`); 3D networks on a
    CPU are channels-last-3d (NDHWC), which makes 3D convolutions, their backward pass
    above all, several times faster there.

    Returns:
        The network with randomly initialised weights (or pretrained encoder weights when
        ``encoder_weights`` asks for them).

    Raises:
        IBSRError: As :func:`build_model`.
    """
    device = torch.device(device)
    model = build_model(
        spec.name, in_channels=spec.in_channels, out_channels=4, **spec.settings
    ).to(device)
    if spec.channels_last_on(device):
        model = model.to(memory_format=torch.channels_last)
    elif spec.dims == 3 and device.type == "cpu":
        model = model.to(memory_format=torch.channels_last_3d)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Count the parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
