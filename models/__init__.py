"""PyTorch model code: math only, no I/O (see training/ for loops, data and bundles)."""
