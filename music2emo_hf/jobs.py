"""A predict job over many inputs: split across processes, written as it goes, resumed after any kill.

One process (`music2emo predict`) or several (`accelerate launch` / `torchrun`, one per device, on one or several
machines that share the output's folder). Beside the output file the job keeps:

    OUTPUT                          the records: one per input, in input order (a rerun appends what it adds)
    OUTPUT.parts/rank-R.jsonl       records of process R while a job of several processes runs
    OUTPUT.parts/rank-R.errors.jsonl  inputs process R could not analyse
    OUTPUT.parts/rank-R.inflight    the input process R is analysing now
    OUTPUT.errors.jsonl             the failures of the last run; those marked "crashed" are skipped by later runs
    OUTPUT.lock                     while a run writes OUTPUT: a second run onto it is refused (flock, this machine)

Every record is flushed as soon as it is written and a record cut short by a kill is dropped, so a rerun finds exactly
the finished inputs. An input that was in flight when a process died is analysed again in a child process of its
own: if it crashes that one too, it is reported and marked "crashed", and the job goes on.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import heapq
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MOOD_PREFIX = "mood:"  # before a mood label: its column in a CSV, a predictions dataset or a results table


def mood_columns(moods: Sequence[dict], mood_labels: Sequence[str], missing: Any) -> dict[str, Any]:
    """One column per mood label of the model, in its order: the answer's score, or `missing` where --top-k or
    --threshold left the mood out."""
    scores = {mood["label"]: mood["score"] for mood in moods}
    return {MOOD_PREFIX + label: scores.get(label, missing) for label in mood_labels}


class CommandError(Exception):
    """A problem with the command as a whole (bad arguments, model not loadable): reported in one line, exit 2."""


class AccelerateMissing(CommandError, ImportError):
    """Several processes without Accelerate: a command's error, and from Python the ImportError it is."""


# What torchrun and `accelerate launch` set for a process of a group; a child analysing one input alone drops them.
_GROUP_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE",
                    "GROUP_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
                    "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_USE_AGENT_STORE", "TORCH_NCCL_ASYNC_ERROR_HANDLING")


