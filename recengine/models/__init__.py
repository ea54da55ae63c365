"""Model families. Importing this package registers every built-in family with the registry."""

from recengine.models.base import Recommender, create_model, get_model_class, model_names, register

__all__ = ["Recommender", "create_model", "get_model_class", "model_names", "register"]

from recengine.models import mf  # noqa: F401,E402  (registers "mf")
from recengine.models import neural  # noqa: F401,E402
from recengine.models import als  # noqa: F401,E402  (registers "als")
from recengine.models import sequence  # noqa: F401
