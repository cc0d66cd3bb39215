"""The run config: the paper's per-dataset defaults, overridden by flags.

One `RunConfig` describes a training run completely; `training/fit.py`
writes it as `config.json` next to the run's outputs so any result can be
re-run with `fit.py --config <run>/config.json`, and a stopped run is
continued from it with `fit.py --output-dir <run> --resume`.

The defaults depend only on what is trained: the dataset's recipe
(`DATASET_DEFAULTS`), or, for the bundled CamVid sample (`--dataset camvid`
without `--data-dir`), the short demo recipe `SAMPLE_DEFAULTS`. A field set
explicitly always wins over both.
"""

import dataclasses
import json
import math
import os

from keras_segmenter.errors import UserError
from keras_segmenter.files import atomic_write_text
from keras_segmenter.training.checkpoints import list_checkpoints

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
OPTIMIZERS = ("sgd", "adamw")  # sgd: the paper's; adamw: for training from scratch
CLASS_WEIGHTS = ("none", "median_frequency")  # loss weights; see losses.median_frequency_weights
STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device", "tpu")

# Paper section 4.2 for ADE20K, Pascal Context and Cityscapes (SGD, no weight
# decay). CamVid and "folder" are this port's choices. CamVid (367 small
# training images, no ImageNet weights offline) is the from-scratch CPU
# recipe of the README: AdamW at 1e-4 learns far faster from scratch than
# the paper's SGD (pilots: val mIoU 0.20 after 600 iterations against 0.15
# for SGD), on 128 crops. crop None = the dataset's own `crop_size` from
# `keras_segmenter.data.get_dataset_info`.
_PAPER = dict(optimizer="sgd", weight_decay=0.0, end_lr=1e-5)
DATASET_DEFAULTS = {
    "ade20k": dict(_PAPER, lr=1e-3, iterations=160_000, batch_size=8, crop_size=512),
    "pascal_context": dict(_PAPER, lr=1e-3, iterations=80_000, batch_size=16, crop_size=480),
    "cityscapes": dict(_PAPER, lr=1e-2, iterations=80_000, batch_size=8, crop_size=768),
    "camvid": dict(
        optimizer="adamw",
        weight_decay=0.05,
        lr=1e-4,
        end_lr=1e-6,
        iterations=4_800,
        batch_size=8,
        crop_size=128,
    ),
    "folder": dict(_PAPER, lr=1e-3, iterations=20_000, batch_size=8, crop_size=None),
}
# `tfds:NAME` reads NAME from its TFDS-prepared copy, with NAME's defaults.
TFDS_DATASETS = tuple(f"tfds:{name}" for name in DATASET_DEFAULTS if name != "folder")


# The bundled CamVid sample (55 images): the README's first command, minutes
# on a CPU. Fields not named here come from DATASET_DEFAULTS["camvid"].
SAMPLE_DEFAULTS = dict(
    batch_size=4,
    iterations=300,
    checkpoint_every=50,
    val_every=150,
    output_dir=os.path.join("runs", "sample"),
    end_lr=1e-5,  # the README's shown output
)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_output_dir(path):
    """--output-dir is a folder or can become one: neither it nor a parent is a file."""
    folder = os.path.abspath(path)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        what = "is a file" if folder == os.path.abspath(path) else f"is inside {folder}, a file"
        raise UserError(f"--output-dir {path} {what}; expected a folder (created if needed)")


def is_bundled_sample(dataset, data_dir):
    """True when the run trains on the CamVid sample shipped with the package."""
    if dataset != "camvid":
        return False
    if data_dir is None:
        return True
    from keras_segmenter.data import SAMPLE_DIR

    return os.path.exists(data_dir) and os.path.samefile(data_dir, SAMPLE_DIR)