def launched_processes() -> int:
    """How many processes the launcher started for this job (1 when run plainly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_state(cpu: bool = False):
    """Accelerate's view of this process in the group (its index and device); on the CPU when asked or when
    launched with `accelerate launch --cpu` / ACCELERATE_USE_CPU."""
    try:
        from accelerate import PartialState
        from accelerate.utils import parse_flag_from_env
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("accelerate"):
            raise
        raise AccelerateMissing("several processes share their inputs through Accelerate, which is not installed: "
                                "pip install accelerate (or run one process).") from None

    return PartialState(cpu=cpu or parse_flag_from_env("ACCELERATE_USE_CPU"))


class RecordWriter:
    """Appends one record per input to a .jsonl or .csv file and flushes it at once; reads back which inputs a file
    holds already, dropping a last record cut short by a kill."""

    def __init__(self, path: str | None, key_field: str = "file", normalise: Callable[[Any], str] = str,
                 described: str | None = None):
        self.path, self.key_field, self.normalise = path, key_field, normalise
        self.described = described or (f"--output {path}" if path else "the standard output")  # in messages
        self.done: set[str] = set()
        self.format = "csv" if path and path.lower().endswith(".csv") else "jsonl"
        if path and os.path.isdir(path):
            raise CommandError(f"--output {path}: is a folder; name a file in it, e.g. {os.path.join(path, 'moods.jsonl')}.")
        if path and not path.lower().endswith((".csv", ".jsonl")):
            raise CommandError(f"--output {path}: use a .jsonl (one JSON record per line) or .csv file name.")
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise CommandError(f"--output {path}: the folder {os.path.dirname(path)!r} does not exist.")
        if path and not os.path.isdir(os.path.dirname(os.path.realpath(path))):  # a link to a file in no folder
            raise CommandError(f"--output {path}: it links to {os.path.realpath(path)}, whose folder does not exist; "
                               "create it, or name another file.")
        if path and os.path.exists(path) and not os.path.isfile(path):  # a device or a pipe, maybe through a link
            raise CommandError(f"--output {path}: is not a regular file (a device or a pipe); name a file.")
        if not path and sys.stdout is None:  # started with stdout closed (`>&-`)
            raise CommandError("the standard output is closed, so records have nowhere to go; name a file with "
                               "--output FILE.")
        self.header: list[str] | None = None
        self.first: dict | None = None  # the file's first record: later ones must come from the same model and options
        self.handle = None if path else sys.stdout  # a file is opened at the first record: none, no file left behind
        self.whole: int | None = None  # where an existing file's whole records end
        self.unended = False  # whether its last whole record lacks its "\n"
        if path and not os.access(path if os.path.exists(path) else os.path.dirname(os.path.abspath(path)), os.W_OK):
            raise CommandError(f"--output {path}: cannot write there (permission denied, or a read-only file system).")
        if path and os.path.exists(path):
            self.done.update(self._read_existing(path))

    def _read_existing(self, path: str) -> Iterator[str]:
        """The keys of the records in the file, read as a stream (an output may hold millions). A last record that a
        kill cut short is noted (`whole`), and cut off when this run first writes: a file refused, by this check or
        the caller's, is left as it was found."""
        whole = 0  # bytes up to the end of the last whole record (a CSV: row)
        try:  # lines end at "\n" only: a "\r" in a CSV's quoted file name is part of the name
            with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as handle:
                read = 0  # bytes of the whole lines the readers have taken (a CSV row may take several)

                def whole_lines():
                    nonlocal read
                    for line in handle:
                        if not line.endswith("\n"):  # the last, cut short, or a whole record that lost its "\n"
                            if self.format == "jsonl" and _whole_record(line, self.key_field):
                                self.unended = True  # an editor's save, say: kept, and ended before the next
                            elif self._starts_as_record(line, first_line=not whole):
                                return
                            elif whole:  # records, then something else: say what, as the file is left as it is
                                raise CommandError(
                                    f"{self.described}: its last line, {line[:60]!r}, is not a music2emo record, nor "
                                    "the start of one a kill cut short; remove it (the file is left as it is), or "
                                    "choose another file.")
                            else:
                                raise ValueError("a line without its end that does not start as a record")
                        read += len(line.encode("utf-8", "surrogateescape"))
                        yield line

                if self.format == "jsonl":
                    for line in whole_lines():
                        if line.strip():
                            record = json.loads(line)
                            key = record[self.key_field]
                            self.first = self.first or record
                            yield self.normalise(key)
                        whole = read
                else:
                    rows = csv.reader(whole_lines())
                    self.header = next((row for row in rows if row), None)
                    if self.header and self.header[0] != self.key_field:
                        raise KeyError(self.key_field)
                    whole, cut = read, False
                    for row in filter(None, rows):
                        if cut:  # a short row before others: not a record a kill cut short
                            raise ValueError("a row of the wrong length")
                        if len(row) != len(self.header):  # a kill inside a quoted name holding a newline
                            cut = True
                            continue
                        whole = read
                        self.first = self.first or dict(zip(self.header, row))  # the model as JSON text
                        yield self.normalise(_from_csv_text(row[0]))
        except (ValueError, KeyError, TypeError, csv.Error) as error:
            raise CommandError(f"--output {path}: holds something other than music2emo records; choose another file.") from error
        self.whole = whole

    def settle(self) -> None:
        """Cuts off the record a kill cut short (`_read_existing`), once this run may change the file: at its first
        write, or at its end if it wrote nothing."""
        try:
            if self.whole is not None and self.whole < os.path.getsize(self.path):
                os.truncate(self.path, self.whole)
            if self.unended:
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write("\n")
                self.unended = False
        except OSError as error:
            raise _no_room(f"{self.described}: cannot write", error) from error
        self.whole = None

    def _starts_as_record(self, line: str, first_line: bool) -> bool:
        """Whether a last line without its "\n" can be the start of a line this writer writes, so a kill cut it
        short and it is redone; anything else (notes appended by hand, say) is someone's data, refused rather than
        cut away. A JSON record starts with its key; a file's first CSV line is its header; a later CSV row has no
        more fields than the header, and the start of a number in each column the file's first row has one in."""
        if self.format == "jsonl" or first_line:
            start = f'{{"{self.key_field}": ' if self.format == "jsonl" else f"{self.key_field},"
            return line.startswith(start) or start.startswith(line)
        fields = next(csv.reader([line]), [])
        first = list((self.first or {}).values())
        return len(fields) <= len(self.header or ()) and all(
            _NUMBER_START.fullmatch(value) for value, earlier in zip(fields[1:], first[1:])
            if earlier[-1:].isdigit() and _NUMBER_START.fullmatch(earlier))

    def write(self, record: dict, mood_labels: Sequence[str]) -> None:
        self.check(record, mood_labels)
        if self.handle is None:
            try:
                self.settle()
                self.handle = open(self.path, "a", encoding="utf-8", newline="")
            except OSError as error:
                raise CommandError(f"--output {self.path}: cannot write there ({error.strerror}).") from error
        try:
            if self.format == "jsonl":
                self.handle.write(json_line(record))
            else:
                row = self._csv_row(record, mood_labels)
                if self.header is None:
                    self.header = list(row)
                    csv.writer(self.handle).writerow(self.header)
                csv.writer(self.handle).writerow(row.values())
            self.handle.flush()
        except BrokenPipeError:
            raise
        except OSError as error:  # a full disk, a quota: the file keeps its whole records (the cut one is redone)
            if self.path is None:
                raise CommandError(f"cannot write to {self.described} ({error.strerror or error}).") from error
            with contextlib.suppress(OSError):  # its buffer fails again: not the error to report
                self.handle.close()
            self.handle = None
            with contextlib.suppress(OSError):
                drop_cut_off_record(self.path)
            raise _no_room(f"{self.described}: cannot write", error) from error
        self.done.add(self.normalise(record[self.key_field]))

    def check(self, record: dict, mood_labels: Sequence[str]) -> None:
        """Refuses a record unlike the file's first: records of two models, or with and without --harmony say,
        would read as one run's. Checked before anything of it is written."""
        if self.path is None:
            return
        fields = self._csv_row(record, mood_labels) if self.format == "csv" else record
        problem = self._unlike(fields)
        if problem:
            raise CommandError(f"{self.described} holds records of another kind: {problem}. Choose another output, or "
                               "run with the model and options that wrote it.")
        self.first = self.first or fields

    def _unlike(self, fields: dict) -> str | None:
        """How a record (CSV: its row) differs from the file's first, or None."""
        first = self.first
        if first is None:  # a CSV may hold its header alone
            different = self.format == "csv" and self.header and list(fields) != self.header
            return "its header names other columns than this run's records have" if different else None
        earlier, now = self.field(first, "model"), self.field(fields, "model")
        if earlier != now:
            return f"the file's records come from {_model_name(earlier)}, this run's from {_model_name(now)}"
        if set(fields) != set(first):
            more, fewer = sorted(set(fields) - set(first)), sorted(set(first) - set(fields))
            return "; ".join(([f"this run's records have {', '.join(more)} and the file's do not"] if more else [])
                             + ([f"the file's records have {', '.join(fewer)} and this run's do not"] if fewer else []))
        if self.format == "csv" and list(fields) != list(first):
            return "its columns are in another order"
        return None

    def field(self, record: dict | None, name: str) -> Any:
        """A record's nested value (its "model", its "options"): as it is in JSON lines, from its JSON text in CSV."""
        value = (record or {}).get(name)
        return json.loads(value) if self.format == "csv" and isinstance(value, str) and value else value

    @staticmethod
    def _csv_row(record: dict, mood_labels: Sequence[str]) -> dict:
        """Flat columns: scalars as they are, one column per mood label of the model (blank when a mood was left out
        by --top-k or --threshold), one column per --labels label, nested results as JSON text. The scale is
        documented, not repeated per row."""
        row = {}
        for key, value in record.items():
            if key == "moods":
                row.update(mood_columns(value, mood_labels, ""))
            elif key == "zero_shot":
                row.update({f"label:{m['label']}": m["score"] for m in sorted(value, key=lambda m: m["label"])})
            elif key != "scale":
                row[key] = json_text(value) if isinstance(value, (list, dict)) else _csv_text(value)
        return row

    def close(self) -> None:
        """Closes the file; a later record opens it again (appending)."""
        if self.handle not in (None, sys.stdout):
            self.handle.close()
            self.handle = None


