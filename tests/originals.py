"""Test inputs made the way the real producers make them: the authors' networks and Lightning checkpoints, a
MERT-v1-style backbone repo (as transformers 4.24 saved MERT-v1-95M), and a Hugging Face Hub cache laid out as
`huggingface_hub` lays it."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import math
import os
import shutil
import threading
import urllib.parse
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import HubertConfig, HubertModel


class OriginalNetwork(nn.Module):
    """FeedforwardModelMTAttnCK (students) or FeedforwardModelAttnCK (teachers, `teacher_outputs`), written from
    the description in ORIGINALS §1.4 alone: the reference the conversion is checked against."""

    def __init__(self, teacher_outputs: int | None = None):
        super().__init__()
        self.chord_root_embedding = nn.Embedding(14, 4)
        self.chord_attr_embedding = nn.Embedding(14, 4)
        position = torch.arange(100, dtype=torch.float32)[:, None]
        frequency = torch.exp(torch.arange(0, 8, 2, dtype=torch.float32) * (-math.log(10000.0) / 8))
        self.pe = torch.zeros(100, 8)  # a plain attribute, not a buffer: not in the state dict
        self.pe[:, 0::2], self.pe[:, 1::2] = torch.sin(position * frequency), torch.cos(position * frequency)
        layer = nn.TransformerEncoderLayer(d_model=8, nhead=8, dim_feedforward=64, dropout=0.1, batch_first=True)
        self.chord_transformer = nn.TransformerEncoder(layer, num_layers=2)
        self.input_proj = nn.Sequential(nn.Linear(1536 + 8 + 1, 512), nn.ReLU())
        branch = lambda outputs: nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, outputs))  # noqa: E731
        if teacher_outputs:
            self.output_proj = branch(teacher_outputs)
        else:
            self.classification_branch, self.regression_branch = branch(56), branch(2)

    def forward(self, x_mert, x_chord_root, x_chord_attr, x_key):
        tokens = torch.cat([self.chord_root_embedding(x_chord_root), self.chord_attr_embedding(x_chord_attr)], -1)
        tokens = tokens + self.pe[: tokens.shape[1]]
        sequence = torch.cat([torch.zeros(len(tokens), 1, 8), tokens], dim=1)  # the zero CLS, after the PE
        chord = self.chord_transformer(sequence)[:, 0]
        hidden = self.input_proj(torch.cat([x_mert, chord, x_key.float()], dim=-1))
        if hasattr(self, "output_proj"):
            return (self.output_proj(hidden),)
        return self.classification_branch(hidden), self.regression_branch(hidden)


def seeded_state(template: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Weights for a state dict's names and shapes that anyone can rebuild from the names alone (no code of the
    network that defined them): one numpy generator over the names in sorted order; matrices and kernels normal with
    std 1/sqrt(fan-in), norm scales 1 + 0.1 N, other vectors 0.1 N; integer buffers kept."""
    rng = np.random.default_rng(seed)
    state = {}
    for name in sorted(template):
        tensor = template[name]
        if not tensor.is_floating_point():
            state[name] = tensor.clone()
            continue
        noise = rng.standard_normal(tuple(tensor.shape))
        if tensor.ndim >= 2:
            values = noise / math.sqrt(tensor[0].numel())
        elif "norm" in name and name.endswith(("weight", "gamma")):
            values = 1.0 + 0.1 * noise
        else:
            values = 0.1 * noise
        state[name] = torch.from_numpy(values).to(tensor.dtype)
    return state


BTC_MEAN, BTC_STD = -3.5, 2.0  # plausible statistics of BTC's log-CQT features
SEEDS = {"btc": 1, "heads": 2, "mert": 3}  # of benchmarks/record_authors_reference.py's weights


def btc_weights_file(path: Path, seed: int = SEEDS["btc"]) -> Path:
    """BTC's weights (seeded, under the reference implementation's names, which BTCModel keeps) saved as the
    authors' `btc_model_large_voca.pt` is: a `torch.save` dict with `model`, `mean` and `std`."""
    from music2emo_hf.btc import BTCModel

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": seeded_state(BTCModel().state_dict(), seed), "mean": BTC_MEAN, "std": BTC_STD}, path)
    return path


# The released files: students are multitask networks, teachers one head (56 moods or valence/arousal).
RELEASED_FILES = {"J_all": None, "D_all": None, "E_all": None, "P_all": None,
                  "jamendo_best": 56, "deam_best": 2, "emomusic_best": 2, "pmemo_best": 2}


