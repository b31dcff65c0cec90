"""ssvae_core: semi-supervised learning with deep generative models (Kingma et al., 2014).

Everything the app and the CLI need: data, models (M1, M2, M1+M2, a supervised baseline),
objectives, training, checkpoints and generation. Nothing here imports Streamlit.
"""

from ssvae_core.errors import CheckpointError, DataError, TrainingError

__all__ = ["CheckpointError", "DataError", "TrainingError"]
__version__ = "0.1.0"
