"""Trains Segmenter the way the paper does (section 4.2), with Keras `model.fit`.

    python training/fit.py                       # small model, bundled CamVid sample, CPU, minutes
    python training/fit.py --dataset ade20k --data-dir ~/data/ade20k \\
        --model seg_b16_mask --backbone-weights ~/weights/B_16-i21k.npz
    python training/fit.py --output-dir runs/ade20k_b16 --resume     # continue a killed run
    python training/fit.py ... --dry-run         # print the resolved recipe and exit
    python training/fit.py ... --strategy mirrored --cpu-devices 2   # MirroredStrategy, no GPU
    TF_CONFIG=... python training/fit.py --strategy multi_worker ...  # one process per machine

`keras-segmenter fit` and `python -m keras_segmenter.fit` are the same command.

Defaults depend only on what is trained: the bundled CamVid sample (no
--data-dir) gets a short demo recipe, a real dataset the paper's (see
`keras_segmenter.training.config`); every flag overrides only itself. The
full config is printed first and written to `<output-dir>/config.json`, next
to `checkpoints/`, `history.csv`, `logs/` (TensorBoard) and the final
`model.keras`. `--resume` continues the run in `--output-dir` from its own
config.json; only --keep-checkpoints (and --dry-run) may be given with it.
With --seed, TensorFlow's ops run deterministically, so a resumed run ends
with the same weights as an uninterrupted one.
"""

import argparse
import json
import os
import sys

from keras_segmenter.cli import (
    TRAINING_DIR,
    command,
    command_parser,
    command_prog,
    reports_user_errors,
    shown,
)
from keras_segmenter.data.download import download_hint
from keras_segmenter.errors import UserError
from keras_segmenter.training.checkpoints import list_checkpoints
from keras_segmenter.training.config import (
    CLASS_WEIGHTS,
    DATASET_DEFAULTS,
    OPTIMIZERS,
    PRECISIONS,
    STRATEGIES,
    TFDS_DATASETS,
    RunConfig,
    is_bundled_sample,
)

PROG = command_prog("fit")  # how errors start, whichever way the command runs

# Flags that cannot change what a resumed run computes.
RESUME_FLAGS = ("output_dir", "resume", "keep_checkpoints", "dry_run")


def build_parser():
    """The command line of `keras-segmenter fit`."""
    p = command_parser(
        "fit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", help="a config.json of an earlier run; flags override it")
    p.add_argument("--dataset", choices=sorted(DATASET_DEFAULTS) + list(TFDS_DATASETS))
    p.add_argument(
        "--data-dir", help="dataset root (default: the bundled CamVid sample for camvid)"
    )
    p.add_argument("--num-classes", type=int, help="classes, for --dataset folder")
    p.add_argument("--ignore-index", type=int)
    p.add_argument("--model", help="a preset, e.g. seg_ti16_mask, seg_s16_linear, seg_b16_mask")
    p.add_argument(
        "--backbone-weights",
        help="ImageNet ViT weights: a preset name (ks.list_presets()), a URL, or a timm .safetensors / AugReg .npz file",
    )
    p.add_argument(
        "--init",
        help="start from an official Segmenter run folder / checkpoint.pth or a .keras model",
    )
    p.add_argument(
        "--iterations", type=int, help="training iterations (paper: 160k ADE20K, 80k others)"
    )
    p.add_argument("--batch-size", type=int, help="global batch size over all replicas and workers")
    p.add_argument("--lr", type=float, help="initial learning rate of the poly schedule")
    p.add_argument(
        "--end-lr", type=float, help="the poly schedule's floor (default 1e-5; camvid 1e-6)"
    )
    p.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        help="sgd (the paper's; default except camvid) or adamw (camvid's default, from scratch)",
    )
    p.add_argument("--weight-decay", type=float, help="default 0 (paper); camvid 0.05")
    p.add_argument(
        "--class-weights",
        choices=CLASS_WEIGHTS,
        help="loss weights per class: none (default, the paper's) or median_frequency (SegNet's)",
    )
    p.add_argument("--crop-size", type=int, help="square training crop")
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument(
        "--strategy", choices=STRATEGIES, help="default: mirrored with >1 GPU, else one_device"
    )
    p.add_argument(
        "--cpu-devices",
        type=int,
        help="with --strategy mirrored on a machine without GPU: split the CPU into N logical "
        "devices, one replica each (to try data parallelism on a CPU)",
    )
    p.add_argument("--output-dir")
    p.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue the run in --output-dir (its config.json) from its newest readable checkpoint",
    )
    p.add_argument(
        "--seed",
        type=int,
        help="default 0; given, TF ops also run deterministically (exact resume)",
    )
    p.add_argument(
        "--checkpoint-every", type=int, help="iterations between checkpoints (and log lines)"
    )
    p.add_argument(
        "--val-every",
        type=int,
        help="iterations between validations (multiple of --checkpoint-every)",
    )
    p.add_argument("--val-images", type=int, help="validate on the first N images only")
    p.add_argument("--keep-checkpoints", type=int)
    p.add_argument(
        "--window-size", type=int, help="sliding-window validation window (default: dataset's)"
    )
    p.add_argument("--window-stride", type=int)
    p.add_argument(
        "--max-pixels",
        type=int,
        help="refuse data files whose header declares more pixels, before decoding (default 50000000)",
    )
    p.add_argument("--dropout", type=float)
    p.add_argument("--drop-path-rate", type=float)
    p.add_argument("--decoder-dropout", type=float)
    p.add_argument(
        "--dry-run", action="store_true", default=None, help="print the resolved recipe and exit"
    )
    return p