def lightning_checkpoint(path: Path, network: OriginalNetwork, workdir: Path, save_hyperparameters: bool = False):
    """Train `network` for one short epoch inside a LightningModule that registers what the authors' `MusicClassifier`
    (trainer.py, PyTorch Lightning 2.4) registers, under a Trainer with their callbacks (ModelCheckpoint with
    save_last, EarlyStopping) and Adam, and copy the checkpoint Lightning wrote to `path`. So the file holds what theirs
    hold: the network under `model.`, both BCE losses' class-weight buffers, loops, callback and optimizer states;
    with `save_hyperparameters`, their OmegaConf training config pickled too. `network` ends up holding the saved
    weights."""
    import pytorch_lightning as pl
    from omegaconf import OmegaConf
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
    from torchmetrics import MeanMetric

    student = not hasattr(network, "output_proj")
    config = OmegaConf.create({
        "model": {"encoder": "MERT", "layers": [5, 6], "kd": student, "kd_weight": 0.8, "kd_temperature": 1,
                  "lr": 1e-4, "classifier": "linear-mt-attn-ck" if student else "linear-attn-ck"},
        "datasets": ["jamendo", "emomusic", "pmemo", "deam"] if student else ["deam"],
    })

    class MusicClassifier(pl.LightningModule):
        def __init__(self, cfg):
            super().__init__()
            self.cfg = cfg
            if save_hyperparameters:
                self.save_hyperparameters(cfg)
            self.model = network
            self.teacher_models = {}  # a plain dict in theirs: teachers are never saved with a student
            probas = torch.linspace(0.01, 0.3, 56)  # their probas_train.npy: each tag's share of the tracks
            pos_weight = 1.0 / probas
            weight = 2.0 / (1.0 + pos_weight)
            self.loss_fn_classification = nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="mean", weight=weight)
            self.loss_fn_classification_eval = nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="none",
                                                                    weight=weight)
            self.loss_fn_regression = nn.MSELoss()
            self.loss_kd = nn.KLDivLoss(reduction="batchmean")
            self.trn_loss, self.val_loss = MeanMetric(), MeanMetric()

        def training_step(self, batch, batch_idx):
            x_mert, roots, attrs, key, moods, va = batch
            outputs = self.model(x_mert, roots, attrs, key)
            if len(outputs) == 2:
                loss = self.loss_fn_classification(outputs[0], moods) + self.loss_fn_regression(outputs[1], va)
            elif outputs[0].shape[1] == 56:
                loss = self.loss_fn_classification(outputs[0], moods)
            else:
                loss = self.loss_fn_regression(outputs[0], va)
            self.log("val_loss", loss, on_epoch=True)
            self.log("val_loss_mood", loss, on_epoch=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.cfg.model.lr)

    generator = torch.Generator().manual_seed(0)
    n = 8
    data = torch.utils.data.TensorDataset(
        torch.randn(n, 1536, generator=generator), torch.randint(0, 14, (n, 100), generator=generator),
        torch.randint(0, 14, (n, 100), generator=generator), torch.randint(0, 2, (n, 1), generator=generator),
        torch.randint(0, 2, (n, 56), generator=generator).float(), 1 + 8 * torch.rand(n, 2, generator=generator),
    )
    saved = workdir / f"lightning-{path.stem}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(
            max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=workdir,
            callbacks=[ModelCheckpoint(dirpath=saved, monitor="val_loss_mood", save_top_k=5, mode="min",
                                       filename="mood-{epoch:02d}", save_last=True),
                       EarlyStopping(monitor="val_loss", patience=10, min_delta=0.0001, mode="min")],
        )
        trainer.fit(MusicClassifier(config), torch.utils.data.DataLoader(data, batch_size=4))
    shutil.copy(saved / "last.ckpt", path)
    network.eval()


MERT_V1_STYLE = dict(hidden_size=768, num_hidden_layers=7, num_attention_heads=12, intermediate_size=64,
                     conv_dim=[32] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                     feat_extract_norm="group", conv_bias=False, feat_proj_layer_norm=True, layer_norm_eps=1e-5,
                     mask_time_prob=0.05, vocab_size=32, layerdrop=0.05)


def mert_v1_style_repo(folder: Path, seed: int = 0, state: dict[str, torch.Tensor] | None = None) -> Path:
    """A backbone repo as MERT-v1-95M's is published: `config.json` of MERT's remote code (model_type mert_model,
    saved by transformers 4.24) and `pytorch_model.bin` with the legacy weight-norm keys (`weight_g`, `weight_v`).
    768 wide with 7 layers (Music2Emo pools hidden_states 6 and 7 into 1536 features), but narrow elsewhere. The
    weights are random from `seed`, or `state` (a native `HubertModel` state dict)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = HubertConfig(**MERT_V1_STYLE)
    torch.manual_seed(seed)
    state = dict(state) if state is not None else HubertModel(config).state_dict()
    legacy = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    for new, old in legacy.items():
        key = f"encoder.pos_conv_embed.conv.{new}"
        state[f"encoder.pos_conv_embed.conv.{old}"] = state.pop(key)
    torch.save(state, folder / "pytorch_model.bin")
    mert = {k: v for k, v in config.to_dict().items()
            if k not in ("model_type", "architectures", "transformers_version", "conv_pos_batch_norm", "dtype")}
    mert.update(
        model_type="mert_model", architectures=["MERTModel"], transformers_version="4.24.0", torch_dtype="float32",
        auto_map={"AutoConfig": "configuration_MERT.MERTConfig", "AutoModel": "modeling_MERT.MERTModel"},
        deepnorm=False, attention_relax=-1.0, feature_extractor_cqt=False, feature_extractor_cqt_bins=336,
        sample_rate=24000,
    )
    (folder / "config.json").write_text(json.dumps(mert, indent=2))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": False, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
        "padding_side": "right", "padding_value": 0, "return_attention_mask": True, "sampling_rate": 24000}))
    return folder


def hub_cache_repo(cache: Path, repo_id: str, files: dict[str, Path], commit: str, ref: str = "main") -> Path:
    """Put `files` (name in the repo -> local file) into `cache` as huggingface_hub's cache holds a downloaded repo:
    `models--org--name/blobs/<etag>`, `snapshots/<commit>/<name>` symlinks to the blobs, `refs/<ref>` (a branch or
    tag) naming the commit. A blob is named by its etag: the SHA-256 of an LFS file (weights), the git blob SHA-1 of
    any other."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for name, source in files.items():
        data = Path(source).read_bytes()
        lfs = name.endswith((".bin", ".ckpt", ".pt", ".safetensors"))
        etag = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        blob = repo / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return repo


