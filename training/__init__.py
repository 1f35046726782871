"""Offline training: data loaders, pretraining and fine-tuning loops, evaluation; writes bundles/ formats."""
