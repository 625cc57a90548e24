"""Whether the Hugging Face Hub can be reached, decided in seconds rather than after a minute of retries, and loading
a model by folder or Hub id on that basis; which commit of a Hub repo a cached file belongs to."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

_REACHABLE_FOR = 60.0  # seconds an answer is kept: a long-lived process (the Space) is not offline for good
_reachable: tuple[float, bool] | None = None  # (when asked, the answer)
COMMIT = re.compile(r"^[0-9a-f]{40}$")


def package_cache(variable: str, name: str) -> Path:
    """One of this package's caches: `$variable`, else `$HF_HOME/music2emo-hf/<name>`. Absolute, so a relative or
    `~` setting names one cache wherever a command is run from."""
    from huggingface_hub import constants

    root = os.environ.get(variable) or os.path.join(constants.HF_HOME, "music2emo-hf", name)
    return Path(os.path.abspath(os.path.expanduser(root)))


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when HF_HUB_OFFLINE is set or the Hub (HF_ENDPOINT, its port; through the proxy of HTTPS_PROXY and the
    like, as huggingface_hub's client goes) does not answer; callers then look in the local cache only. The answer is
    kept for a minute, so a process asks once per run, and a blip does not last."""
    global _reachable
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if _reachable is not None and time.monotonic() - _reachable[0] < _REACHABLE_FOR:
        return _reachable[1]
    endpoint = urlparse(constants.ENDPOINT)
    proxied = urllib.request.getproxies().get(endpoint.scheme)  # the proxy huggingface_hub's client would use
    target = urlparse(proxied) if proxied and not urllib.request.proxy_bypass(endpoint.hostname or "") else endpoint
    port = target.port or (80 if target.scheme == "http" else 443)
    try:
        socket.create_connection((target.hostname or "huggingface.co", port), timeout=timeout).close()
        answer = True
    except OSError:
        answer = False
    _reachable = (time.monotonic(), answer)
    return answer


def why_unreachable() -> str:
    """Why `hub_reachable` said no, for messages: "HF_HUB_OFFLINE is set", or "ENDPOINT does not answer"."""
    from huggingface_hub import constants

    return "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"{constants.ENDPOINT} does not answer"


def snapshot_commit(path: str | os.PathLike) -> str | None:
    """The commit of a file in the Hub cache (`.../models--org--name/snapshots/<commit>/<file>`), else None."""
    parts = Path(path).parts
    for i in range(1, len(parts) - 1):
        if parts[i] == "snapshots" and parts[i - 1].startswith("models--") and COMMIT.match(parts[i + 1]):
            return parts[i + 1]
    return None


def loaded_commit(name_or_path: str | os.PathLike, revision: str | None = None,
                  cache_dir: str | os.PathLike | None = None) -> str | None:
    """The commit a model just loaded from the Hub came from, read from the local cache (its config's snapshot at
    `revision`, or the commit transformers resolved it to); None for a folder. transformers 5 keeps it nowhere."""
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        return None
    resolved = getattr(revision, "resolved", None)  # huggingface_hub's ResolvedRevision, as transformers passes it
    if resolved and COMMIT.match(resolved):
        return resolved
    from huggingface_hub import try_to_load_from_cache

    for filename in ("config.json", "model.safetensors"):
        path = try_to_load_from_cache(name, filename, cache_dir=cache_dir, revision=revision)
        if isinstance(path, str):
            return snapshot_commit(path)
    return None


def first_line(error: BaseException) -> str:
    """What an error says in one line, for a one-sentence message (its type where it says nothing)."""
    return (str(error).splitlines() or [type(error).__name__])[0]


def unreadable_weights(error: BaseException) -> str | None:
    """Why loading failed when a weights file itself is damaged (cut short, overwritten), as the reason to give after
    the model's name; None for any other failure. The innermost such error says it best (torch wraps the pickle's
    own complaint in advice about `weights_only`)."""
    import pickle

    from safetensors import SafetensorError

    why, seen = None, set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, pickle.UnpicklingError) and "Unsupported global" in str(error):
            return None  # whole, but holding an object torch refuses to load without running code: not damage
        if isinstance(error, (SafetensorError, EOFError, pickle.UnpicklingError)) or (
                isinstance(error, RuntimeError) and str(error).startswith("PytorchStreamReader")):
            why = first_line(error)
        error = error.__cause__ or error.__context__
    return None if why is None else _damaged(why)


