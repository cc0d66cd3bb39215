"""The TFDS builder base: one example per pair that `list_pairs` finds."""

import os

import tensorflow_datasets as tfds

from keras_segmenter.data.sources import list_pairs


class PairsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Stores each (image, mask) file pair of a split as it is on disk.

    Image and mask bytes are stored unchanged (no re-encoding) in the sorted
    order of `list_pairs` (`disable_shuffling`), so reading them back gives
    the examples of the raw folders. Subclasses set `DATASET` (the
    `keras_segmenter` dataset name), `SPLITS` (TFDS split -> scanner split),
    `HOMEPAGE` and `MANUAL_DOWNLOAD_INSTRUCTIONS`, and may override
    `source_dir`.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    DATASET = None
    SPLITS = {"train": "train", "validation": "val"}
    HOMEPAGE = None

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__.split("\n")[0],
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "mask": tfds.features.Image(shape=(None, None, 1), use_colormap=True),
                    "image/filename": tfds.features.Text(),
                    "mask/filename": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "mask"),
            homepage=self.HOMEPAGE,
            disable_shuffling=True,
        )

    def source_dir(self, dl_manager):
        """The folder `list_pairs` scans; by default `manual_dir` itself."""
        return os.fspath(dl_manager.manual_dir)

    def _split_generators(self, dl_manager):
        root = self.source_dir(dl_manager)
        return {name: self._generate_examples(root, split) for name, split in self.SPLITS.items()}

    def _generate_examples(self, root, split):
        pairs = list_pairs(self.DATASET, root, split)
        for index, (image, mask) in enumerate(pairs):
            yield (
                index,
                {
                    "image": image,
                    "mask": mask,
                    "image/filename": os.path.relpath(image, root),
                    "mask/filename": os.path.relpath(mask, root),
                },
            )
