"""Offline training: data loaders, featurizers, pretraining and fine-tuning loops, evaluation, bundles."""