def _damaged(why: str) -> str:
    return f"its weights file cannot be read ({why}): it is damaged or cut short; copy or download it again"


class ModelLoadError(RuntimeError):
    """A model could not be loaded; `reason` is the first line of what stopped it, for a one-sentence message."""

    def __init__(self, model: str, reason: str):
        super().__init__(f"{model}: {reason}")
        self.model, self.reason = model, reason


def load_pipeline(model: str, **options):
    """The `music-emotion` pipeline of `model`: a folder, a released checkpoint (`amaai-lab/music2emo[:NAME]`,
    converted on first use, see `released`), or a Hub id (looked up in the local cache only when the Hub cannot be
    reached); `options` go to `transformers.pipeline`."""
    import transformers

    from .released import resolve_model

    if not isinstance(model, str | os.PathLike):
        raise TypeError(f"model: expected a model folder, a Hub id or a released checkpoint's name, got "
                        f"{type(model).__name__}")
    model = os.fspath(model)
    location = model
    if why := not_a_model_folder(model):
        raise ModelLoadError(model, why)
    try:
        location = resolve_model(model)
        offline = {} if os.path.isdir(location) or hub_reachable() else {"local_files_only": True}
        # A config.json of another model_type would load the class it names, which has no moods
        why = config_problem(location) if os.path.isdir(location) else _not_music2emo(
            transformers.PretrainedConfig.get_config_dict(location, **offline)[0].get("model_type"))
        if why:
            raise ValueError(why)
        pipe = transformers.pipeline("music-emotion", model=location, **offline, **options)
        pipe.harmony  # the chord analyser the model was trained with: a missing weights file is reported now
        return pipe
    except Exception as error:  # whatever stops a model from loading becomes one line for the user
        reason = ((incomplete_model(location) if os.path.isdir(location) else _not_in_cache(location))
                  or unreadable_weights(error) or _original_error(error) or first_line(error))
        raise ModelLoadError(model, reason) from error


def _unreadable(path: Path, mode: str = "a+r") -> str:
    """What to say of a file (or, with mode "a+rx", a folder) this user cannot read."""
    return f"{path} cannot be read (permission denied); ask its owner to make it readable (chmod {mode})"


def _not_music2emo(model_type) -> str | None:
    """Why a config.json's model_type is not this package's, or None."""
    from .configuration_music2emo import Music2EmoConfig

    if model_type == Music2EmoConfig.model_type:
        return None
    return (f"it holds a {model_type!r} model (config.json's model_type), not a Music2Emo model "
            f"({Music2EmoConfig.model_type!r}); name one written by `music2emo init`, `convert-original` or training, "
            "or a released checkpoint")


def config_problem(folder: str | os.PathLike) -> str | None:
    """Why a folder's config.json is not a Music2Emo model's settings, or None (transformers' own words were "'list'
    object has no attribute 'get'", "module 'torch' has no attribute 'float8'")."""
    import json

    import torch

    path = Path(folder) / "config.json"
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ("it holds no config.json: it is not a model folder (one written by `music2emo init`, "
                "`convert-original`, training or save_pretrained)")
    except PermissionError:
        return _unreadable(path)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return (f"its config.json cannot be read as JSON ({first_line(error)}): restore it, or save the model there "
                "again")
    if not isinstance(settings, dict):
        return (f"its config.json holds a JSON {type(settings).__name__}, not a model's settings (an object): "
                "restore it, or save the model there again")
    if why := _not_music2emo(settings.get("model_type")):
        return why
    dtype = settings.get("dtype", settings.get("torch_dtype"))
    if isinstance(dtype, str) and dtype != "auto" and not isinstance(getattr(torch, dtype, None), torch.dtype):
        return f"its config.json names dtype {dtype!r}, which torch does not have (float32, bfloat16, float16)"
    return None


def not_a_model_folder(model: str) -> str | None:
    """Why a name that is a path (it exists, or is written as one: /, ./, ../, ~, or more than one '/') is no model
    folder; None for a folder or a name the Hub could hold (OWNER/NAME), whose rules would otherwise be the answer."""
    if os.path.isdir(model):
        return None
    if os.path.exists(model):
        return "it is a file, not a model folder"
    if model.startswith(("/", "./", "../", "~")) or model.count("/") > 1:
        return "there is no such folder"
    return None


