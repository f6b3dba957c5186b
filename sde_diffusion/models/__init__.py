"""Score networks: a time-conditioned MLP, a small U-Net, and the ScoreModel wrapper that makes a score."""

from .label_embedding import LabelEmbedding
from .mlp import MLP
from .score_model import ScoreModel
from .time_embedding import GaussianFourierFeatures, SinusoidalFeatures
from .unet import UNet

__all__ = ["MLP", "GaussianFourierFeatures", "LabelEmbedding", "ScoreModel", "SinusoidalFeatures", "UNet"]
