"""PyTorch model code: math only, no I/O (training/ has the loops and data, bundles/ the formats)."""
