"""Pretrained weights in one line: the official Segmenter checkpoints and ImageNet ViTs.

`Segmenter.from_preset(source)` and `ViTBackbone.from_preset(source)` take a
preset name (see `list_presets()`), an http(s) URL, or a local file or folder.
Downloads go through `keras.utils.get_file` into
`$KERAS_HOME/models/keras_segmenter/<host>/<path>/` (default `~/.keras`); a
file found there is used without touching the network. Each file is written
by `keras_segmenter.files.atomic_write` (a temporary name with the process id,
renamed once complete), so an interrupted download never leaves a file that
looks cached (the next call fetches what is missing) and processes
downloading at once share no file.
The weights are read by the converters of `keras_segmenter.convert`.
"""

import datetime
import json
import os
import urllib.parse

import keras

from keras_segmenter.convert.imagenet import backbone_from_imagenet_vit
from keras_segmenter.convert.official import load_official
from keras_segmenter.data.dataset_info import get_dataset_info
from keras_segmenter.errors import UserError
from keras_segmenter.files import atomic_write, atomic_write_text
from keras_segmenter.version import __version__

OFFICIAL_ROOT = "https://www.rocq.inria.fr/cluster-willow/rstrudel/segmenter/checkpoints"
OFFICIAL_FILES = ("variant.yml", "checkpoint.pth")

# The official checkpoints, keyed by their folder under OFFICIAL_ROOT. Names,
# crops, parameter counts and mIoU (single-scale / multi-scale, validation
# set) are those of the official README's Model Zoo (rstrudel/segmenter); the
# paper's tables 3, 4, 6-8 give 38.1 -> 39.03 (Ti/16 linear), 47.08 / 48.05,
# 48.70 / 50.08, 51.82 / 53.63, 59.0 (MS) and 81.3 (MS) for the same models.
# Evaluation window and stride are the dataset's (`get_dataset_info`), which
# are those of the official segm/config.yml that segm/eval/miou.py defaults to.
SEGMENTER_PRESETS = {
    "ade20k/seg_tiny_mask": dict(model="Seg-T-Mask/16", crop=512, miou=(38.1, 38.8), params="7M"),
    "ade20k/seg_small_mask": dict(model="Seg-S-Mask/16", crop=512, miou=(45.3, 46.9), params="27M"),
    "ade20k/seg_base_mask": dict(model="Seg-B-Mask/16", crop=512, miou=(48.5, 50.0), params="106M"),
    "ade20k/seg_base_patch8": dict(model="Seg-B/8", crop=512, miou=(49.5, 50.5), params="89M"),
    "ade20k/seg_base_deit_linear": dict(
        model="Seg-B†/16 (DeiT)", crop=512, miou=(47.1, 48.1), params="87M"
    ),
    "ade20k/seg_base_deit_mask": dict(
        model="Seg-B†-Mask/16 (DeiT)", crop=512, miou=(48.7, 50.1), params="106M"
    ),
    "ade20k/seg_large_mask_640": dict(
        model="Seg-L-Mask/16", crop=640, miou=(51.8, 53.6), params="334M"
    ),
    "pascal_context/seg_large_mask": dict(
        model="Seg-L-Mask/16", crop=480, miou=(58.1, 59.0), params="334M"
    ),
    "cityscapes/seg_large_mask": dict(
        model="Seg-L-Mask/16", crop=768, miou=(79.1, 81.3), params="322M"
    ),
}

