"""Data sets held in memory (no DataLoader, no download): toys, mixtures with an exact oracle, digits, your
arrays and image folders; `class_mixture` holds classes that are groups of components.
"""

from .class_mixture import (
    ClassMixtureData,
)
from .datasets import (
    IMAGE_SUFFIXES,
    Checkerboard,
    Digits,
    EightGaussians,
    ImageFolder,
    MixtureData,
    MixtureSet,
    Moons,
    Scaler,
    SwissRoll,
    TensorFile,
)

__all__ = [
    "Checkerboard",
    "ClassMixtureData",
    "Digits",
    "EightGaussians",
    "IMAGE_SUFFIXES",
    "ImageFolder",
    "MixtureData",
    "MixtureSet",
    "Moons",
    "Scaler",
    "SwissRoll",
    "TensorFile",
]