def json_text(value: Any) -> str:
    """`value` as JSON, in UTF-8 where it can be. A file name that is not UTF-8 (its undecodable bytes held as
    surrogates, as Python reads it) is written as \\u escapes, which read back as the same name."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value)
    return text


def message_line(text: str) -> str:
    """A message as one line on a terminal or in a log: a file name's control characters (a newline, an escape
    sequence) written as Python writes them, `\\n`, so that one message never reads as two or recolours the screen."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda match: repr(match.group())[1:-1], text)


def json_line(record: dict) -> str:
    """A record as one line of JSON (`json_text`)."""
    return json_text(record) + "\n"


def _csv_text(value: Any) -> Any:
    """A CSV cell in UTF-8, so that every CSV reader takes the file: a file name's bytes that are not UTF-8 are written
    as Python writes them, \\xe9 for the byte E9, and a backslash that would read as such an escape as \\x5c
    (`_from_csv_text` reads them back)."""
    if not isinstance(value, str):
        return value
    value = _LITERAL_ESCAPE.sub(r"\\x5c", value)
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _from_csv_text(text: str) -> str:
    """The name `_csv_text` wrote."""
    return _CSV_ESCAPE.sub(lambda escape: "\\" if escape[1] == "5c" else chr(0xDC00 + int(escape[1], 16)), text)


_CSV_ESCAPE = re.compile(r"\\x([89a-f][0-9a-f]|5c)")
_LITERAL_ESCAPE = re.compile(r"\\(?=x(?:[89a-f][0-9a-f]|5c))")


def _model_name(provenance: dict | None) -> str:
    if not provenance:
        return "no model named (or an older version of music2emo)"
    if "name" in provenance:
        if "weights_sha256" in provenance:
            return f"{provenance['name']} (weights {provenance['weights_sha256'][:12]})"
        return provenance["name"] + (f"@{provenance['revision']}" if provenance.get("revision") else "")
    return f"{provenance.get('repo')}:{provenance.get('checkpoint')}@{str(provenance.get('revision'))[:12]}"


