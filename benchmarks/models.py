"""The models the benchmarks build: the paper's presets, and `tiny` for CI."""


def build_model(name, num_classes, image_size, dtype=None):
    """A randomly initialised Segmenter.

    Args:
        name: a preset of `keras_segmenter` (`seg_s16_mask`, ...), or `tiny`:
            a 2-layer, 16-wide ViT with patch 8 and the mask decoder, which
            only checks that a benchmark runs (its speed means nothing).
        num_classes, image_size, dtype: as in `keras_segmenter.build_segmenter`.
    """
    import keras_segmenter as ks

    if name != "tiny":
        return ks.build_segmenter(name, num_classes, image_size=image_size, dtype=dtype)
    backbone = ks.ViTBackbone(patch_size=8, hidden_dim=16, num_layers=2, num_heads=2, mlp_dim=32,
                              image_size=image_size, dtype=dtype)
    return ks.Segmenter(backbone, num_classes, decoder="mask", dtype=dtype)
