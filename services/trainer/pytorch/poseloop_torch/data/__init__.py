"""The data loader of the PyTorch engine: the same training batches as libs/data's TopDownBatchBuilder."""