_NUMBER_START = re.compile(r"-?\d*\.?\d*(?:[eE][-+]?\d*)?")  # a number, or a part of one from its start


def _whole_record(line: str, key_field: str) -> bool:
    """Whether a JSON line without its "\n" holds a whole record (one cut short by a kill is not valid JSON)."""
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and key_field in record


def drop_cut_off_record(path: str | os.PathLike) -> None:
    """Cuts off a last line without its newline: a record whose writing failed (it is redone)."""
    with open(path, "r+b") as handle:
        end = handle.seek(0, os.SEEK_END)
        position = end
        while position > 0:
            step = min(position, 1 << 16)
            handle.seek(position - step)
            newline = handle.read(step).rfind(b"\n")
            if newline >= 0:
                position = position - step + newline + 1
                break
            position -= step
        if position != end:
            handle.truncate(position)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return list(read_jsonl_stream(path))


def read_jsonl_stream(path: str | os.PathLike) -> Iterator[dict]:
    """The complete records of a JSON-lines file, one at a time (none if it does not exist)."""
    if not os.path.exists(path):
        return
    with open(path, "rb") as handle:
        for line in handle:
            if line.endswith(b"\n") and line.strip():
                yield json.loads(line)


def balanced_shares(weights: Sequence[float], processes: int) -> list[list[int]]:
    """Indices of the inputs for each process, by longest-first greedy assignment to the least loaded process (each
    share in input order), so processes finish about together however the durations are spread."""
    loads = [(0.0, rank) for rank in range(processes)]
    shares: list[list[int]] = [[] for _ in range(processes)]
    for index in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        load, rank = heapq.heappop(loads)
        shares[rank].append(index)
        heapq.heappush(loads, (load + weights[index], rank))
    return [sorted(share) for share in shares]


SUSPECTS = "suspects.keys"  # in OUTPUT.parts, JSON lines: inputs a process died on, analysed alone until recorded


@dataclass
class Plan:
    """What the main process decided for this run, sent to every process."""

    shares: list[list[str]]  # keys of the inputs each process analyses, in input order
    suspects: set[str] = field(default_factory=set)  # in flight when a process died: analysed alone, in a child
    total: int = 0  # inputs to analyse in this run, all processes together
    already_done: int = 0  # inputs whose records the output holds already
    crashed_before: list[dict] = field(default_factory=list)  # failures marked "crashed" by an earlier run: skipped
    discarded: int = 0  # records a refused run of several processes left in its parts: of another kind than the output's
    leftovers: int = 0  # records a killed run left in its parts, not in the output yet: merged by `run`

    @property
    def to_run(self) -> bool:
        """Whether `run` has anything to do: inputs to analyse, or a killed run's records to merge (with nothing of
        either, no process runs, and the main one does not wait for the others)."""
        return bool(self.total or self.leftovers)


