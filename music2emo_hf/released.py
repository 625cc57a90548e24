"""The authors' released Music2Emo checkpoints as model references, usable wherever a model is named.

    amaai-lab/music2emo                      J_all, the authors' default
    amaai-lab/music2emo:D_all                any of the eight files in CHECKPOINTS
    amaai-lab/music2emo:P_all@<revision>     a branch, tag or commit of the Hub repo (default: main)

On first use the checkpoint and BTC's chord weights (`amaai-lab/music2emo`, Apache-2.0; the heads were trained on
BTC's chords) and the MERT-v1-95M backbone (`m-a-p/MERT-v1-95M`, CC-BY-NC-4.0) are downloaded with `huggingface_hub` (its cache, HF_HOME, HF_TOKEN, HF_HUB_OFFLINE, resumable
downloads and progress bars all apply), converted once (`convert.convert_original`), and stored in a local cache
keyed by what they were made from: `<cache>/amaai-lab--music2emo/<commit>/<checkpoint>`. Later runs load that folder
with no conversion and no network: which commit a branch meant is remembered in `<cache>/.../refs/<branch>`, as the
Hub cache does. The cache is `$MUSIC2EMO_CACHE`, or `music2emo-hf/converted` under HF_HOME.

An entry is written into a temporary folder, completed by a manifest of its files' sizes and SHA-256, and renamed into
place under a file lock, so concurrent first runs leave one good entry and an interrupted one leaves none; an entry
whose files do not match its manifest is rebuilt, with a one-line note.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .atomic import clear_partials, file_sha256, folder_in_place, write_atomic
from .hub import COMMIT, first_line, hub_reachable, package_cache, snapshot_commit, why_unreachable

RELEASED_REPO = "amaai-lab/music2emo"
BACKBONE_REPO = "m-a-p/MERT-v1-95M"
DEFAULT_CHECKPOINT = "J_all"
# The released files (saved_models/<name>.ckpt) and what each is.
CHECKPOINTS = {
    "J_all": "student trained on MTG-Jamendo, DEAM, EmoMusic and PMEmo, selected on MTG-Jamendo's validation set",
    "D_all": "student trained on the four corpora, selected on DEAM's validation set",
    "E_all": "student trained on the four corpora, selected on EmoMusic's validation set",
    "P_all": "student trained on the four corpora, selected on PMEmo's validation set",
    "jamendo_best": "teacher: MTG-Jamendo's 56 mood/theme tags only",
    "deam_best": "teacher: DEAM valence/arousal only",
    "emomusic_best": "teacher: EmoMusic valence/arousal only",
    "pmemo_best": "teacher: PMEmo valence/arousal only",
}
# The corpora each released file's heads learnt from (for a model card's licences).
CHECKPOINT_CORPORA = {
    **dict.fromkeys(("J_all", "D_all", "E_all", "P_all"), ["mtg_jamendo", "deam", "emomusic", "pmemo"]),
    "jamendo_best": ["mtg_jamendo"], "deam_best": ["deam"], "emomusic_best": ["emomusic"], "pmemo_best": ["pmemo"],
}
# Sizes for messages when the Hub cannot say (offline): from the networks' parameter counts, float32, with
# Lightning's optimizer state (Adam keeps two more copies) for the checkpoints.
ESTIMATED_MB = {"checkpoint": 13, "backbone": 380, "btc": 12}
LICENCES = ("MERT-v1-95M (the backbone) is CC-BY-NC-4.0: non-commercial use only; the Music2Emo heads "
            f"({RELEASED_REPO}) are Apache-2.0.")
MANIFEST = "music2emo_source.json"
# Raised when a change to the conversion makes older cache entries wrong; entries of another format are rebuilt.
CACHE_FORMAT = 3


class ReleasedModelError(RuntimeError):
    """A released model could not be had; the message is one sentence naming what is missing and what to do."""


@dataclass(frozen=True)
class ReleasedReference:
    checkpoint: str = DEFAULT_CHECKPOINT
    revision: str = "main"
    repo: str = RELEASED_REPO

    @property
    def filename(self) -> str:
        return f"saved_models/{self.checkpoint}.ckpt"

    def __str__(self) -> str:
        return f"{self.repo}:{self.checkpoint}" + (f"@{self.revision}" if self.revision != "main" else "")


def parse_reference(text: str) -> ReleasedReference | None:
    """The released checkpoint `text` names (`REPO[:CHECKPOINT][@REVISION]`), or None when it names something else
    (a folder, another Hub id). A bad checkpoint name is an error that lists the valid ones."""
    if not isinstance(text, str) or os.path.exists(text):
        return None
    rest, _, revision = text.partition("@")
    repo, _, checkpoint = rest.partition(":")
    if repo.strip().lower() != RELEASED_REPO:
        return None
    name = checkpoint.strip() or DEFAULT_CHECKPOINT
    name = name.removeprefix("saved_models/").removesuffix(".ckpt")
    if name not in CHECKPOINTS:
        raise ReleasedModelError(
            f"{text}: {RELEASED_REPO} has no checkpoint {checkpoint!r}; choose one of {', '.join(CHECKPOINTS)} "
            f"(e.g. {RELEASED_REPO}:D_all)."
        )
    return ReleasedReference(name, revision.strip() or "main")


def is_released(text) -> bool:
    return parse_reference(text) is not None


# Write failures that name no file: within a conversion, those of writing into the cache.
_FULL_OR_READ_ONLY = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def cache_root() -> Path:
    return package_cache("MUSIC2EMO_CACHE", "converted")


def _repo_folder(reference: ReleasedReference) -> Path:
    return cache_root() / reference.repo.replace("/", "--")


def _ref_file(reference: ReleasedReference) -> Path:
    return _repo_folder(reference) / "refs" / reference.revision


def entry_folder(reference: ReleasedReference, commit: str) -> Path:
    return _repo_folder(reference) / commit / reference.checkpoint



def entry_problem(folder: Path) -> str | None:
    """None for a complete entry; otherwise what is wrong with it (no folder: 'absent'). A file with the size and
    modification time it was made with is taken as made (hashing 400 MB at every start costs most of a second); any
    other is checked against its checksum."""
    if not folder.is_dir():
        return "absent"
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("cache_format") != CACHE_FORMAT:
            return f"made by another version of the converter (cache format {manifest.get('cache_format')})"
    except (OSError, ValueError, KeyError, TypeError):
        return "its manifest is missing or unreadable"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        stat = path.stat()
        if stat.st_size != expected["size"]:
            return f"{name} has {stat.st_size} bytes, not {expected['size']}"
        if stat.st_mtime_ns != expected.get("mtime_ns") and file_sha256(path) != expected["sha256"]:
            return f"{name} does not match its checksum"
    return None


def _read_ref(reference: ReleasedReference) -> str | None:
    if COMMIT.match(reference.revision):
        return reference.revision
    try:
        commit = _ref_file(reference).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return commit if COMMIT.match(commit) else None


def _check_cached(path: str, repo: str, filename: str) -> None:
    """Refuses a file of the Hub cache whose bytes are not those the Hub published: the cache names a blob by its
    sha256 (large files) or its git blob sha1, and huggingface_hub never checks it again once downloaded (a disk
    fault, a copy cut short between machines)."""
    import hashlib

    blob = os.path.realpath(path)
    name = os.path.basename(blob)
    if re.fullmatch(r"[0-9a-f]{64}", name):
        actual = file_sha256(blob)
    elif re.fullmatch(r"[0-9a-f]{40}", name):
        data = Path(blob).read_bytes()
        actual = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    else:
        return
    if actual != name:
        revision = _commit_of(path)
        raise ReleasedModelError(
            f"{repo} {filename} in the Hugging Face cache ({path}) is damaged: its bytes are not those the Hub "
            f"published. Fetch it again with `hf download {repo} {filename} --revision {revision} --force-download` "
            "(plain `hf download` keeps the damaged file)."
        )


def _commit_of(path: str) -> str:
    """The commit of a file in the Hub cache, which must be in a snapshot."""
    commit = snapshot_commit(path)
    if commit is None:
        raise ReleasedModelError(f"{path}: not in a Hugging Face Hub cache snapshot, so its revision is unknown.")
    return commit


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ or error.__context__:
        error = error.__cause__ or error.__context__
    return error


def _why_failed(error: BaseException, online: bool) -> str | None:
    """Why a download failed though the Hub answered: the first line of the bottom of the chain."""
    cause = _root_cause(error)
    return first_line(cause) if online and cause is not error else None


def _download(repo: str, filename: str, revision: str, online: bool, say) -> str:
    """The file's path in the Hub cache, downloaded when it is not there (with huggingface_hub's progress bar). The
    file's metadata is asked for first: it gives the size to announce, and its failure (no such file, a certificate
    that does not verify) is the download's, raised before anything is announced. That first request is not
    retried: a certificate that does not verify fails at once (huggingface_hub would retry it for 23 s, in vain); any
    other failure to answer gets huggingface_hub's retries."""
    import ssl

    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    cached = try_to_load_from_cache(repo, filename, revision=revision)
    if isinstance(cached, str):
        return cached
    if not online:
        raise LocalEntryNotFoundError(f"{repo}/{filename}")
    try:
        size = get_hf_file_metadata(hf_hub_url(repo, filename, revision=revision)).size
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
        raise  # the Hub's own answer
    except Exception as error:
        if isinstance(_root_cause(error), ssl.SSLCertVerificationError):
            raise LocalEntryNotFoundError(f"{repo}/{filename}: the Hub's certificate does not verify") from error
        size = hf_hub_download(repo, filename, revision=revision, dry_run=True).file_size
    shown = "" if size is None else f" ({size / 1e6:,.0f} MB)" if size >= 1e6 else f" ({size / 1e3:,.1f} kB)"
    say(f"downloading {repo}/{filename}{shown}")  # a mirror (HF_ENDPOINT) may not give the size
    disabled = are_progress_bars_disabled()
    enable_progress_bars()
    try:
        return hf_hub_download(repo, filename, revision=revision)
    finally:
        if disabled:
            disable_progress_bars()


