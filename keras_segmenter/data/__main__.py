"""Command line: `keras-segmenter data check|tfds --dataset NAME`, `download NAME` (or
`python -m keras_segmenter.data ...`)."""

import sys

from keras_segmenter.cli import command_parser, command_prog, report_user_error, reports_user_errors
from keras_segmenter.data.download import DOWNLOADS, download
from keras_segmenter.errors import UserError

PROG = command_prog("data")


def build_parser():
    """The command line of `keras-segmenter data`: its subcommands and their flags."""
    parser = command_parser("data")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="scan a dataset split and report every problem")
    check.add_argument(
        "--dataset", required=True, help="ade20k, pascal_context, cityscapes, camvid, folder"
    )
    check.add_argument("--data-dir", required=True)
    check.add_argument("--split", default=None, help="split to scan (default: train and val)")
    check.add_argument("--num-classes", type=int, default=None, help="folder: number of classes")
    check.add_argument(
        "--ignore-index", type=int, default=255, help="folder: raw mask value to ignore"
    )
    check.add_argument(
        "--reduce-zero-label", action="store_true", help="folder: 0 is ignored and k becomes k - 1"
    )
    check.add_argument("--split-file", default=None, help="folder: list of file stems of the split")
    check.add_argument(
        "--manual-dir", default=None, help="ade20k: folder holding ADEChallengeData2016.zip"
    )
    tfds = commands.add_parser("tfds", help="write the TFDS copy of a dataset from its downloads")
    tfds.add_argument("--dataset", required=True, help="ade20k, pascal_context, camvid, cityscapes")
    tfds.add_argument("--manual-dir", required=True, help="folder holding the manual downloads")
    tfds.add_argument("--data-dir", default=None, help="TFDS data folder (default: TFDS' own)")
    download = commands.add_parser(
        "download", help="fetch a dataset's public files and unpack them into its layout"
    )
    download.add_argument(
        "dataset",
        type=lambda name: name.lower().replace("-", "_"),
        choices=DOWNLOADS,
        metavar="NAME",
        help=", ".join(DOWNLOADS),
    )
    download.add_argument("--data-dir", required=True, help="folder to fill (files are kept in it)")
    source = download.add_mutually_exclusive_group()
    source.add_argument(
        "--mirror", metavar="URL", help="URL of a folder holding the files by their names"
    )
    source.add_argument(
        "--from",
        dest="local",
        metavar="FOLDER",
        help="folder holding the files already downloaded (used in place)",
    )
    download.add_argument(
        "--checksum",
        action="append",
        default=[],
        metavar="FILE=ALGO:HEX",
        help="expected sha256/sha1/md5 of FILE instead of the published one (repeatable)",
    )
    return parser


def _digests(values, dataset):
    names = [part.filename for part in DOWNLOADS[dataset].parts]
    digests = {}
    for value in values:
        name, _, digest = value.partition("=")
        algorithm, _, hexdigest = digest.partition(":")
        if not name or algorithm not in ("sha256", "sha1", "md5") or not hexdigest:
            raise UserError(
                f"--checksum must be FILE=sha256:HEX (or sha1, md5). Received: {value!r}"
            )
        if name not in names:
            raise UserError(f"--checksum {value}: {dataset} has no file {name!r}; it has {names}")
        digests[name] = digest
    return digests


def _download(args):
    download(
        args.dataset, args.data_dir, args.mirror, args.local, _digests(args.checksum, args.dataset)
    )
    name, folder = args.dataset, args.data_dir
    manual = args.local if name == "cityscapes" else folder  # TFDS' builder reads the zips
    print(
        f"{name} is ready in {folder} ({DOWNLOADS[name].layout}). Next:\n"
        f"  keras-segmenter data check --dataset {name} --data-dir {folder}\n"
        f"  python training/fit.py --dataset {name} --data-dir {folder}\n"
        f"  keras-segmenter data tfds --dataset {name} --manual-dir {manual} --data-dir TFDS_DIR"
    )
    return 0


def _prepare_tfds(args):
    from keras_segmenter.data.tfds import prepare

    try:
        prepared = prepare(args.dataset, args.manual_dir, args.data_dir)
    except Exception as error:  # the status is returned, as the problems `check` finds
        status = report_user_error(error, PROG)
        if status is None:
            raise
        return status
    print(f"tfds:{args.dataset} prepared in {prepared.data_dir}")
    return 0


@reports_user_errors(prog=PROG)
def main(argv=None):
    """Command-line entry point; returns the exit status (0 no fatal problem, 1 problems
    reported, 2 bad arguments)."""
    args = build_parser().parse_args(argv)
    if args.command == "tfds":
        return _prepare_tfds(args)
    if args.command == "download":
        return _download(args)
    from keras_segmenter.data.check import check_dataset, format_report

    kwargs = {}
    if args.dataset == "folder":
        kwargs.update(
            num_classes=args.num_classes,
            ignore_index=args.ignore_index,
            reduce_zero_label=args.reduce_zero_label,
        )
        if args.split_file:
            kwargs["split_file"] = args.split_file
    if args.manual_dir:
        kwargs["manual_dir"] = args.manual_dir
    if args.split:
        splits = [args.split]
    elif args.dataset == "folder" and not args.split_file:
        splits = ["all"]
    else:
        splits = ["train", "val"]
    fatal = 0
    for split in splits:
        num_pairs, problems = check_dataset(args.dataset, args.data_dir, split, **kwargs)
        print(format_report(args.dataset, split, num_pairs, problems))
        fatal += sum(p.fatal for p in problems)
    return 1 if fatal else 0


if __name__ == "__main__":
    sys.exit(main())