# The ImageNet ViTs the paper fine-tunes, keyed by the `--backbone` names of the
# official train.py (segm/config.yml). The AugReg URLs are those of timm 0.4.12's
# `vision_transformer.default_cfgs`, which the official `create_vit` loads.
# Exceptions: for ViT-B/8 the official code reads a local
# `$TORCH_HOME/hub/checkpoints/vit_base_patch8_384.pth` it does not publish;
# the paper says ViT-B/8 was fine-tuned at 224, so this is the AugReg B/8 224
# release (timm's `vit_base_patch8_224`). DeiT-B distilled is timm's safetensors
# copy of the official `deit_base_distilled_patch16_384-d0272ac0.pth`, because
# the converters read `.npz` and `.safetensors` ImageNet weights.
_AUGREG = "https://storage.googleapis.com/vit_models/augreg/"
IMAGENET_PRESETS = {
    "vit_tiny_patch16_384": dict(
        model="ViT-Ti/16",
        resolution=384,
        normalization="vit",
        url=_AUGREG
        + "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384.npz",
    ),
    "vit_small_patch16_384": dict(
        model="ViT-S/16",
        resolution=384,
        normalization="vit",
        url=_AUGREG
        + "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384.npz",
    ),
    "vit_small_patch32_384": dict(
        model="ViT-S/32",
        resolution=384,
        normalization="vit",
        url=_AUGREG
        + "S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384.npz",
    ),
    "vit_base_patch16_384": dict(
        model="ViT-B/16",
        resolution=384,
        normalization="vit",
        url=_AUGREG
        + "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_384.npz",
    ),
    "vit_base_patch32_384": dict(
        model="ViT-B/32",
        resolution=384,
        normalization="vit",
        url=_AUGREG
        + "B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384.npz",
    ),
    "vit_base_patch8_384": dict(
        model="ViT-B/8",
        resolution=224,
        normalization="vit",
        url=_AUGREG
        + "B_8-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224.npz",
    ),
    "vit_large_patch16_384": dict(
        model="ViT-L/16",
        resolution=384,
        normalization="vit",
        url=_AUGREG
        + "L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_384.npz",
    ),
    "deit_base_distilled_patch16_384": dict(
        model="DeiT-B†/16",
        resolution=384,
        normalization="deit",
        url="https://huggingface.co/timm/deit_base_distilled_patch16_384.fb_in1k/resolve/main/model.safetensors",
    ),
}

# What a preset folder written by `save_to_preset` holds.
PRESET_CONFIG = "config.json"
PRESET_WEIGHTS = "model.weights.h5"
PRESET_PREPROCESSOR = "preprocessor.json"
PRESET_METADATA = "metadata.json"
IMAGENET_SUFFIXES = (".npz", ".safetensors")
# Constructor arguments `from_preset(..., **kwargs)` may change without
# changing any weight shape.
ADJUSTABLE = ("dtype", "dropout", "drop_path_rate", "decoder_dropout", "decoder_drop_path_rate")


class PresetError(UserError):
    """A preset source that cannot be found, downloaded or read."""


# ---------------------------------------------------------------- the table


def presets_table():
    """The preset table as Markdown (what `list_presets` prints and the README shows)."""
    lines = [
        "| `Segmenter.from_preset(...)` | model | dataset (classes) | crop | window / stride | mIoU SS / MS | params |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in SEGMENTER_PRESETS.items():
        dataset = name.split("/")[0]
        info = get_dataset_info(dataset)
        lines.append(
            f"| `{name}` | {entry['model']} | {dataset} ({info.num_classes}) | {entry['crop']} | "
            f"{info.window_size} / {info.window_stride} | {entry['miou'][0]} / {entry['miou'][1]} | "
            f"{entry['params']} |"
        )
    lines += [
        "",
        "| `ViTBackbone.from_preset(...)` | model | ImageNet weights | resolution | normalization |",
        "|---|---|---|---|---|",
    ]
    for name, entry in IMAGENET_PRESETS.items():
        source = (
            "ImageNet-1k (DeiT)" if entry["normalization"] == "deit" else "AugReg IN-21k → IN-1k"
        )
        lines.append(
            f"| `{name}` | {entry['model']} | {source} | {entry['resolution']} | {entry['normalization']} |"
        )
    return "\n".join(lines)


def list_presets():
    """Prints the pretrained presets: the official checkpoints and the ImageNet ViTs.

    The `ade20k/` names may be given without their dataset prefix
    (`"seg_tiny_mask"`); `"seg_large_mask"` exists for two datasets, so it
    needs its prefix.
    """
    print(presets_table())


def _preset_name(source):
    """The table key that `source` names, or None."""
    if source in SEGMENTER_PRESETS or source in IMAGENET_PRESETS:
        return source
    matches = [name for name in SEGMENTER_PRESETS if name.split("/")[1] == source]
    if len(matches) > 1:
        raise PresetError(f"preset {source!r} exists for several datasets: pass one of {matches}")
    return matches[0] if matches else None


# ---------------------------------------------------------------- downloads


def _keras_home():
    # Read at call time (Keras reads KERAS_HOME once, at import).
    return os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))


def _cache_subdir(url):
    """`models/keras_segmenter/<host>/<path>`: a readable cache path for a URL."""
    parts = urllib.parse.urlsplit(url)
    names = [parts.netloc.replace(":", "_")]
    names += [name for name in parts.path.split("/") if name not in ("", ".", "..")]
    return os.path.join("models", "keras_segmenter", *names)