def _missing(reference: ReleasedReference, only: str | None = None, instead: str | None = None,
             failure: str | None = None) -> ReleasedModelError:
    """Every file the released model needs that the Hub cache lacks (or the one file `only`), and the commands that
    fetch them all at once: an offline user should not have to find them one failed run at a time. `instead`: what
    the user can do without them (default: use a converted model folder); `failure`: why a download from a Hub that
    answered failed (a certificate a proxy replaced, say)."""
    from huggingface_hub import constants, try_to_load_from_cache

    from .btc import RELEASED_WEIGHTS

    instead = instead or "use a converted model folder (--model DIR; model=DIR in Python)"

    sizes = {reference.filename: ESTIMATED_MB["checkpoint"], RELEASED_WEIGHTS: ESTIMATED_MB["btc"],
             "pytorch_model.bin": ESTIMATED_MB["backbone"]}
    revision = f" --revision {reference.revision}" if reference.revision != "main" else ""
    release = [name for name in ([only] if only else [reference.filename, RELEASED_WEIGHTS])
               if not isinstance(try_to_load_from_cache(reference.repo, name, revision=reference.revision), str)]
    wanted = [(reference.repo, release, revision)] if release else []
    if not only and not _cached_backbone():
        wanted.append((BACKBONE_REPO, ["config.json", "pytorch_model.bin"], ""))
    if not wanted:  # cached after all (another process was downloading): name what is needed
        wanted = [(reference.repo, [only] if only else [reference.filename, RELEASED_WEIGHTS], revision)]
    listed = " and ".join(
        f"{repo} " + ", ".join(name + (f" (about {sizes[name]} MB)" if name in sizes else "") for name in files)
        for repo, files, _ in wanted)
    commands = " and ".join(f"`hf download {repo} {' '.join(files)}{pin}`" for repo, files, pin in wanted)
    several = sum(len(files) for _, files, _ in wanted) > 1
    return ReleasedModelError(
        f"{'' if only else f'{reference}: '}{listed} {'are' if several else 'is'} not in the "
        f"Hugging Face cache ({constants.HF_HUB_CACHE}) and "
        + (f"the download failed ({failure})" if failure else f"the Hub cannot be reached ({why_unreachable()})")
        + f"; on a machine with internet run {commands}, then copy the cache here, or {instead}."
    )