class Job:
    """The bookkeeping of one run over inputs named by keys (see the module's docstring): `plan` on every process,
    then `run`, then `finish`."""

    def __init__(self, output: str | None, key_field: str = "file", normalise: Callable[[Any], str] = str,
                 cpu: bool = False, described: str | None = None):
        self.processes = launched_processes()
        if self.processes > 1 and not output:
            raise CommandError("several processes need --output FILE (.jsonl or .csv) to write their records to.")
        self.state = process_state(cpu) if self.processes > 1 else None
        self.rank = self.state.process_index if self.state else 0
        self.is_main = self.rank == 0
        self.output, self.key_field, self.normalise = output, key_field, normalise
        if output:
            _check_companion_names(output, described or f"--output {output}")
        self.parts = Path(f"{output}.parts") if output else None
        self.errors_file = Path(f"{output}.errors.jsonl") if output else None
        # The output, locked (before it is read: another run may be writing it), then read once (a wrong --output is
        # refused here, before the model loads); only the main process writes it.
        self._lock = _OutputLock.take(output, described or f"--output {output}") if output and self.is_main else None
        try:
            self.output_writer = RecordWriter(output, key_field, normalise, described) if self.is_main else None
        except BaseException:
            self.release()
            raise
        self.mood_labels: Sequence[str] = ()  # set by `run`
        self.written = 0
        self.failures: list[dict] = []
        self._crashed_before: list[dict] = []
        self._watcher: _ProgressWatcher | None = None
        self.planned: Plan | None = None  # this run's plan, the same on every process (`plan`)

    def left_by_a_killed_run(self) -> dict | None:
        """The first record a killed run left in the parts and no run has merged into the output yet, or None: what
        this run's records must be like where the output holds none."""
        for part in sorted([*self.parts.glob("leftover-*.jsonl"), *self.parts.glob("rank-*.jsonl")]) if self.parts \
                else ():
            if not part.name.endswith(".errors.jsonl") and (head := next(read_jsonl_stream(part), None)):
                return head
        return None

    @property
    def device(self):
        """The device the launcher gave this process (None when run plainly)."""
        return self.state.device if self.state else None

    def plan(self, keys: Sequence[str], weight: Callable[[str], float]) -> Plan:
        """Keys of all inputs in input order; `weight(key)` is an input's duration (from its header), to balance the
        processes. Collective: every process calls it and gets the main one's plan."""
        plan = self._plan_on_main(keys, weight) if self.is_main else None
        if self.state:
            from accelerate.utils import broadcast_object_list

            plan = broadcast_object_list([plan])[0]
        self.planned = plan
        return plan

    def _plan_on_main(self, keys, weight) -> Plan:
        if not self.output:
            return Plan([list(keys)], total=len(keys))
        # In flight when a process died: in its marker, and kept in SUSPECTS until analysed, however often the runs
        # that would analyse them are stopped before they mark them again (a kill during the model's load).
        suspects = {record["key"] for marker in [*self.parts.glob("rank-*.inflight"), self.parts / SUSPECTS]
                    for record in read_jsonl_stream(marker)}
        crashed_then = []
        for number, part in enumerate(sorted(self.parts.glob("rank-*.jsonl"))):  # what a killed run left
            if part.name.endswith(".errors.jsonl"):  # its failures are tried again, but for those that crashed it
                crashed_then += [entry for entry in read_jsonl(part) if entry.get("crashed")]
                part.unlink()
            else:
                part.rename(self.parts / f"leftover-{os.getpid()}-{number}.jsonl")
        if crashed_then:  # kept where the next runs look, or a second crashing input would bring the first back
            _replace(self.errors_file, "".join(json_line(entry) for entry in [*read_jsonl(self.errors_file),
                                                                                    *crashed_then]))
        for marker in [*self.parts.glob("rank-*.inflight"), *self.parts.glob("rank-*.done")]:
            marker.unlink()
        discarded = self._discard_unlike_leftovers()
        in_output = set(self.output_writer.done)
        leftovers = {self.normalise(record[self.key_field]) for part in self.parts.glob("leftover-*.jsonl")
                     for record in read_jsonl(part)} - in_output
        done = (in_output | leftovers) & set(keys)
        crashed = {entry["key"]: entry for entry in read_jsonl(self.errors_file) if entry.get("crashed")}
        self._crashed_before = [entry for key, entry in crashed.items() if key not in done]
        todo = [key for key in keys if key not in done and key not in crashed]
        if suspects & set(todo):
            _replace(self.parts / SUSPECTS, "".join(json_line({"key": key}) for key in sorted(suspects & set(todo))))
        else:
            (self.parts / SUSPECTS).unlink(missing_ok=True)
        weights = [weight(key) for key in todo] if self.processes > 1 else [1.0] * len(todo)
        shares = [[todo[i] for i in share] for share in balanced_shares(weights, self.processes)]
        skipped = [entry for entry in self._crashed_before if entry["key"] in set(keys)]
        return Plan(shares, suspects & set(todo), len(todo), len(done), skipped, discarded, len(leftovers))

    def _discard_unlike_leftovers(self) -> int:
        """Removes the leftover parts whose records come from another model or options than the output's: a run of
        several processes refused at the main one's first record, after another had written some (else every later
        run would be refused at their merge). Returns how many records went."""
        output = self.output_writer
        discarded = 0
        for part in sorted(self.parts.glob("leftover-*.jsonl")) if output.first else ():
            head = next(read_jsonl_stream(part), None)
            if head and any(head.get(name) != output.field(output.first, name) for name in ("model", "options")):
                discarded += sum(1 for _ in read_jsonl_stream(part))
                part.unlink()
        return discarded

    def run(self, plan: Plan, keys: Sequence[str], mood_labels: Sequence[str],
            analyse: Callable[[Iterator[str]], Iterator[dict | Exception]],
            analyse_alone: Callable[[list[str]], Iterator[dict | Exception]],
            label: Callable[[str], str], progress) -> None:
        """This process's share: `analyse(keys)` yields, for each key it takes from `keys`, in order, its record or
        the exception it failed with (it may take a few keys ahead of what it yields, to analyse them together);
        `analyse_alone(keys)` yields the same for keys analysed one at a time in a child process (InputCrashed for
        one that crashed it: see `analyse_in_child`); `label(key)`
        names the input in messages; `progress` is a tqdm bar (disabled on all but the main process, where it counts
        the whole job). `mood_labels` are the model's (the CSV columns)."""
        self.mood_labels = mood_labels
        if self.parts:
            try:
                self.parts.mkdir(exist_ok=True)
            except OSError as error:
                raise CommandError(f"--output {self.output}: cannot write there ({error.strerror or error}; the run "
                                   f"keeps its work in {self.parts}).") from error
        mine = plan.shares[self.rank]
        several = self.processes > 1
        if self.is_main and self.parts and not several:
            self._merge(keys, "leftover-*.jsonl")  # a killed run's records, into the output before this run's
        if several:
            self.writer = RecordWriter(str(self.parts / f"rank-{self.rank}.jsonl"), self.key_field, self.normalise)
        else:
            self.writer = self.output_writer
        inflight = self.parts / f"rank-{self.rank}.inflight" if self.parts else None
        errors = self.parts / f"rank-{self.rank}.errors.jsonl" if self.parts else None
        if self.is_main and several:
            self._watcher = _ProgressWatcher(self, progress, plan.total)
        with sigterm_ends_cleanly():  # the records written are closed whole
            try:
                for key, answer in self._answers(mine, plan.suspects, analyse, analyse_alone, label, inflight):
                    if isinstance(answer, CommandError):
                        raise answer
                    if isinstance(answer, Exception):  # one bad input does not stop the run: say what it was, go on
                        self._fail(key, label(key), str(answer) or type(answer).__name__,
                                   isinstance(answer, InputCrashed), errors, progress)
                    else:
                        if several and self.is_main:  # refused now, not once every process has finished
                            self.output_writer.check(answer, self.mood_labels)
                        self.writer.write(answer, self.mood_labels)
                        self.written += 1
                    progress.update()
            finally:
                self.writer.close()
                if self.parts and not several:
                    with contextlib.suppress(OSError):  # a run refused at its first record leaves no empty folder
                        self.parts.rmdir()
        if several:
            _write_now(self.parts / f"rank-{self.rank}.done", "")

    @staticmethod
    def _answers(keys, suspects, analyse, analyse_alone, label, inflight) -> Iterator[tuple[str, dict | Exception]]:
        """(key, record or exception) for each of `keys` in order: runs of keys through `analyse`, each suspect
        alone. The in-flight marker lists the keys taken and not yet recorded: it is left behind only if the
        process dies on them (a finally never runs then), and a rerun analyses each of them alone."""
        taken: deque[str] = deque()

        def mark() -> None:
            if not inflight:
                return
            if taken:  # replaced whole: a crash in a decoding thread while this is written must find the last list
                _replace(inflight, "".join(json.dumps({"key": key, "input": label(key), "pid": os.getpid()}) + "\n"
                                           for key in taken))
            else:
                inflight.unlink(missing_ok=True)

        def take(run):
            for key in run:
                taken.append(key)
                mark()
                yield key

        try:
            for alone, run in itertools.groupby(keys, key=lambda key: key in suspects):
                if alone:
                    answers = analyse_alone(list(take(run)))  # one child for a run of suspects
                else:
                    answers = analyse(take(run))
                for answer in answers:
                    yield taken[0], answer
                    taken.popleft()  # after the caller recorded it
                    mark()
        finally:  # stopped by an error or SIGTERM, not killed: what was in flight did not crash it
            taken.clear()
            mark()

    def _fail(self, key, name, message, crashed, errors, progress) -> None:
        failure = {"key": key, "input": name, "error": message.removeprefix(f"{name}: ")}
        if crashed:
            failure["crashed"] = True
        self.failures.append(failure)
        progress.write(message_line(f"error: {name}: {failure['error']}"), file=sys.stderr)
        if errors:
            try:
                with open(errors, "a", encoding="utf-8") as handle:
                    handle.write(json_line(failure))
            except OSError as error:
                raise _no_room(f"cannot write {errors}", error) from error

    def finish(self, keys: Sequence[str], unlisted: Sequence[dict] = ()) -> tuple[int, list[dict]]:
        """On the main process, once every process is done: the parts merged into the output in input order and the
        failures written beside it, after those found before any analysis (`unlisted`: a missing path, a folder
        without audio). Returns (records written this run, failures of the analysis) for the whole job."""
        if not self.is_main or not self.parts:
            return self.written, self.failures
        written = self.written
        if self.processes > 1 and self.planned.to_run:  # else no process ran, and none marks its end
            self.wait_for_all()
            written = self._merge(keys, "*.jsonl") - self.planned.leftovers  # a killed run's records with this run's
        self.output_writer.settle()  # a record a kill cut short, where this run wrote none after it
        failures = [entry for path in sorted(self.parts.glob("rank-*.errors.jsonl")) for entry in read_jsonl(path)]
        retried = {entry["key"] for entry in failures}
        kept = [entry for entry in self._crashed_before if entry["key"] not in retried]
        if kept or unlisted or failures:
            _replace(self.errors_file, "".join(json_line(entry) for entry in [*kept, *unlisted, *failures]))
        elif self.errors_file.exists():
            self.errors_file.unlink()
        if not any(self.parts.glob("leftover-*.jsonl")):  # never a killed run's records not merged yet
            shutil.rmtree(self.parts, ignore_errors=True)
        return written, failures

    def release(self) -> None:
        """Lets another run write the output (called however this one ends; a kill releases it too)."""
        if self._lock:
            self._lock.release()
            self._lock = None

    def wait_for_all(self) -> None:
        """On the main process of several: returns once every process has finished its share (the progress bar
        counts on meanwhile)."""
        if self.is_main and self.processes > 1:
            _wait_for(lambda: all((self.parts / f"rank-{rank}.done").exists() for rank in range(self.processes)))
            if self._watcher:
                self._watcher.stop()
                self._watcher = None

    def _merge(self, keys: Sequence[str], pattern: str) -> int:
        """Appends the records of the part files matching `pattern` that are not yet in the output, in input order,
        then removes those files; returns how many were appended. Each part is in input order already (a process
        takes its share in order), so they are merged as streams: memory holds keys, not records."""
        parts = [path for path in sorted(self.parts.glob(pattern)) if not path.name.endswith(".errors.jsonl")]
        if not parts:
            return 0
        order = {key: index for index, key in enumerate(keys)}

        def ordered(path: Path):
            for record in read_jsonl_stream(path):
                key = self.normalise(record[self.key_field])
                yield order.get(key, len(order)), key, record

        output = self.output_writer
        appended = 0
        try:
            for _, key, record in heapq.merge(*map(ordered, parts), key=lambda item: item[:2]):
                if key not in output.done:  # not merged by an earlier run, nor twice from two parts
                    output.write(record, self.mood_labels)
                    appended += 1
        finally:
            output.close()
        for path in parts:
            path.unlink()
        return appended


