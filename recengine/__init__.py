"""recengine: MovieLens data, recommender models, evaluation and the store behind the app.

The public API is re-exported here; see ARCHITECTURE in the README for the flow
data -> split -> model.fit -> store -> app.
"""

__version__ = "0.1.0"

from recengine.data.dataset import Dataset, IdMap  # noqa: E402
from recengine.models.base import (  # noqa: E402
    ArtefactError,
    EpochEvent,
    NotFittedError,
    Recommender,
    TrainingError,
    create_model,
    get_model_class,
    model_names,
    resolve_device,
)

__all__ = [
    "ArtefactError",
    "Dataset",
    "EpochEvent",
    "IdMap",
    "NotFittedError",
    "Recommender",
    "TrainingError",
    "__version__",
    "create_model",
    "get_model_class",
    "model_names",
    "resolve_device",
]
from recengine.profiles import ProfileData, ProfileError, ProfileInfo, ProfileStore  # noqa: E402

__all__ += ["ProfileData", "ProfileError", "ProfileInfo", "ProfileStore"]