def _backbone_files(online: bool, say) -> tuple[str, str, str] | None:
    """(folder, commit, weights file) of MERT-v1-95M in the Hub cache, downloaded when online: its config.json and
    its weights, safetensors where the repo has them, else the PyTorch .bin it was released with; None when the cache
    lacks them and they cannot be downloaded (online, the failure to download its config.json is raised)."""
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        config = _download(BACKBONE_REPO, "config.json", "main", online, say)
    except LocalEntryNotFoundError:
        if online:
            raise  # why, for the caller to say
        return None
    commit = _commit_of(config)
    for weights in ("model.safetensors", "pytorch_model.bin"):
        try:  # at the config's commit: `main` may have moved on since
            _download(BACKBONE_REPO, weights, commit, online, say)
        except (EntryNotFoundError, LocalEntryNotFoundError):
            continue
        return str(Path(config).parent), commit, weights
    return None


def _cached_backbone() -> bool:
    return _backbone_files(online=False, say=note) is not None


def _fetch_backbone(reference: ReleasedReference, online: bool, say) -> tuple[str, str, str]:
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        found = _backbone_files(online, say)
    except LocalEntryNotFoundError as error:
        raise _missing(reference, failure=_why_failed(error, online)) from None
    if found is None:
        raise _missing(reference)
    return found


