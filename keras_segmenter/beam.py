"""`predict --runner NAME`: the same prediction as an Apache Beam pipeline.

    keras-segmenter predict --model model.keras 'photos/*.jpg' more_photos/ --out results/ \\
        --runner DirectRunner [--direct_num_workers=2 --direct_running_mode=multi_processing]

Inputs are file patterns or folders on any Beam filesystem (local, gs://,
s3://, hdfs://, as installed); a folder (a local directory, or any input
ending in "/") contributes its image files, as plain `predict` does. Each
image goes through `prediction.prediction_step`, the command's own per-image
work, and its files (`<stem>_classes.png`, `<stem>_overlay.png`,
`<stem>_probabilities.npy`) are written under `--out` through Beam's
filesystems, each under a temporary name and then renamed into place: a
retried bundle rewrites the same names, and no reader sees half a file.
Output names are plain `predict`'s, given in sorted path order (two photos
with one stem: `<stem>`, then `<stem>_2`).

Unreadable images, and inputs that match nothing, go to a dead-letter
output: one line each in `<out>/failed_inputs.txt`, which the command
prints at the end (exit status 1), as plain `predict` does.

`SegmenterModelHandler` is the `RunInference` model handler: the model is
loaded once per worker process (RunInference's shared handle), and each
model call batches sliding windows of one image, up to `--batch-size`,
which bounds a worker's memory as in plain `predict`.
"""

import io
import os
import pathlib
import shutil
import sys
import tempfile
import uuid

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics, MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from keras_segmenter.cli import command_prog
from keras_segmenter.errors import UserError
from keras_segmenter.files import TMP_PREFIX
from keras_segmenter.images import IMAGE_SUFFIXES, ImageReadError, load_image
from keras_segmenter.prediction import load_model, prediction_step, unique_stem

FAILED_INPUTS = "failed_inputs.txt"
_FAILED = "failed"
_NAMESPACE = "keras_segmenter"
_RAW = CompressionTypes.UNCOMPRESSED


def _read_model(path):
    """`prediction.load_model` of a `.keras` file on any Beam filesystem."""
    if FileSystems.get_scheme(path) is None:
        return load_model(path)
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, "model.keras")
        with FileSystems.open(path, compression_type=_RAW) as source, open(local, "wb") as copy:
            shutil.copyfileobj(source, copy)
        return load_model(local)


class SegmenterModelHandler(ModelHandler):
    """`RunInference` handler: image file paths in, the files `predict` writes out.

    `load_model` runs once per worker process; `run_inference` reads and
    segments each image with `prediction.prediction_step`. A prediction is
    `{suffix: bytes}` of the image's files, or the one-line error of an
    image that could not be read.

    Images are not stacked into one model call: a call already carries as
    many sliding windows of one image as `--batch-size` (by default as many
    as keep the logits near 256 MB, one 512-pixel window of a 150-class
    model), so stacking images would multiply memory for calls that are
    already full. Beam batches are therefore one image each.

    Args:
        args: the parsed `predict` command line.
    """

    def __init__(self, args):
        super().__init__(min_batch_size=1, max_batch_size=1)
        self._args = args

    def load_model(self):
        return prediction_step(_read_model(self._args.model), self._args)

    def run_inference(self, batch, model, inference_args=None):  # noqa: ARG002 (Beam API)
        return [_predict_file(path, model, self._args.max_pixels) for path in batch]


def _predict_file(path, step, max_pixels):
    try:
        with FileSystems.open(path, compression_type=_RAW) as file:
            image = load_image(file, name=path, max_pixels=max_pixels)
    except (ImageReadError, OSError) as error:
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    files = {}
    for suffix, write in step(image).items():
        buffer = io.BytesIO()
        write(buffer)
        files[suffix] = buffer.getvalue()
    return files


def write_atomically(path, data):
    """Writes `data` to `path` on any Beam filesystem: a temporary name, then a rename.

    The temporary name is unique to this attempt, so retried or duplicate
    bundles never share one, and `path` only ever holds a whole file.
    """
    folder, name = FileSystems.split(path)
    tmp = FileSystems.join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex}-{name}")
    try:
        with FileSystems.create(tmp, compression_type=_RAW) as file:
            file.write(data)
        FileSystems.rename([tmp], [path])
    except BaseException:
        if FileSystems.exists(tmp):
            FileSystems.delete([tmp])
        raise


