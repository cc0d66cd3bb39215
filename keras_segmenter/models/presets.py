"""Model sizes of the paper's Tables 1 and 3, as data."""

from keras_segmenter.errors import UserError
from keras_segmenter.models.segmenter import DECODERS, Segmenter
from keras_segmenter.models.vit_backbone import ViTBackbone

WIDTHS = {"ti": 192, "s": 384, "b": 768, "l": 1024}
DEPTHS = {"ti": 12, "s": 12, "b": 12, "l": 24}


def _vit(size, patch_size, **extra):
    width = WIDTHS[size]
    return dict(
        patch_size=patch_size,
        hidden_dim=width,
        num_layers=DEPTHS[size],
        num_heads=width // 64,  # head size fixed to 64 (paper section 4.2)
        mlp_dim=4 * width,
        **extra,
    )


# The encoders of the official `segm/config.yml` (ImageNet-21k AugReg ViTs
# and the ImageNet-1k distilled DeiT-B), keyed by the paper's short names.
BACKBONE_PRESETS = {
    "ti16": _vit("ti", 16),
    "s16": _vit("s", 16),
    "s32": _vit("s", 32),
    "b16": _vit("b", 16),
    "b32": _vit("b", 32),
    "b8": _vit("b", 8),
    "l16": _vit("l", 16),
    "b16_deit": _vit("b", 16, distilled=True, normalization="deit"),
}

# "seg_b16_mask", "seg_s16_linear", ...: every backbone with both decoders.
MODEL_PRESETS = {
    f"seg_{backbone}_{decoder}": {"backbone": backbone, "decoder": decoder}
    for backbone in BACKBONE_PRESETS
    for decoder in DECODERS
}


def build_segmenter(
    preset,
    num_classes,
    image_size=512,
    dropout=0.0,
    drop_path_rate=0.1,
    decoder_dropout=0.1,
    decoder_drop_path_rate=0.0,
    dtype=None,
    **kwargs,
):
    """Builds a randomly initialised Segmenter from a preset name.

    Args:
        preset: str, a key of `MODEL_PRESETS` such as `"seg_b16_mask"`, or of
            `BACKBONE_PRESETS` such as `"b16"` (then pass `decoder=`).
        num_classes: int, number of classes.
        image_size: int or `(height, width)`, the training crop; it fixes the
            position-embedding grid. Defaults to 512 (ADE20K).
        dropout: float, encoder dropout. Defaults to 0 (paper Table 2).
        drop_path_rate: float, encoder stochastic depth. Defaults to 0.1.
        decoder_dropout: float, mask transformer dropout. Defaults to 0.1.
        decoder_drop_path_rate: float. Defaults to 0.
        dtype: dtype policy, e.g. `"mixed_bfloat16"`. Defaults to the global policy.
        **kwargs: more `Segmenter` arguments, e.g. `decoder="linear"`.
    """
    if preset in MODEL_PRESETS:
        kwargs.setdefault("decoder", MODEL_PRESETS[preset]["decoder"])
        preset = MODEL_PRESETS[preset]["backbone"]
    if preset not in BACKBONE_PRESETS:
        raise UserError(
            f"Unknown preset. Expected one of {sorted(MODEL_PRESETS)} or "
            f"{sorted(BACKBONE_PRESETS)}. Received: preset={preset!r}"
        )
    backbone = ViTBackbone(
        **BACKBONE_PRESETS[preset],
        image_size=image_size,
        dropout=dropout,
        drop_path_rate=drop_path_rate,
        dtype=dtype,
        name="backbone",
    )
    return Segmenter(
        backbone,
        num_classes,
        decoder_dropout=decoder_dropout,
        decoder_drop_path_rate=decoder_drop_path_rate,
        dtype=dtype,
        **kwargs,
    )


def _factory(backbone, title):
    def factory(num_classes, decoder="mask", **kwargs):
        return build_segmenter(backbone, num_classes, decoder=decoder, **kwargs)

    factory.__name__ = factory.__qualname__ = f"Segmenter{title}"
    factory.__doc__ = (
        f"Segmenter with the {title} encoder (see `build_segmenter` for the arguments).\n\n"
        'Example: `Segmenter{0}(num_classes=150, decoder="mask")`.'.format(title)
    )
    return factory


SegmenterTi16 = _factory("ti16", "Ti16")
SegmenterS16 = _factory("s16", "S16")
SegmenterS32 = _factory("s32", "S32")
SegmenterB16 = _factory("b16", "B16")
SegmenterB32 = _factory("b32", "B32")
SegmenterB8 = _factory("b8", "B8")
SegmenterL16 = _factory("l16", "L16")
SegmenterB16Distilled = _factory("b16_deit", "B16Distilled")
