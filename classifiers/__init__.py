"""Image classifiers: models, training, cross-validation, metrics and attribution."""