def _download(url):
    """The local copy of the file at `url`, downloaded once."""
    subdir = _cache_subdir(url)
    target = os.path.join(_keras_home(), subdir)
    if os.path.isfile(target):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)  # else get_file falls back to /tmp

    def fetch(tmp):
        try:
            keras.utils.get_file(
                os.path.basename(tmp),
                origin=url,
                cache_dir=_keras_home(),
                cache_subdir=os.path.dirname(subdir),
                force_download=True,
            )
        except Exception as error:  # get_file raises a bare Exception for HTTP errors
            reason = " ".join(str(error).split()).replace(f"URL fetch failure on {url}: ", "")
            raise PresetError(
                f"cannot download {url} ({reason}). Offline? Fetch the file elsewhere and pass "
                "its local path (or its folder) to from_preset instead."
            ) from None

    return atomic_write(target, fetch)


def _download_official(url):
    """The local copy of an official run folder (`variant.yml` + `checkpoint.pth`) at `url`."""
    url = url.rstrip("/")
    if url.endswith(OFFICIAL_FILES):
        url = url.rsplit("/", 1)[0]
    paths = [_download(f"{url}/{name}") for name in OFFICIAL_FILES]
    return os.path.dirname(paths[0])


def _local_path(source):
    """`source` (path, preset name or URL) as a local file or folder, downloading if needed.

    An existing path wins over a preset name: the official README has users
    download runs into folders named like the presets (`seg_tiny_mask/`).
    """
    source = os.fspath(source)
    if os.path.exists(source):
        return source
    name = _preset_name(source)
    if name in IMAGENET_PRESETS:
        return _download(IMAGENET_PRESETS[name]["url"])
    if name is not None:
        return _download_official(f"{OFFICIAL_ROOT}/{name}")
    if source.startswith(("http://", "https://")):
        if source.endswith((".keras", *IMAGENET_SUFFIXES)):
            return _download(source)
        return _download_official(source)
    raise PresetError(
        f"{source!r}: not a preset name (see keras_segmenter.list_presets()), an http(s) URL, "
        "or an existing file or folder"
    )


def imagenet_weights_path(source):
    """The local ImageNet ViT weights file that `source` names (a preset, URL or path).

    For `fit.py --backbone-weights NAME|PATH|URL`: a name or URL becomes the
    cached download; anything else (None, a path) is returned as it is.
    """
    if source is None or os.path.exists(source):
        return source
    if source in IMAGENET_PRESETS or source.startswith(("http://", "https://")):
        return _local_path(source)
    return source


# ---------------------------------------------------------------- reading


def _is_imagenet(path):
    return path.endswith(IMAGENET_SUFFIXES) or os.path.isfile(
        os.path.join(path, "model.safetensors")
    )


def _read_preset_folder(path):
    """The model of a preset folder; `preprocessor.json`, where present, is its preprocessor."""
    config_path = os.path.join(path, PRESET_CONFIG)
    weights_path = os.path.join(path, PRESET_WEIGHTS)
    preprocessor_path = os.path.join(path, PRESET_PREPROCESSOR)
    try:
        with open(config_path) as file:
            config = json.load(file)
        if os.path.isfile(preprocessor_path):  # presets written before it have none
            with open(preprocessor_path) as file:
                config["config"]["preprocessor"] = json.load(file)
        model = keras.saving.deserialize_keras_object(config)
        model.load_weights(weights_path)
    except (OSError, ValueError, TypeError, KeyError) as error:
        reason = " ".join(str(error).split())
        raise PresetError(
            f"{path}: not a readable preset folder ({PRESET_CONFIG} + {PRESET_WEIGHTS}): {reason}"
        ) from None
    return model


def _read_keras(path):
    try:
        return keras.saving.load_model(path, compile=False)
    except (OSError, ValueError, TypeError, KeyError) as error:
        reason = " ".join(str(error).split())
        raise PresetError(f"{path}: not a readable .keras model: {reason}") from None