def _flag(key):
    return "--" + key.replace("_", "-")


def _resume_config(args):
    """The config of the run in `--output-dir`, to continue it unchanged."""
    changed = [_flag(k) for k, v in vars(args).items() if v is not None and k not in RESUME_FLAGS]
    if changed:
        raise UserError(
            f"{', '.join(changed)} cannot be given with --resume: a resumed run continues with its own "
            f"config.json (only --output-dir and --keep-checkpoints are allowed)."
        )
    if not args.output_dir:
        raise UserError("--resume needs --output-dir, the folder of the run to continue.")
    path = os.path.join(args.output_dir, "config.json")
    if not os.path.isfile(path):
        raise UserError(
            f"--resume: {path} does not exist; --output-dir must be the folder of an earlier run."
        )
    if not list_checkpoints(os.path.join(args.output_dir, "checkpoints")):
        raise UserError(
            f"--resume: no checkpoint in {os.path.join(args.output_dir, 'checkpoints')}; nothing to resume."
        )
    config = RunConfig.load(path)
    config.output_dir, config.resume = args.output_dir, True
    if args.keep_checkpoints is not None:
        config.keep_checkpoints = args.keep_checkpoints
    return config


def fit_next_steps(config, model_path, photo=None):
    """What to do with the model `training/fit.py` just wrote, as lines to print.

    `photo`: a validation image to suggest segmenting, if there is one.
    """
    from keras_segmenter.data import SAMPLE_DIR

    model = shown(model_path)
    data = (
        []
        if os.path.samefile(config.data_dir, SAMPLE_DIR)
        else ["--data-dir", shown(config.data_dir)]
    )
    dataset = ["--dataset", config.dataset] + (
        ["--num-classes", config.num_classes] if config.num_classes else []
    )
    fit = shown(os.path.join(TRAINING_DIR, "fit.py"))
    lines = ["", "Next:"]
    if photo is not None:
        out = shown(os.path.join(config.output_dir, "predictions"))
        overlay = os.path.join(out, os.path.splitext(os.path.basename(photo))[0] + "_overlay.png")
        names = ["--dataset", config.dataset] if config.dataset != "folder" else []
        lines += [
            f"  Segment a validation photo (the overlay is written to {overlay}):",
            "    "
            + command(
                "-m",
                "keras_segmenter.predict",
                "--model",
                model,
                *names,
                "--out",
                out,
                shown(photo),
            ),
        ]
    lines += [
        "  Evaluate on the validation split with the paper's protocol:",
        "    "
        + command(
            shown(os.path.join(TRAINING_DIR, "evaluate.py")),
            "--model",
            model,
            "--dataset",
            config.dataset,
            "--data-dir",
            shown(config.data_dir),
        ),
        "  Train this model further (a new run that starts from its weights):",
        "    "
        + command(
            fit,
            "--init",
            model,
            *dataset,
            *data,
            "--output-dir",
            shown(config.output_dir) + "-more",
        ),
        "  A run that was interrupted continues from its last checkpoint with:",
        "    " + command(fit, "--output-dir", shown(config.output_dir), "--resume"),
    ]
    return lines