def _convert_into(folder: Path, reference: ReleasedReference, checkpoint_path: str, commit: str, online: bool, say):
    """Convert into a temporary sibling of `folder`, write the manifest last, then rename it into place."""
    from .btc import RELEASED_WEIGHTS
    from .convert import convert_original, write_converted

    pinned = ReleasedReference(reference.checkpoint, commit, reference.repo)
    btc_weights, _ = fetch_release_file(pinned, RELEASED_WEIGHTS, say)
    backbone, backbone_commit, backbone_file = _fetch_backbone(reference, online, say)
    for name in ("config.json", backbone_file):  # the release's own files were checked as they were fetched
        _check_cached(os.path.join(backbone, name), BACKBONE_REPO, name)
    source = {
        "repo": reference.repo, "checkpoint": reference.checkpoint, "file": reference.filename, "revision": commit,
        "btc": RELEASED_WEIGHTS,
        "backbone": {"repo": BACKBONE_REPO, "file": backbone_file, "revision": backbone_commit},
    }
    say(f"converting {reference.filename} of {reference.repo}@{commit[:8]} (once; later runs load it from {folder})")
    with folder_in_place(folder) as work:
        model, extractor, details = convert_original(checkpoint_path, backbone, btc_weights)
        model.config.backbone_name_or_path = BACKBONE_REPO
        model.config.source = source
        write_converted(model, extractor, details, work, str(reference), btc_weights)
        files = {path.relative_to(work).as_posix(): {"size": path.stat().st_size, "sha256": file_sha256(path),
                                                     "mtime_ns": path.stat().st_mtime_ns}
                 for path in sorted(work.rglob("*")) if path.is_file()}
        manifest = {"cache_format": CACHE_FORMAT, "source": source, "files": files}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


def note(message: str) -> None:
    """How a model's download or conversion (and a backbone's export) tells the user what takes time, by default."""
    print(f"music2emo: {message}", file=sys.stderr)


def _as_reference(reference: str | ReleasedReference) -> ReleasedReference:
    if isinstance(reference, ReleasedReference):
        return reference
    parsed = parse_reference(reference)
    if parsed is None:
        raise ReleasedModelError(f"{reference}: not a released Music2Emo checkpoint ({RELEASED_REPO}[:NAME][@REVISION]).")
    return parsed