class _OutputLock:
    """An exclusive flock on OUTPUT.lock (beside the file OUTPUT names, through links), which holds the pid of the
    run: two runs appending to one output would each write the records the other writes. Taken without waiting; the file goes when the lock is released."""

    def __init__(self, path: str, fd: int):
        self.path, self.fd = path, fd

    @classmethod
    def take(cls, output: str, described: str) -> _OutputLock | None:
        """The lock, or None where the output's folder does not exist (RecordWriter then says so). Beside the file
        the output names, so that a link to it, or a path through one, takes the same lock."""
        path = f"{os.path.realpath(output)}.lock"
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                return None
            except OSError as error:  # a folder that cannot be written; another user's lock
                raise CommandError(f"{described}: cannot take its lock file {path} ({error.strerror or error}); "
                                   "choose an output in a folder you can write.") from error
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise CommandError(f"{described}: another music2emo run (pid {holder}) is writing to it; wait for it "
                                   "to end, or choose another output.") from None
            with contextlib.suppress(FileNotFoundError):  # the file locked is the one at the path, not one removed
                if os.stat(path).st_ino == os.fstat(fd).st_ino:  # by the run that held it meanwhile
                    break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as error:  # a full disk
            lock = cls(path, fd)
            lock.release()
            raise _no_room(f"{described}: cannot write its lock file {path}", error) from error
        return cls(path, fd)

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)


