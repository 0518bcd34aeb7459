"""Datasets, label schema, cross-validation folds, face alignment and the synthetic atlas."""
from synth.data.dataset import (  # noqa: F401
    DatasetError,
    ImageSet,
    Record,
    open_dataset,
    write_labels_csv,
)
from synth.data.torch_dataset import BalancedSampler, TorchImageDataset, balanced_weights  # noqa: F401
from synth.data.folds import make_folds, read_folds, write_folds  # noqa: F401
