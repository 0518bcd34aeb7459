"""Datasets, label schema, cross-validation folds, face alignment and the synthetic atlas."""
from synth.data.dataset import (  # noqa: F401
    BalancedSampler,
    DatasetError,
    ImageSet,
    Record,
    TorchImageDataset,
    balanced_weights,
    open_dataset,
    write_labels_csv,
)
from synth.data.folds import make_folds, read_folds, write_folds  # noqa: F401
