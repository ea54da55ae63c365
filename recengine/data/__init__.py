"""Data: MovieLens loaders, the Dataset container, splits, sequences and the synthetic generator."""

from recengine.data.dataset import Dataset, IdMap, display_title, parse_title

__all__ = ["Dataset", "IdMap", "display_title", "parse_title"]
from recengine.data.movielens import (  # noqa: E402
    DatasetInfo,
    DatasetNotFoundError,
    available_datasets,
    dataset_names,
    download_dataset,
    find_dataset,
    load_dataset,
    load_movielens,
)

__all__ += [
    "DatasetInfo",
    "DatasetNotFoundError",
    "available_datasets",
    "dataset_names",
    "download_dataset",
    "find_dataset",
    "load_dataset",
    "load_movielens",
]