class InputCrashed(RuntimeError):
    """The child process analysing one input alone died (a signal, or no record): the input crashes the analysis."""


# Set in a child analysing one input alone: the pid of the run that started it (see `exit_with_parent`).
_PARENT_VARIABLE = "MUSIC2EMO_PARENT_PID"


def child_command(argv: list[str], paths: Sequence[str], output: str) -> list[str]:
    """The command line of a child of `analyse_in_child`: `python -m music2emo_hf.cli ARGV --output OUTPUT -- PATHS`
    (after `--`, a name such as `-a.mp3` is a file)."""
    return [sys.executable, "-m", "music2emo_hf.cli", *argv, "--output", output, "--",
            *(os.path.abspath(path) for path in paths)]


def analyse_in_child(argv: list[str], paths: Sequence[str], folder: str | os.PathLike | None = None,
                     ) -> Iterator[dict | Exception]:
    """For each of `paths` in order, its record, or the error it failed with (ValueError), or InputCrashed: analysed
    one at a time (ARGV holds --batch-size 1) by `child_command` in a process of its own (outside any process group),
    which loads the model once for them all. Where that process dies, the input in flight in its own job crashed it
    (or, if none was yet, the first not analysed); those after it go to a new process. Its files are in a temporary
    folder under `folder` (the job's parts, which the job removes: a kill leaves nothing)."""
    environment = {name: value for name, value in os.environ.items() if name not in _GROUP_VARIABLES}
    environment[_PARENT_VARIABLE] = str(os.getpid())
    keys = [os.path.realpath(path) for path in paths]  # as the child's records name them
    answers: dict[int, dict | Exception] = {}
    pending, given = list(range(len(paths))), 0
    while pending:
        with tempfile.TemporaryDirectory(prefix="music2emo-alone-", dir=folder) as temporary:
            output = os.path.join(temporary, "records.jsonl")
            done = subprocess.run(child_command(argv, [paths[i] for i in pending], output), env=environment,
                                  capture_output=True, text=True, errors="replace")  # a decoder's note: any bytes
            records = {record["file"]: record for record in read_jsonl(output)}
            parts = Path(f"{output}.parts")
            errors = {entry["key"]: entry["error"] for path in [Path(f"{output}.errors.jsonl"),
                                                                *parts.glob("rank-*.errors.jsonl")]
                      for entry in read_jsonl(path)}
            in_flight = {entry["key"] for marker in parts.glob("rank-*.inflight") for entry in read_jsonl(marker)}
        for i in pending:
            if keys[i] in records:
                answers[i] = records[keys[i]]
            elif keys[i] in errors:
                answers[i] = ValueError(errors[keys[i]])
        unanswered = [i for i in pending if i not in answers]
        if done.returncode < 0:  # a signal: a segfault, an abort, the OOM killer
            crashed = [i for i in unanswered if keys[i] in in_flight] or unanswered[:1]
            for i in crashed:
                answers[i] = InputCrashed(f"the analysis crashed on it twice (killed by signal {-done.returncode}); "
                                          "it is skipped")
        else:
            lines = done.stderr.strip().splitlines()
            said = [line.split(": ", 2)[-1] for line in lines if line.startswith("error: ")]
            for i in unanswered:
                answers[i] = ValueError(said[0] if said else (lines or [f"exit status {done.returncode}"])[-1])
        pending = [i for i in pending if i not in answers]
        while given in answers:
            yield answers.pop(given)
            given += 1


