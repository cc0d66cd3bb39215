"""`keras-segmenter COMMAND ...` (or `python -m keras_segmenter COMMAND ...`).

Runs the `main(argv) -> int` of one command with the rest of the command line
and exits with its status; `keras-segmenter COMMAND --help` shows that
command's flags.
"""

import argparse
import importlib
import sys

from keras_segmenter.cli import CONSOLE_SCRIPT, LOG_NOTE
from keras_segmenter.version import __version__

# Command -> (module with `main(argv)`, what it does).
COMMANDS = {
    "fit": ("keras_segmenter.fit", "train a Segmenter (the paper's recipe; training/fit.py)"),
    "evaluate": (
        "keras_segmenter.evaluate",
        "mIoU of a .keras model with the paper's protocol (training/evaluate.py)",
    ),
    "predict": ("keras_segmenter.predict", "segment photos: class maps and overlays"),
    "export": ("keras_segmenter.export", "SavedModel for TF Serving, ONNX, OpenVINO, LiteRT"),
    "convert": ("keras_segmenter.convert.__main__", "official or ImageNet weights to .keras"),
    "data": (
        "keras_segmenter.data.__main__",
        "download or check a dataset, or write its TFDS copy",
    ),
}


def build_parser():
    width = max(map(len, COMMANDS))
    commands = "\n".join(f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog=CONSOLE_SCRIPT,
        description="Runs one keras_segmenter command; `keras-segmenter COMMAND --help` shows "
        f"its flags.\n\ncommands:\n{commands}",
        epilog=LOG_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{CONSOLE_SCRIPT} {__version__}")
    parser.add_argument("command", choices=COMMANDS, metavar="COMMAND", help="one of the commands")
    parser.add_argument("args", nargs="*", metavar="...", help="the command's own arguments")
    return parser


def main(argv=None):
    """Runs `COMMAND`'s `main` with the arguments after it; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0].startswith("-"):
        build_parser().parse_args(
            argv
        )  # --help, --version or no command: argparse answers and exits
    command = build_parser().parse_args(argv[:1]).command  # an unknown command exits with status 2
    return importlib.import_module(COMMANDS[command][0]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