@reports_user_errors(prog=PROG)
def make_config(argv):
    """The resolved `RunConfig` of the command line, and whether it is a dry run."""
    args = build_parser().parse_args(argv)
    try:
        if args.resume:
            config = _resume_config(args)
        else:
            if args.config and not os.path.isfile(args.config):
                raise UserError(f"--config {args.config}: no such file")
            config = RunConfig.load(args.config) if args.config else RunConfig()
            for key, value in vars(args).items():
                if key not in ("config", "dry_run") and value is not None:
                    setattr(config, key, value)
            if args.seed is not None:
                config.deterministic = True
            from keras_segmenter.models.pretrained import (
                imagenet_weights_path,
            )  # NAME|URL -> cached file

            config.backbone_weights = imagenet_weights_path(config.backbone_weights)
        config.resolve()
    except TypeError as e:  # a config value of the wrong type
        raise UserError(str(e)) from None
    if config.data_dir is None:
        raise UserError(
            f"--data-dir is required for --dataset {config.dataset}{download_hint(config.dataset)}"
        )
    return config, bool(args.dry_run)


def open_data(config):
    """The run's train and val splits, scanned once (`factories.open_data`); a mistake names
    --data-dir."""
    from keras_segmenter.training.factories import open_data

    try:
        return open_data(config)
    except (UserError, FileNotFoundError, NotADirectoryError) as e:
        raise UserError(f"--data-dir {config.data_dir}: {e}") from None


def describe(config, data):
    """The resolved recipe, a few lines for the top of the log."""
    images = data.train.size
    source = "the bundled sample" if is_bundled_sample(config.dataset, config.data_dir) else "data"
    crops = config.iterations * config.batch_size
    crop = f"{config.crop_size}x{config.crop_size}"
    decay = f", weight decay {config.weight_decay:g}" if config.weight_decay else ""
    if config.class_weights != "none":
        decay += f", {config.class_weights.replace('_', '-')} class weights"
    seed = f"seed {config.seed}" + (", deterministic ops" if config.deterministic else "")
    return "\n".join(
        [
            ("Resuming" if config.resume else "Training")
            + f" {config.init or config.model} on {config.dataset}, "
            f"{source} in {config.data_dir} ({images} training images)",
            f"  {config.iterations} iterations (steps) x batch {config.batch_size} = {crops} crops of {crop}, "
            f"{crops / images:.1f} passes over the training images",
            f"  {config.optimizer}, lr {config.lr:g} poly to {config.end_lr:g}{decay}; {config.precision}; {seed}",
            f"  checkpoint every {config.checkpoint_every}, validation every {config.val_every} iterations "
            f"-> {config.output_dir}",
        ]
    )


@reports_user_errors(prog=PROG)
def main(argv=None):
    """Command-line entry point; returns the exit status (0 ok, 1 disk full, 2 bad arguments)."""
    config, dry_run = make_config(sys.argv[1:] if argv is None else argv)
    data = open_data(config)  # no TF op yet: the strategy below must come first
    print(describe(config, data), flush=True)
    if dry_run:
        return 0
    from keras_segmenter.files import is_disk_full
    from keras_segmenter.training.lock import lock_output_dir
    from keras_segmenter.training.strategies import make_strategy, worker_info

    if config.strategy != "multi_worker" or worker_info()[0] == 0:  # only the chief writes
        lock_output_dir(config.output_dir)  # held until the process exits

    # First: a multi-worker cluster and logical CPUs must be set up before any TF op.
    strategy = make_strategy(config.strategy, config.cpu_devices)
    from keras_segmenter.training import loop, run

    try:
        if config.strategy == "multi_worker":
            model, summary = loop.train_custom_loop(config, strategy, data)
        else:
            model, summary = run.train(config, strategy=strategy, data=data)
            summary["weights_sha256"] = loop.weights_digest(model)
        summary["replicas"] = strategy.num_replicas_in_sync
    except OSError as e:
        # DiskFullError from our writes; Keras' CSV/TensorBoard writers raise plain OSError.
        if not is_disk_full(e):
            raise
        if list_checkpoints(os.path.join(config.output_dir, "checkpoints")):
            then = f"the last checkpoint is intact: free some space, then continue with --output-dir {config.output_dir} --resume"
        else:
            then = "no checkpoint was written yet: free some space, then run the same command again"
        print(f"{PROG}: error: {str(e).splitlines()[0]}; {then}", file=sys.stderr)
        return 1
    if summary.get("model"):
        print(f"\nModel:       {summary['model']}")
        print(f"Config:      {os.path.join(config.output_dir, 'config.json')}")
        print(f"History:     {os.path.join(config.output_dir, 'history.csv')}")
        print(f"TensorBoard: tensorboard --logdir {os.path.join(config.output_dir, 'logs')}")
        for iteration, miou in summary["validation"]:
            print(f"  val mIoU @ {iteration:>7d}: {miou:.4f}")
        photo = data.val.files[0][0] if data.val.files else None
        print("\n".join(fit_next_steps(config, summary["model"], photo)))
    print("SUMMARY " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