def fetch_release_file(reference: str | ReleasedReference, filename: str | None = None,
                       say: Callable[[str], None] = note, alone: str | None = None,
                       instead: str | None = None) -> tuple[str, str]:
    """(path in the Hub cache, commit) of a file of the release at the reference's revision (default: its
    checkpoint; BTC's weights are `btc.RELEASED_WEIGHTS`), downloaded if it is not cached. When it cannot be had,
    the error names every file the converted model needs (and `instead`, what the caller can do without them), or,
    with `alone` (what the caller can do instead of this file), this file only."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    reference = _as_reference(reference)
    filename = filename or reference.filename
    online = hub_reachable()
    try:
        path = _download(reference.repo, filename, reference.revision, online, say)
    except LocalEntryNotFoundError as error:
        failure = _why_failed(error, online)
        raise (_missing(reference, filename, alone, failure) if alone
               else _missing(reference, instead=instead, failure=failure)) from None
    except RevisionNotFoundError:  # its first line is only "404 Client Error."
        raise ReleasedModelError(f"{reference}: the Hub has no revision {reference.revision!r} of {reference.repo}; "
                                 "give a branch, tag or commit it has, or leave @REVISION out.") from None
    except EntryNotFoundError:
        raise ReleasedModelError(f"{reference}: {reference.repo} has no file {filename} at revision "
                                 f"{reference.revision!r}; give a revision that has it.") from None
    except RepositoryNotFoundError:
        raise ReleasedModelError(f"{reference}: the Hub has no repository {reference.repo} that this machine may "
                                 "read (a private or gated one needs `hf auth login`).") from None
    _check_cached(path, reference.repo, filename)  # for `convert-original` as for a first use
    return path, _commit_of(path)


def resolve(reference: str | ReleasedReference, say: Callable[[str], None] = note) -> Path:
    """The local folder of the converted released model `reference`: from the cache when it is there (no network),
    else downloaded and converted once. `say` receives one-line notes (downloads, conversion, a rebuilt entry)."""
    reference = _as_reference(reference)
    commit = _read_ref(reference)
    if commit and entry_problem(entry_folder(reference, commit)) is None:
        return entry_folder(reference, commit)
    checkpoint_path, commit = fetch_release_file(reference, say=say)
    folder = entry_folder(reference, commit)
    if entry_problem(folder) is not None:  # complete already (another name of its commit): no lock, which a
        from safetensors import SafetensorError  # what writing the weights raises on a full disk

        try:  # read-only shared cache could not take
            _convert_once(folder, reference, checkpoint_path, commit, say)
        except (OSError, SafetensorError) as error:
            root, filename = cache_root(), getattr(error, "filename", None)
            if filename:  # in the cache, or a folder above it that it would be made in
                in_cache = Path(filename).is_relative_to(root) or root.is_relative_to(Path(filename))
            else:
                in_cache = isinstance(error, SafetensorError) or error.errno in _FULL_OR_READ_ONLY
            if not in_cache:
                raise
            raise ReleasedModelError(
                f"{reference} cannot be converted: the cache of converted models, {root}, cannot be written "
                f"({getattr(error, 'strerror', None) or error}); set MUSIC2EMO_CACHE to a folder you can write (or "
                "make room in this one)"
            ) from None
    if not COMMIT.match(reference.revision):
        with contextlib.suppress(OSError):  # only a shortcut for the next run (a read-only cache has none)
            write_atomic(_ref_file(reference), commit + "\n", concurrent=True)
    return folder


def _convert_once(folder: Path, reference: ReleasedReference, checkpoint_path: str, commit: str, say) -> None:
    """Under the entry's lock (saying so when another process holds it): convert unless that process just did, after
    clearing what a killed run left and a damaged entry."""
    from filelock import FileLock, Timeout


    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder) + ".lock")
    try:
        held = lock.acquire(timeout=0)
    except Timeout:
        say(f"waiting for another process's conversion of {reference} (it holds {lock.lock_file})")
        held = lock.acquire()
    with held:
        problem = entry_problem(folder)
        if problem is None:
            return
        clear_partials(folder)
        if problem != "absent":
            say(f"the converted {reference} in {folder} is damaged ({problem}); converting it again")
            shutil.rmtree(folder)
        say(f"first use of {reference}. Terms: {LICENCES}")
        _convert_into(folder, reference, checkpoint_path, commit, hub_reachable(), say)


def resolve_model(model: str) -> str:
    """`model` as something `from_pretrained` and `transformers.pipeline` load: a released reference becomes its
    converted folder; folders and other Hub ids are returned as they are."""
    return str(resolve(model)) if is_released(model) else model


__all__ = [
    "BACKBONE_REPO",
    "CHECKPOINTS",
    "CHECKPOINT_CORPORA",
    "DEFAULT_CHECKPOINT",
    "LICENCES",
    "RELEASED_REPO",
    "ReleasedModelError",
    "ReleasedReference",
    "cache_root",
    "entry_folder",
    "entry_problem",
    "fetch_release_file",
    "is_released",
    "parse_reference",
    "resolve",
    "resolve_model",
]