def _read_model(path):
    """A `Segmenter` or `ViTBackbone` from a local preset folder, a folder holding
    `model.keras` (a `fit.py` run), an official run folder, a .keras or a .pth file."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, PRESET_WEIGHTS)):
            return _read_preset_folder(path)
        if os.path.isfile(os.path.join(path, "model.keras")):
            return _read_keras(os.path.join(path, "model.keras"))
        return load_official(path)  # names the missing checkpoint.pth / variant.yml
    if path.endswith(".keras"):
        return _read_keras(path)
    if path.endswith(".pth"):
        return load_official(path)
    raise PresetError(
        f"{path}: unknown kind; expected a preset folder ({PRESET_CONFIG} + {PRESET_WEIGHTS}), an "
        "official run folder or checkpoint.pth (with variant.yml), a .keras file or a folder "
        "holding model.keras, or ImageNet weights (.npz / .safetensors)"
    )


def _rebuilt(model, num_classes=None, **overrides):
    """`model`, or a copy with other `ADJUSTABLE` arguments or, for a `Segmenter`,
    a fresh decoder for another `num_classes`."""
    new_classes = num_classes is not None and num_classes != model.num_classes
    if not new_classes and not overrides:
        return model
    config = keras.saving.serialize_keras_object(model)
    parts = [config["config"]]
    if "backbone" in config["config"]:
        parts.append(config["config"]["backbone"]["config"])
    for key, value in overrides.items():
        if key not in ADJUSTABLE or not any(key in part for part in parts):
            raise UserError(
                f"from_preset cannot change `{key}`; expected num_classes or one of {ADJUSTABLE}. "
                f"Received: {key}={value!r}"
            )
        for part in parts:
            if key in part:
                part[key] = value
    if new_classes:
        config["config"]["num_classes"] = num_classes
    copy = keras.saving.deserialize_keras_object(config)
    if new_classes:  # a fresh decoder, as keras-hub does for another head size
        copy.backbone.set_weights(model.backbone.get_weights())
    else:
        copy.set_weights(model.get_weights())
    return copy


def _imagenet_backbone(source, path, **kwargs):
    entry = IMAGENET_PRESETS.get(_preset_name(os.fspath(source)) or "", {})
    if "normalization" in entry:
        kwargs.setdefault("normalization", entry["normalization"])
    return backbone_from_imagenet_vit(path, **kwargs)


def load_segmenter(cls, source, num_classes=None, **kwargs):
    """See `Segmenter.from_preset`; `cls` is the `Segmenter` class."""
    path = _local_path(source)
    if not _is_imagenet(path):
        model = _read_model(path)
        if not isinstance(model, cls):
            raise PresetError(f"{source}: holds a {type(model).__name__}, not a Segmenter")
        return _rebuilt(model, num_classes, **kwargs)
    if num_classes is None:
        raise UserError(f"{source}: ImageNet weights hold no decoder: pass num_classes")
    decoder_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k.startswith("decoder")}
    backbone = _imagenet_backbone(source, path, **kwargs)
    return cls(backbone, num_classes, dtype=kwargs.get("dtype"), **decoder_kwargs)


def load_backbone(cls, source, **kwargs):
    """See `ViTBackbone.from_preset`; `cls` is the `ViTBackbone` class."""
    path = _local_path(source)
    if _is_imagenet(path):
        return _imagenet_backbone(source, path, **kwargs)
    model = _read_model(path)
    if isinstance(getattr(model, "backbone", None), cls):  # a Segmenter
        return _rebuilt(model, **kwargs).backbone
    if isinstance(model, cls):
        return _rebuilt(model, **kwargs)
    raise PresetError(f"{source}: holds a {type(model).__name__}, not a ViTBackbone or Segmenter")


def save_preset(model, path):
    """Writes `model` as a preset folder in keras-hub's layout: `config.json`,
    `model.weights.h5`, `metadata.json` and, for a Segmenter, `preprocessor.json`."""
    os.makedirs(path, exist_ok=True)
    metadata = {
        "keras_version": keras.__version__,
        "keras_segmenter_version": __version__,
        "parameter_count": model.count_params(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d@%H:%M:%S"),
    }
    files = {PRESET_CONFIG: keras.saving.serialize_keras_object(model), PRESET_METADATA: metadata}
    if getattr(model, "preprocessor", None) is not None:
        files[PRESET_PREPROCESSOR] = keras.saving.serialize_keras_object(model.preprocessor)
    for name, content in files.items():
        atomic_write_text(os.path.join(path, name), json.dumps(content, indent=2) + "\n")
    atomic_write(os.path.join(path, PRESET_WEIGHTS), model.save_weights)
