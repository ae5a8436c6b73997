"""teacherstudent: a teacher-student training-dynamics simulator for deep ReLU networks."""

__version__ = "0.2.0"

from .config import ExperimentConfig, load_config  # noqa: E402
from .errors import UserError  # noqa: E402
from .simulate import run_experiment  # noqa: E402
from .store import load_runs  # noqa: E402

__all__ = ["ExperimentConfig", "UserError", "load_config", "load_runs", "run_experiment", "__version__"]