@contextlib.contextmanager
def serving_hub(cache: Path, unavailable: int = 0, linked_size: bool = True):
    """HTTP servers answering for the repos in the Hub cache `cache` as the Hub's `resolve` endpoint answers
    huggingface_hub (see its `get_hf_file_metadata`): `X-Repo-Commit` on every file; an LFS file's HEAD a 302 to the
    CDN (a second server: another origin, which huggingface_hub does not follow for metadata) with `X-Linked-Etag`
    and `X-Linked-Size`; another file's an ETag; a missing file, revision or repo a 404 with its `X-Error-Code`.
    The first `unavailable` requests for files get a 503, as in a blip; `linked_size=False` leaves the size out, as a
    mirror may. Each repo answers at the branches and tags its `refs` name and at the commits of its snapshots.
    Yields (the Hub's endpoint, the requests for files both servers had: `(method, path)`)."""
    repos = {}  # repo id -> (revision -> commit, its snapshots folder)
    for repo in cache.glob("models--*"):
        revisions = {ref.name: ref.read_text() for ref in (repo / "refs").iterdir()}
        revisions.update({snapshot.name: snapshot.name for snapshot in (repo / "snapshots").iterdir()})
        repos[repo.name[len("models--"):].replace("--", "/")] = (revisions, repo / "snapshots")
    blobs = {blob.name: blob for blob in cache.glob("models--*/blobs/*")}
    requests = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.answer(send_body=False)

        def do_GET(self):
            self.answer(send_body=True)

        def log_message(self, *args):
            pass

        def answer(self, send_body: bool):
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            if path.startswith("/api/"):  # huggingface_hub's other calls (its agent detection): not served here
                return self.send_error(404)
            requests.append((self.command, path))
            if len(requests) <= unavailable:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                return self.end_headers()
            if self.server is cdn:
                return self.send_file(blobs[path.strip("/")], {}, send_body)
            org, name, resolve, revision, *inside = path.strip("/").split("/") + [""] * 4
            revisions, snapshots = repos.get(f"{org}/{name}", (None, None))
            if revisions is None or resolve != "resolve":
                return self.refuse("RepoNotFound", "Repository not found")
            if revision not in revisions:
                return self.refuse("RevisionNotFound", f"Invalid rev id: {revision}")
            commit = revisions[revision]
            link = snapshots.joinpath(commit, *inside)
            if not link.is_file():
                return self.refuse("EntryNotFound", "Entry not found")
            blob = link.resolve()
            headers = {"X-Repo-Commit": commit}
            if link.name.endswith((".bin", ".ckpt", ".pt", ".safetensors")):  # LFS, as hub_cache_repo names it
                headers.update({"Location": f"http://127.0.0.1:{cdn.server_address[1]}/{blob.name}",
                                "X-Linked-Etag": f'"{blob.name}"',
                                "ETag": '"' + hashlib.sha1(blob.name.encode()).hexdigest() + '"',
                                "Content-Length": "0"})
                if linked_size:
                    headers["X-Linked-Size"] = str(blob.stat().st_size)
                self.send_response(302)
                for header, value in headers.items():
                    self.send_header(header, value)
                return self.end_headers()
            self.send_file(blob, {**headers, "ETag": f'"{blob.name}"'}, send_body)

        def send_file(self, blob: Path, headers: dict, send_body: bool):
            data = blob.read_bytes()
            self.send_response(200)
            for header, value in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(header, value)
            self.end_headers()
            if send_body:
                self.wfile.write(data)

        def refuse(self, code: str, message: str):
            self.send_response(404)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Length", "0")
            self.end_headers()

    hub, cdn = (http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub) for _ in range(2))
    for server in (hub, cdn):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{hub.server_address[1]}", requests
    finally:
        for server in (hub, cdn):
            server.shutdown()
            server.server_close()
