"""Trains Segmenter the way the paper does (section 4.2), with Keras `model.fit`.

    python training/fit.py                       # small model, bundled CamVid sample, CPU, minutes
    python training/fit.py --dataset ade20k --data-dir ~/data/ade20k \\
        --model seg_b16_mask --backbone-weights ~/weights/B_16-i21k.npz
    python training/fit.py --output-dir runs/ade20k_b16 --resume     # continue a killed run
    TF_CONFIG=... python training/fit.py --strategy multi_worker ...  # one process per machine

Defaults per dataset are the paper's (see `keras_segmenter.training.config`);
every flag overrides them and the full config is written to
`<output-dir>/config.json`, next to `checkpoints/`, `history.csv`, `logs/`
(TensorBoard) and the final `model.keras`.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_segmenter.cli import LOG_NOTE, fit_next_steps  # noqa: E402
from keras_segmenter.training.config import DATASET_DEFAULTS, OPTIMIZERS, PRECISIONS, STRATEGIES, TFDS_DATASETS, RunConfig  # noqa: E402

# Run with no arguments: the README's first command.
SAMPLE_RUN = dict(
    dataset="camvid", model="seg_ti16_mask", crop_size=128, batch_size=4, lr=1e-4,
    iterations=300, checkpoint_every=50, val_every=150, output_dir=os.path.join("runs", "sample"),
)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, epilog=LOG_NOTE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="a config.json of an earlier run; flags override it")
    p.add_argument("--dataset", choices=sorted(DATASET_DEFAULTS) + list(TFDS_DATASETS))
    p.add_argument("--data-dir", help="dataset root (default: the bundled CamVid sample for camvid)")
    p.add_argument("--num-classes", type=int, help="classes, for --dataset folder")
    p.add_argument("--ignore-index", type=int)
    p.add_argument("--model", help="a preset, e.g. seg_ti16_mask, seg_s16_linear, seg_b16_mask")
    p.add_argument("--backbone-weights", help="ImageNet ViT weights: timm .safetensors or AugReg .npz")
    p.add_argument("--init", help="start from an official Segmenter run folder / checkpoint.pth or a .keras model")
    p.add_argument("--iterations", type=int, help="training iterations (paper: 160k ADE20K, 80k others)")
    p.add_argument("--batch-size", type=int, help="global batch size over all replicas and workers")
    p.add_argument("--lr", type=float, help="initial learning rate of the poly schedule")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="sgd (the paper's; default except camvid) or adamw (camvid's default, from scratch)")
    p.add_argument("--weight-decay", type=float, help="default 0 (paper); camvid 0.05")
    p.add_argument("--crop-size", type=int, help="square training crop")
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument("--strategy", choices=STRATEGIES, help="default: mirrored with >1 GPU, else one_device")
    p.add_argument("--output-dir")
    p.add_argument("--resume", action="store_true", default=None, help="continue from the newest checkpoint")
    p.add_argument("--seed", type=int)
    p.add_argument("--checkpoint-every", type=int, help="iterations between checkpoints (and log lines)")
    p.add_argument("--val-every", type=int, help="iterations between validations (multiple of --checkpoint-every)")
    p.add_argument("--val-images", type=int, help="validate on the first N images only")
    p.add_argument("--keep-checkpoints", type=int)
    p.add_argument("--window-size", type=int, help="sliding-window validation window (default: dataset's)")
    p.add_argument("--window-stride", type=int)
    p.add_argument("--dropout", type=float)
    p.add_argument("--drop-path-rate", type=float)
    p.add_argument("--decoder-dropout", type=float)
    p.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)  # tests: die after N iterations
    return p.parse_args(argv)


def make_config(argv):
    args = parse_args(argv)
    if args.config:
        if not os.path.isfile(args.config):
            raise SystemExit(f"--config {args.config}: no such file")
        config = RunConfig.load(args.config)
    elif not argv:
        config = RunConfig(**SAMPLE_RUN)
    else:
        config = RunConfig()
    for key, value in vars(args).items():
        if key not in ("config", "stop_after") and value is not None:
            setattr(config, key, value)
    if config.data_dir is None:
        if config.dataset != "camvid":
            raise SystemExit(f"--data-dir is required for --dataset {config.dataset}")
        from keras_segmenter.data import SAMPLE_DIR

        config.data_dir = str(SAMPLE_DIR)
    try:
        from keras_segmenter.models.pretrained import imagenet_weights_path  # NAME|URL -> cached file
        config.backbone_weights = imagenet_weights_path(config.backbone_weights)
        config.resolve()
    except ValueError as e:
        raise SystemExit(f"fit.py: {e}")
    return config, args.stop_after


class _StopAfter:
    """A callback that dies after N iterations, as a killed run would."""

    def __new__(cls, iterations):
        import keras

        class StopAfter(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if int(self.model.optimizer.iterations) >= iterations:
                    raise KeyboardInterrupt(f"--stop-after {iterations}")

        return StopAfter()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    config, stop_after = make_config(argv)
    from keras_segmenter.training.strategies import make_strategy

    strategy = make_strategy(config.strategy)  # first: multi-worker must precede any TF op
    from keras_segmenter.training import loop, run

    if config.strategy == "multi_worker":
        model, summary = loop.train_custom_loop(config, strategy, stop_after=stop_after)
    else:
        extra = [_StopAfter(stop_after)] if stop_after else []
        model, summary = run.train(config, strategy=strategy, extra_callbacks=extra)
        summary["weights_sha256"] = loop.weights_digest(model)
    if summary.get("model"):
        print(f"\nModel:       {summary['model']}")
        print(f"Config:      {os.path.join(config.output_dir, 'config.json')}")
        print(f"History:     {os.path.join(config.output_dir, 'history.csv')}")
        print(f"TensorBoard: tensorboard --logdir {os.path.join(config.output_dir, 'logs')}")
        for iteration, miou in summary["validation"]:
            print(f"  val mIoU @ {iteration:>7d}: {miou:.4f}")
        print("\n".join(fit_next_steps(config, summary["model"])))
    print("SUMMARY " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
