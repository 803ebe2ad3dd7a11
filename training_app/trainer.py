"""The fine-tuning engine's public entry points, kept at their old address.

The engine lives in the package `training_app.engine` (config, data, loop, checkpoints,
reports, modeling, device, artifacts, probe); new code should import from there. Importing this
module imports torch.
"""

from training_app.engine.artifacts import (  # noqa: F401
    evaluate_artifact,
    load_artifact,
    predict_logits,
)
from training_app.engine.checkpoints import (  # noqa: F401
    ARTIFACT_ADAPTER_DIR,
    CHECKPOINT_FORMAT,
    CHECKPOINT_PREFIX,
)
from training_app.engine.config import (  # noqa: F401
    DEFAULT_LEARNING_RATES,
    DEVICES,
    LOWER_IS_BETTER,
    METHODS,
    METRICS_BY_TASK,
    OPTIMIZERS,
    PRECISIONS,
    PREFIX_VIRTUAL_TOKENS,
    SCHEDULERS,
    TASKS,
    Callbacks,
    TrainingConfig,
    TrainingData,
    TrainingError,
    TrainingResult,
)
from training_app.engine.device import (  # noqa: F401
    device_description,
)
from training_app.engine.loop import (  # noqa: F401
    train,
)
from training_app.engine.probe import (  # noqa: F401
    PROBE_LENGTHS,
    PROBE_MAX_BATCH_SIZE,
    PROBE_STEPS,
    calibrate,
    estimate,
)
