"""TFDS builder of Pascal Context (59 classes + background)."""

from keras_segmenter.data.tfds.builder import PairsBuilder


class PascalContext(PairsBuilder):
    """Pascal Context, 60 classes (background + 59), VOC2010 images.

    Masks are the 60-class index PNGs of MMSegmentation's converter
    (`SegmentationClassContext`), split by its `train`/`val` lists.
    """

    DATASET = "pascal_context"
    HOMEPAGE = "https://cs.stanford.edu/~roozbeh/pascal-context/"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download VOCtrainval_03-May-2010.tar and the Pascal Context
    trainval_merged.json, convert them with MMSegmentation's
    tools/dataset_converters/pascal_context.py, and place the resulting
    `VOCdevkit/` (VOC2010/JPEGImages, VOC2010/SegmentationClassContext,
    VOC2010/ImageSets/SegmentationContext/{train,val}.txt) in `manual_dir`.
    `keras-segmenter data download pascal_context --data-dir DIR` makes
    this `VOCdevkit/` in DIR (the masks from the official Segmenter's
    `train.pth` and `val.pth`).
    """
