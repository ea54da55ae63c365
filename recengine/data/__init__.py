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
from recengine.data.splits import (  # noqa: E402
    SPLIT_NAMES,
    Split,
    available_splits,
    make_split,
    split_by_user,
    split_fold,
    split_leave_last_out,
    split_random,
    split_validation,
)
from recengine.data.synthetic import checkerboard, generate_synthetic  # noqa: E402

__all__ += [
    "SPLIT_NAMES",
    "Split",
    "available_splits",
    "checkerboard",
    "generate_synthetic",
    "make_split",
    "split_by_user",
    "split_fold",
    "split_leave_last_out",
    "split_random",
    "split_validation",
]
from recengine.data.sequences import (  # noqa: E402
    PAD,
    from_token,
    last_window,
    last_windows,
    n_tokens,
    to_token,
    user_sequences,
    windows,
)

__all__ += ["PAD", "from_token", "last_window", "last_windows", "n_tokens", "to_token", "user_sequences", "windows"]
from recengine.data.upload import (  # noqa: E402
    ParsedUpload,
    UploadError,
    UploadInfo,
    UploadLimits,
    UploadReport,
    delete_upload,
    import_upload,
    list_uploads,
    load_upload,
    parse_upload,
    save_upload,
)

__all__ += [
    "ParsedUpload",
    "UploadError",
    "UploadInfo",
    "UploadLimits",
    "UploadReport",
    "delete_upload",
    "import_upload",
    "list_uploads",
    "load_upload",
    "parse_upload",
    "save_upload",
]
