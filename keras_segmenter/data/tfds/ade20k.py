"""TFDS builder of ADE20K SceneParsing (150 classes), from its zip."""

import os

from keras_segmenter.data.sources import ADE20K_ZIP, prepare_ade20k
from keras_segmenter.data.tfds.builder import PairsBuilder


class Ade20k(PairsBuilder):
    """ADE20K SceneParsing 2016, 150 classes (ADEChallengeData2016).

    The benchmark of the paper; TFDS' `scene_parse150` is the 2017 instance
    release, not this one. Masks keep their raw values (0 = other, 1..150);
    the pipeline maps them as MMSegmentation's `reduce_zero_label`.
    """

    DATASET = "ade20k"
    HOMEPAGE = "http://sceneparsing.csail.mit.edu/"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
    Download http://data.csail.mit.edu/places/ADEchallenge/{ADE20K_ZIP}
    and place the zip, unextracted, in `manual_dir`. It is extracted once
    into `<download_dir>/extracted/ade20k`. `keras-segmenter data download
    ade20k --data-dir DIR` fetches it into DIR.
    """

    def source_dir(self, dl_manager):
        extracted = os.path.join(dl_manager.download_dir, "extracted", "ade20k")
        return prepare_ade20k(extracted, os.fspath(dl_manager.manual_dir))