def exit_with_parent() -> None:
    """In a child of `analyse_in_child`: ends this process as soon as the run that started it is gone (killed with
    -9, say), which would otherwise go on analysing for nobody. Polled from a thread: PR_SET_PDEATHSIG would need a
    preexec_fn, unsafe in a parent with the pipeline's threads."""
    parent = os.environ.get(_PARENT_VARIABLE)
    if not parent:
        return

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(0.5)
        os._exit(1)  # its record would have gone to the parent's temporary folder: nothing is lost

    threading.Thread(target=watch, name="music2emo-parent-watch", daemon=True).start()


class _ProgressWatcher:
    """On the main process: the bar counts every process's finished inputs, read from their part files each second."""

    def __init__(self, job: Job, progress, total: int):
        self.job, self.progress, self.stop_event = job, progress, threading.Event()
        progress.total = total
        self.read: dict[Path, int] = {}  # bytes of each part file counted so far: only what is new is read
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.stop_event.wait(1.0):
            self._count()

    def _count(self) -> None:
        new_lines = 0
        for path in self.job.parts.glob("rank-*.jsonl"):
            if path.name.startswith(f"rank-{self.job.rank}."):
                continue  # this process's own are counted as it goes
            with open(path, "rb") as handle:
                handle.seek(self.read.get(path, 0))
                data = handle.read()
            counted = data.rfind(b"\n") + 1
            self.read[path] = self.read.get(path, 0) + counted
            new_lines += data.count(b"\n", 0, counted)
        if new_lines:
            self.progress.update(new_lines)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join()
        self._count()


def _exit_on_sigterm(signum, frame):
    """The launcher stops the other processes when one fails, and `kill` stops a run: end cleanly. A second SIGTERM
    is ignored (raised again during the clean-up, it aborted the process with its chord threads running)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def sigterm_ends_cleanly() -> Iterator[None]:
    """In the block (on the main thread), SIGTERM raises SystemExit(143) instead of ending the process at once, so
    that clean-ups run: records closed whole, a model's partial folder removed."""
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if on_main_thread else None
    try:
        yield
    finally:
        if previous is not None and signal.getsignal(signal.SIGTERM) is _exit_on_sigterm:  # not terminated
            signal.signal(signal.SIGTERM, previous)


def _write_now(path: Path, text: str) -> None:
    """The job's bookkeeping (a marker, the errors list), on disk now; a full disk stops the run, saying so."""
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise _no_room(f"cannot write {path}", error) from error


def _check_companion_names(output: str, described: str) -> None:
    """Refuses an output whose name leaves no room for the files kept beside it (the longest, its failures' while
    they are replaced: OUTPUT.errors.jsonl.tmp), before any work: else the run failed at its end."""
    suffix = ".errors.jsonl.tmp"
    longest = os.path.basename(output) + suffix
    try:
        limit = os.pathconf(os.path.dirname(os.path.abspath(output)), "PC_NAME_MAX")
    except (OSError, ValueError):  # no such limit known: the write says, if there is one
        return
    if len(os.fsencode(longest)) > limit:  # file systems count a name's bytes
        raise CommandError(f"{described}: its name is too long for the files kept beside it ({longest} would be "
                           f"{len(os.fsencode(longest))} bytes, over the {limit} this file system allows); choose a "
                           f"name of at most {limit - len(suffix)} bytes.")


def _no_room(what: str, error: OSError) -> CommandError:
    """A write of the job's that failed (a full disk, a quota), said with what to do: the work done is kept."""
    return CommandError(f"{what} ({error.strerror or error}); make room and run the same command again to go on where "
                        "it stopped.")


def _replace(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    _write_now(temporary, text)
    os.replace(temporary, path)


def _wait_for(condition: Callable[[], bool], interval: float = 0.5) -> None:
    while not condition():
        time.sleep(interval)
