"""music2emo-hf: music emotion recognition (mood tags and valence/arousal), Hugging Face-native.

Importing the package registers the `music-emotion` pipeline task and the Auto classes, so
`transformers.pipeline("music-emotion", model=...)` and `AutoModel.from_pretrained(...)` work.
"""

from collections.abc import Mapping

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_music2emo import Music2EmoConfig
from .feature_extraction_music2emo import Music2EmoFeatureExtractor
from .modeling_music2emo import Music2EmoModel, Music2EmoOutput, UntrainedModelWarning
from .pipeline_music2emo import MusicEmotionPipeline
from .released import RELEASED_REPO, resolve_model

__version__ = "0.1.0"

# The model the CLI, the pipeline and the Space use when none is named: the authors' released J_all checkpoint,
# downloaded and converted on first use (see `released`), until this project publishes its own.
DEFAULT_MODEL_ID = RELEASED_REPO
# Where `music2emo push` publishes the faithful variant (hub_configs/music2emo-mert95m); not published yet.
PUBLISHED_MODEL_ID = "music2emo-hf/music2emo-mert95m"
REMOTE_CODE_TASK = "music-emotion-remote-code"


class _ReleasedDefault(Mapping):
    """The task's default for `transformers.pipeline("music-emotion")` with no model: `(folder, None)` of the
    converted DEFAULT_MODEL_ID, fetched and converted when a pipeline first asks for it, never at import."""

    def __getitem__(self, key):
        if key != "model":
            raise KeyError(key)
        return resolve_model(DEFAULT_MODEL_ID), None

    def __contains__(self, key):
        return key == "model"

    def __iter__(self):
        return iter(("model",))

    def __len__(self):
        return 1


AutoConfig.register(Music2EmoConfig.model_type, Music2EmoConfig, exist_ok=True)
AutoModel.register(Music2EmoConfig, Music2EmoModel, exist_ok=True)
AutoFeatureExtractor.register(Music2EmoConfig, Music2EmoFeatureExtractor, exist_ok=True)
AutoProcessor.register(Music2EmoConfig, Music2EmoFeatureExtractor, exist_ok=True)  # its processor: nothing else to ask
# The task is registered twice. "music-emotion" is what users ask for with this package installed. A saved model records
# the task of the pipeline's last registration in `custom_pipelines`, and transformers demands trust_remote_code for any
# task named there, so that record gets its own name: `pipeline(model=dir, trust_remote_code=True)` (no task named)
# runs the saved code where the package is absent, and `pipeline("music-emotion", model=dir)` runs ours without it.
PIPELINE_REGISTRY.register_pipeline(
    "music-emotion", pipeline_class=MusicEmotionPipeline, pt_model=AutoModel, default=_ReleasedDefault(), type="audio"
)
PIPELINE_REGISTRY.register_pipeline(
    REMOTE_CODE_TASK, pipeline_class=MusicEmotionPipeline, pt_model=AutoModel, type="audio"
)
# Saved models carry `auto_map` and their code, so they also load with trust_remote_code where this package is absent.
Music2EmoConfig.register_for_auto_class()
Music2EmoModel.register_for_auto_class("AutoModel")
Music2EmoFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

__all__ = [
    "DEFAULT_MODEL_ID",
    "Music2EmoConfig",
    "Music2EmoFeatureExtractor",
    "Music2EmoModel",
    "Music2EmoOutput",
    "MusicEmotionPipeline",
    "PUBLISHED_MODEL_ID",
    "UntrainedModelWarning",
    "__version__",
    "resolve_model",
]