def _original_error(error: BaseException) -> str | None:
    """What stopped the model class from loading, where transformers' pipeline only says "See the original errors:"
    on its first line, with the tracebacks after it: the last line of the last one."""
    text = str(error)
    if "See the original errors:" not in text:
        return None
    last = re.sub(r"^\w+(Error|Exception): ", "", [line.strip() for line in text.splitlines() if line.strip()][-1])
    if "ignore_mismatched_sizes" in last:  # the report it refers to went to the log
        return ("its weights do not fit its config.json (tensors of other sizes than that config makes: a config "
                "edited, or one of another model); save the model there again, or copy the folder whole")
    return last


def _weights_in(folder: Path) -> bool:
    """Whether `folder` holds a weights file of a name transformers reads."""
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

    return any((folder / name).is_file()
               for name in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME))


def incomplete_model(folder: str | os.PathLike) -> str | None:
    """What a model folder lacks for this process, as the reason it did not load (transformers says it found no
    weights, or "See the original errors:" and nothing after) or is not published: the folder or a file it cannot
    read, a config.json that is no Music2Emo model's (`config_problem`), no weights at all, a weights file cut short
    (a copy that stopped), or no feature extractor's settings."""
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    if not os.access(folder, os.R_OK | os.X_OK):  # else every file in it looks absent
        return _unreadable(folder, "a+rx") + "."
    if why := config_problem(folder):
        return why + "."
    with contextlib.suppress(OSError):
        for path in folder.iterdir():
            if path.is_file() and not os.access(path, os.R_OK):
                return _unreadable(path) + "."
        if not _weights_in(folder):
            return ("it holds config.json but no weights (model.safetensors): save the model there again "
                    "(save_pretrained, music2emo init), or copy or download the folder whole.")
        for path in folder.glob("*.safetensors"):
            try:
                safe_open(str(path), "pt").keys()
            except SafetensorError as error:
                return _damaged(f"{path.name}: {first_line(error)}")
        if not (folder / "preprocessor_config.json").is_file():
            return ("it holds no preprocessor_config.json (the feature extractor's settings): save the model there "
                    "again (save_pretrained, music2emo init), or copy the folder whole.")
    return None


def _not_in_cache(repo: str) -> str | None:
    """Why a Hub model did not load from the local cache (offline): its weights were never fetched into the snapshot
    its config is in (the config alone was downloaded), or one of its files is damaged; None where that is not it."""
    from huggingface_hub import try_to_load_from_cache

    with contextlib.suppress(Exception):  # not a repo id at all: transformers' own message says so
        config = try_to_load_from_cache(repo, "config.json")
        if not isinstance(config, str):
            return None
        snapshot = Path(config).parent
        if not _weights_in(snapshot):
            return ("its weights (model.safetensors) are not in the local Hugging Face cache, and the Hub could not "
                    f"be reached; fetch them where it can: hf download {repo}")
        return incomplete_model(snapshot)
    return None


def check_publishable() -> None:
    """Refuses to publish while the Hub cannot be reached: called before anything is written for it too."""
    if not hub_reachable():
        raise ConnectionError(f"the Hugging Face Hub cannot be reached ({why_unreachable()}); publish where it can "
                              "be, by running the command again. Nothing was published.")


def push_folder(
    folder: str | os.PathLike, repo_id: str, repo_type: str, ignore_patterns: list[str], commit_message: str,
    private: bool = False,
) -> str:
    """Create the Hub repo if needed and make it hold the folder as it is, in one commit: files the repo has and the
    folder lacks (a shard of an earlier split, an old weights file) are removed, its history keeping them, so the
    repo never mixes two versions. Returns the commit URL."""
    from huggingface_hub import HfApi

    check_publishable()
    api = HfApi()
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    if private and not api.repo_info(repo_id, repo_type=repo_type).private:  # it existed: its visibility stays
        raise PermissionError(f"{repo_id} exists and is public, so --private cannot keep this upload private: make it "
                              "private in its settings on the Hub first, or name another repo. Nothing was uploaded.")
    commit = api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=str(folder),
                               ignore_patterns=ignore_patterns, delete_patterns="*", commit_message=commit_message)
    return str(getattr(commit, "commit_url", commit))


__all__ = ["ModelLoadError", "check_publishable", "config_problem", "first_line", "hub_reachable", "incomplete_model",
           "load_pipeline", "loaded_commit", "not_a_model_folder", "package_cache", "push_folder", "snapshot_commit",
           "unreadable_weights"]