class _Match(beam.DoFn):
    """An input (pattern or folder) to the image paths it names; misses to `_FAILED`."""

    def process(self, item):
        name, pattern, is_folder = item
        try:
            found = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
        except Exception as error:  # Beam raises BeamIOError, ValueError, ... for bad patterns.
            found, reason = [], str(error).splitlines()[0]
        else:
            reason = "no such file or folder"
        if is_folder:
            found = [p for p in found if pathlib.PurePath(p).suffix.lower() in IMAGE_SUFFIXES]
            reason = f"folder holds no images ({', '.join(IMAGE_SUFFIXES)})"
        if not found:
            yield beam.pvalue.TaggedOutput(_FAILED, f"{name}: {reason}")
        yield from found


def _unique_names(paths):
    """`(stem, path)` of each path: plain `predict`'s names, given in sorted path order."""
    used = set()
    return [(unique_stem(pathlib.PurePath(p), used), p) for p in sorted(set(paths))]


class _Write(beam.DoFn):
    """Writes an image's files under `out`; a failed image's error goes to `_FAILED`."""

    def __init__(self, out):
        self._out = out
        self._done = Metrics.counter(_NAMESPACE, "images_done")

    def process(self, keyed):
        stem, files = keyed
        if isinstance(files, str):
            yield beam.pvalue.TaggedOutput(_FAILED, files)
            return
        for suffix, data in files.items():
            write_atomically(FileSystems.join(self._out, f"{stem}{suffix}"), data)
        self._done.inc()


def _inputs(names):
    """`(name, pattern, is_folder)` of each input: a folder's pattern is its `*`."""
    items = []
    for name in names:
        if name.endswith("/") or (FileSystems.get_scheme(name) is None and os.path.isdir(name)):
            items.append((name, FileSystems.join(name.rstrip("/"), "*"), True))
        else:
            items.append((name, name, False))
    return items


def build(pipeline, args):
    """Adds the prediction of `args.inputs` into `args.out` to `pipeline`."""
    matched = (
        pipeline
        | "Inputs" >> beam.Create(_inputs(args.inputs))
        | "Match" >> beam.ParDo(_Match()).with_output_types(str).with_outputs(_FAILED, main="paths")
    )
    # The names need every path (about 100 bytes each, on one worker); the images are then
    # spread over the workers.
    written = (
        matched.paths
        | "AllPaths" >> beam.combiners.ToList()
        | "UniqueNames" >> beam.FlatMap(_unique_names)
        | "Spread" >> beam.Reshuffle()
        | "Segment" >> RunInference(KeyedModelHandler(SegmenterModelHandler(args)))
        | "Write" >> beam.ParDo(_Write(args.out)).with_outputs(_FAILED, main="done")
    )
    _ = (
        (matched[_FAILED], written[_FAILED])
        | "Failed" >> beam.Flatten()
        | "DeadLetter"
        >> beam.io.WriteToText(
            FileSystems.join(args.out, FAILED_INPUTS), shard_name_template="", skip_if_empty=True
        )
    )


def _pipeline_options(runner, pipeline_args):
    options = PipelineOptions(["--runner", runner, *pipeline_args])
    known = options.get_all_options()
    unknown = set(options.get_all_options(retain_unknown_options=True)) - set(known)
    if unknown:
        flags = " ".join(f"--{name}" for name in sorted(unknown))
        raise UserError(
            f"{flags}: not a Beam pipeline option (nor a predict flag); expected options of "
            f"--runner {runner}, e.g. --direct_num_workers=2"
        )
    return options


def run_pipeline(args):
    """`predict --runner`: runs the pipeline and reports as plain `predict`; returns the exit status."""
    options = _pipeline_options(args.runner, args.pipeline_args)
    if FileSystems.get_scheme(args.out) is None and os.path.isfile(args.out):
        raise UserError(
            f"--out {args.out} is a file; expected an output folder (created if needed)"
        )
    prediction_step(_read_model(args.model), args)  # bad --model/--dataset/window: exit 2 now
    failed_path = FileSystems.join(args.out, FAILED_INPUTS)
    if FileSystems.exists(failed_path):  # from an earlier run into the same folder
        FileSystems.delete([failed_path])
    try:
        pipeline = beam.Pipeline(options=options)
    except ValueError as error:
        raise UserError(f"--runner {args.runner}: {error}") from None
    build(pipeline, args)
    result = pipeline.run()
    result.wait_until_finish()

    failed = []
    if FileSystems.exists(failed_path):
        with FileSystems.open(failed_path, compression_type=_RAW) as file:
            failed = sorted(file.read().decode().splitlines())
    for message in failed:
        print(f"{command_prog('predict')}: error: {message}", file=sys.stderr)
    counters = result.metrics().query(MetricsFilter().with_name("images_done"))["counters"]
    done = sum(c.committed or 0 for c in counters)
    print(f"{done} image(s) -> {args.out}")
    if failed:
        print(
            f"{len(failed)} input(s) failed, {done} image(s) done (listed in {failed_path})",
            file=sys.stderr,
        )
    return 1 if failed else 0
