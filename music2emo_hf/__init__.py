"""music2emo-hf: music emotion recognition (mood tags and valence/arousal), Hugging Face-native.

Importing the package registers the `music-emotion` pipeline task and the Auto classes, so
`transformers.pipeline("music-emotion", model=...)` and `AutoModel.from_pretrained(...)` work.
"""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_music2emo import Music2EmoConfig
from .feature_extraction_music2emo import Music2EmoFeatureExtractor
from .modeling_music2emo import Music2EmoModel, Music2EmoOutput, UntrainedModelWarning
from .pipeline_music2emo import MusicEmotionPipeline

__version__ = "0.1.0"

# The published model the CLI and the pipeline use when no model is named (hub_configs/music2emo-mert95m).
DEFAULT_MODEL_ID = "music2emo-hf/music2emo-mert95m"
REMOTE_CODE_TASK = "music-emotion-remote-code"

AutoConfig.register(Music2EmoConfig.model_type, Music2EmoConfig, exist_ok=True)
AutoModel.register(Music2EmoConfig, Music2EmoModel, exist_ok=True)
AutoFeatureExtractor.register(Music2EmoConfig, Music2EmoFeatureExtractor, exist_ok=True)
# The task is registered twice. "music-emotion" is what users ask for with this package installed. A saved model records
# the task of the pipeline's last registration in `custom_pipelines`, and transformers demands trust_remote_code for any
# task named there, so that record gets its own name: `pipeline(model=dir, trust_remote_code=True)` (no task named)
# runs the saved code where the package is absent, and `pipeline("music-emotion", model=dir)` runs ours without it.
PIPELINE_REGISTRY.register_pipeline("music-emotion", pipeline_class=MusicEmotionPipeline, pt_model=AutoModel, type="audio")
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
    "UntrainedModelWarning",
    "__version__",
]