@dataclasses.dataclass
class RunConfig:
    """Everything a training run needs. See `training/fit.py --help`."""

    dataset: str = "camvid"
    data_dir: str = None
    num_classes: int = None  # "folder" only
    ignore_index: int = 255
    model: str = "seg_ti16_mask"
    backbone_weights: str = None
    init: str = None
    iterations: int = None
    batch_size: int = None  # global, over all replicas and workers
    lr: float = None
    optimizer: str = None  # None: the dataset's default
    end_lr: float = None  # None: the dataset's (1e-5; camvid 1e-6)
    poly_power: float = 0.9
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = None  # None: the dataset's default
    class_weights: str = "none"  # or "median_frequency" (SegNet's CamVid loss weights)
    crop_size: int = None
    dropout: float = 0.0
    drop_path_rate: float = 0.1
    decoder_dropout: float = 0.1
    precision: str = "float32"
    strategy: str = "auto"
    cpu_devices: int = None  # mirrored without GPU: logical CPU devices (replicas)
    output_dir: str = None
    resume: bool = False
    seed: int = 0
    deterministic: bool = (
        False  # tf.config.experimental.enable_op_determinism() (fit.py: on with --seed)
    )
    checkpoint_every: int = None
    val_every: int = None
    keep_checkpoints: int = 2
    val_images: int = None  # validate on the first N images (None: all)
    preview_images: int = 3
    window_size: int = None  # sliding-window validation, None: dataset's
    window_stride: int = None
    max_pixels: int = None  # refuse larger data files (None: keras_segmenter.images.MAX_PIXELS)

    # The dataset's `DatasetInfo`, built by `resolve()` (not a field: not in config.json).
    info = None

    def resolve(self):
        """Settles the run, once: defaults, checks, the dataset's `DatasetInfo` and the crop.

        Fills the per-dataset defaults and checks every field; builds the
        dataset's `DatasetInfo` (`self.info`), fills `crop_size` with its
        crop when none was given, and refuses an `output_dir` that already
        holds a run's checkpoints unless `resume`. The training calls
        (`run.train`, `loop.train_custom_loop`) take the resolved config.

        Raises `UserError` naming the flag and what was expected.
        """
        if self.dataset not in DATASET_DEFAULTS and self.dataset not in TFDS_DATASETS:
            raise UserError(
                f"--dataset must be one of {sorted(DATASET_DEFAULTS) + list(TFDS_DATASETS)}. "
                f"Received: {self.dataset!r}"
            )
        if is_bundled_sample(self.dataset, self.data_dir):
            from keras_segmenter.data import SAMPLE_DIR

            self.data_dir = self.data_dir or str(SAMPLE_DIR)
            for key, value in SAMPLE_DEFAULTS.items():
                if getattr(self, key) is None:
                    setattr(self, key, value)
        for key, value in DATASET_DEFAULTS[self.dataset.removeprefix("tfds:")].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.precision not in PRECISIONS:
            raise UserError(
                f"--precision must be one of {PRECISIONS}. Received: {self.precision!r}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise UserError(
                f"--optimizer must be one of {OPTIMIZERS}. Received: {self.optimizer!r}"
            )
        if self.class_weights not in CLASS_WEIGHTS:
            raise UserError(
                f"--class-weights must be one of {CLASS_WEIGHTS}. Received: {self.class_weights!r}"
            )
        if self.strategy not in STRATEGIES:
            raise UserError(f"--strategy must be one of {STRATEGIES}. Received: {self.strategy!r}")
        if self.cpu_devices is not None and (
            self.strategy != "mirrored"
            or not isinstance(self.cpu_devices, int)
            or self.cpu_devices < 1
        ):
            raise UserError(
                "--cpu-devices must be a positive integer, with --strategy mirrored. "
                f"Received: cpu_devices={self.cpu_devices!r}, strategy={self.strategy!r}"
            )
        for flag in ("iterations", "batch_size", "keep_checkpoints"):
            if not _is_int(getattr(self, flag)) or getattr(self, flag) < 1:
                raise UserError(
                    f"--{flag.replace('_', '-')} must be a positive integer. "
                    f"Received: {getattr(self, flag)!r}"
                )
        for flag in ("lr", "end_lr", "weight_decay", "poly_power", "momentum"):
            value = getattr(self, flag)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                raise UserError(
                    f"--{flag.replace('_', '-')} must be a finite number >= 0. Received: {value!r}"
                )
        if self.lr <= 0:
            raise UserError(f"--lr must be positive. Received: {self.lr}")
        if not self.end_lr <= self.lr:
            raise UserError(
                f"--end-lr must be between 0 and --lr ({self.lr:g}). Received: {self.end_lr}"
            )
        for flag in ("dropout", "drop_path_rate", "decoder_dropout"):
            value = getattr(self, flag)
            if not _is_number(value) or not 0 <= value < 1:
                raise UserError(
                    f"--{flag.replace('_', '-')} must be a rate in [0, 1). Received: {value!r}"
                )
        for flag in (
            "crop_size",
            "val_images",
            "window_size",
            "window_stride",
            "num_classes",
            "max_pixels",
        ):
            value = getattr(self, flag)
            if value is not None and (not _is_int(value) or value < 1):
                raise UserError(
                    f"--{flag.replace('_', '-')} must be a positive integer (or left out). "
                    f"Received: {value!r}"
                )
        if self.backbone_weights and self.init:
            raise UserError("Pass --backbone-weights or --init, not both.")
        for flag in ("backbone_weights", "init", "data_dir"):
            path = getattr(self, flag)
            if path and not os.path.exists(path):
                raise UserError(f"--{flag.replace('_', '-')}: no such file or folder: {path}")
        self._check_classes()
        self.info = self._dataset_info()
        if self.crop_size is None:
            self.crop_size = self.info.crop_size  # the one place the dataset's crop is filled in
        self._check_model()
        if self.checkpoint_every is None:
            # About 20 checkpoints a run, dividing the run evenly.
            self.checkpoint_every = math.gcd(self.iterations, max(1, self.iterations // 20))
        if self.val_every is None:
            self.val_every = self.checkpoint_every * max(
                1, (self.iterations // 10) // self.checkpoint_every
            )
        if self.checkpoint_every < 1 or self.iterations % self.checkpoint_every:
            raise UserError(
                "--iterations must be a multiple of --checkpoint-every (model.fit runs in "
                f"chunks of --checkpoint-every iterations). Received: iterations={self.iterations}, "
                f"checkpoint_every={self.checkpoint_every}"
            )
        if self.val_every < 1 or self.val_every % self.checkpoint_every:
            raise UserError(
                "--val-every must be a multiple of --checkpoint-every. Received: "
                f"val_every={self.val_every}, checkpoint_every={self.checkpoint_every}"
            )
        if self.output_dir is None:
            self.output_dir = os.path.join("runs", f"{self.dataset.replace(':', '_')}_{self.model}")
        _check_output_dir(self.output_dir)
        if not self.resume and list_checkpoints(os.path.join(self.output_dir, "checkpoints")):
            raise UserError(
                f"--output-dir {self.output_dir} already holds a run's checkpoints; add --resume "
                "to continue it, or choose another --output-dir."
            )
        return self

    def _dataset_info(self):
        from keras_segmenter.data import get_dataset_info

        if self.dataset == "folder":
            return get_dataset_info(
                "folder", num_classes=self.num_classes, ignore_index=self.ignore_index
            )
        return get_dataset_info(self.dataset)

    def _check_classes(self):
        """--num-classes and --ignore-index: only `folder` reads them, and never a class id."""
        from keras_segmenter.data.dataset_info import IGNORE_INDEX

        if self.dataset != "folder":
            if self.num_classes is not None:
                raise UserError(
                    f"--num-classes is for --dataset folder; {self.dataset} has its own classes. "
                    f"Received: --num-classes {self.num_classes}"
                )
            if self.ignore_index != IGNORE_INDEX:  # what every dataset but `folder` ignores
                raise UserError(
                    f"--ignore-index is for --dataset folder; {self.dataset} ignores {IGNORE_INDEX}. "
                    f"Received: --ignore-index {self.ignore_index}"
                )
            return
        if self.num_classes is None:
            raise UserError("--dataset folder needs --num-classes.")
        if not _is_int(self.ignore_index) or not self.num_classes <= self.ignore_index <= 255:
            raise UserError(
                f"--ignore-index must be a mask value in [--num-classes, 255] = "
                f"[{self.num_classes}, 255], not one of the class ids 0..{self.num_classes - 1}. "
                f"Received: --ignore-index {self.ignore_index}"
            )

    def _check_model(self):
        """--model is a preset whose patch divides --crop-size (the dataset's crop if left out)."""
        if self.init:
            return  # the model and its patch are the --init file's
        from keras_segmenter.models.presets import BACKBONE_PRESETS, MODEL_PRESETS

        if self.model not in MODEL_PRESETS:
            raise UserError(
                f"--model must be one of {sorted(MODEL_PRESETS)}. Received: {self.model!r}"
            )
        patch = BACKBONE_PRESETS[MODEL_PRESETS[self.model]["backbone"]]["patch_size"]
        if self.crop_size % patch:
            dataset_crop = self.crop_size == self.info.crop_size
            raise UserError(
                f"--crop-size must be a multiple of the {patch}-pixel patch of {self.model}. "
                f"Received: {self.crop_size}"
                + (f" (the {self.dataset} default)" if dataset_crop else "")
            )

    def to_dict(self):
        return dataclasses.asdict(self)

    def save(self, path):
        """Writes the config as JSON (atomically)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path):
        """Reads a config written by `save`; `ValueError` naming the file and key if it is not one."""
        try:
            with open(path) as f:
                values = json.load(f)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise UserError(f"{path}: not a readable config.json ({e})") from None
        if not isinstance(values, dict):
            raise UserError(
                f"{path}: expected a JSON object of run settings, got {type(values).__name__}"
            )
        unknown = set(values) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise UserError(f"{path}: unknown config keys {sorted(unknown)}")
        return cls(**values)
