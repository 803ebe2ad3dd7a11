from datetime import timedelta

from django.conf import settings
from django.db import models

from lepton_web.jobs import Job, JobStatus


class TrainingRun(Job):
    """One fine-tuning run: a snapshot, a base model, a task, a method and hyperparameters."""

    task_name = "training_app.tasks.training_run_execute_task"
    access_resource = "training_run"
    max_attempts = 3
    verbose_kind = "training run"

    class Task(models.TextChoices):
        SINGLE_LABEL = "single_label", "Single-label classification"
        MULTI_LABEL = "multi_label", "Multi-label classification"
        REGRESSION = "regression", "Regression"

    class Method(models.TextChoices):
        FULL = "full", "Full fine-tuning"
        LORA = "lora", "LoRA"
        ADALORA = "adalora", "AdaLoRA"
        PREFIX = "prefix", "Prefix tuning"
        IA3 = "ia3", "(IA)3"

    name = models.CharField(max_length=200)
    snapshot = models.ForeignKey(
        "datasets_app.Snapshot", on_delete=models.PROTECT, related_name="training_runs"
    )
    base_model = models.ForeignKey(
        "models_app.BaseModel", on_delete=models.PROTECT, related_name="training_runs"
    )
    # Fine-tune from this registered version's weights instead of the base model's (the base
    # model stays the catalogue entry it came from). Null: start from the base model.
    start_version = models.ForeignKey(
        "models_app.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    task = models.CharField(max_length=20, choices=Task.choices)
    method = models.CharField(max_length=20, choices=Method.choices)
    params = models.JSONField(default=dict, help_text="The training config as requested.")
    # What the engine trains with: the method's learning rate for an empty one, the model's own
    # dropout, the device and precision "auto" chose, the clamped max length. Set at creation
    # from the config, then overwritten by the engine when it starts (issue 9, item 12).
    resolved_params = models.JSONField(default=dict, blank=True)
    estimate = models.JSONField(default=dict, blank=True)
    label_names = models.JSONField(default=list, blank=True)
    total_steps = models.PositiveIntegerField(default=0)
    steps_done = models.PositiveIntegerField(default=0)
    examples_per_second = models.FloatField(null=True, blank=True)
    seconds_left = models.FloatField(null=True, blank=True)
    batch_size_used = models.PositiveIntegerField(null=True, blank=True)
    best_step = models.PositiveIntegerField(null=True, blank=True)
    best_metrics = models.JSONField(default=dict, blank=True)
    test_metrics = models.JSONField(default=dict, blank=True)
    test_report = models.JSONField(default=dict, blank=True)
    worst_examples = models.JSONField(default=list, blank=True)
    stopped_early = models.BooleanField(default=False)
    # The step of the newest checkpoint kept for resuming; cleared once it is removed (after a
    # success at once, after a failure or cancel when TRAINING_CHECKPOINT_RETENTION_HOURS pass).
    checkpoint_step = models.PositiveIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="training_runs"
    )
    # A trial of a hyperparameter search (training_app/search/); null for a plain run.
    search = models.ForeignKey(
        "training_app.HyperparameterSearch",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="trials",
    )
    trial_number = models.PositiveIntegerField(null=True, blank=True)
    trial_params = models.JSONField(default=dict, blank=True)  # what optuna suggested
    # Stopped by the search's pruner (its status is then "cancelled"; pages say "Pruned").
    trial_pruned = models.BooleanField(default=False)

    class Meta(Job.Meta):
        ordering = ["-created_at"]
        constraints = [
            *Job.Meta.constraints,
            models.UniqueConstraint(
                fields=["search", "trial_number"],
                condition=models.Q(search__isnull=False),
                name="training_run_trial_number_unique",
            ),
        ]

    def __str__(self) -> str:
        return self.name or f"Run #{self.pk}"

    def task_queue(self) -> str:
        return "gpu"

    def abandoned_note(self) -> str:
        if self.checkpoint_step:
            return (
                f"Its checkpoint at step {self.checkpoint_step:,} is kept: press Resume on the "
                "run page to continue from there."
            )
        return "It saved no checkpoint yet: Resume on the run page starts it again."

    def checkpoint_removed_at(self):
        """When the checkpoint kept for Resume is removed (``training_checkpoints_expire``);
        None when no checkpoint is kept."""
        if not self.checkpoint_step or self.finished_at is None:
            return None
        if self.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            return None
        return self.finished_at + timedelta(hours=settings.TRAINING_CHECKPOINT_RETENTION_HOURS)


class TrainingMetric(models.Model):
    """One scalar at one step: training loss, or a validation/test metric. Reruns overwrite."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    epoch = models.FloatField(default=0)
    name = models.CharField(max_length=60)
    value = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "step", "name"]
        constraints = [
            models.UniqueConstraint(fields=["run", "step", "name"], name="training_metric_unique")
        ]

    def __str__(self) -> str:
        return f"{self.run_id}@{self.step} {self.name}={self.value:.4g}"


class TrainingEvent(models.Model):
    """The run's log: started, evaluated, checkpoint saved, resumed, early-stopped, ..."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=40)
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "created_at", "id"]

    def __str__(self) -> str:
        return f"{self.kind}: {self.message[:60]}"


class Evaluation(Job):
    """Evaluate a model version on a split of any snapshot (runs on the gpu queue)."""

    task_name = "training_app.tasks.evaluation_execute_task"
    access_resource = "training_run"
    verbose_kind = "evaluation"

    model_version = models.ForeignKey(
        "models_app.ModelVersion", on_delete=models.CASCADE, related_name="evaluations"
    )
    snapshot = models.ForeignKey(
        "datasets_app.Snapshot", on_delete=models.CASCADE, related_name="evaluations"
    )
    split = models.CharField(max_length=16, default="test")
    metrics = models.JSONField(default=dict, blank=True)
    # Not "report": Job.report() is the progress method every job has.
    evaluation_report = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="evaluations"
    )

    class Meta(Job.Meta):
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Evaluation of {self.model_version} on {self.split}"

    def task_queue(self) -> str:
        return "gpu"


class TrainingCalibration(models.Model):
    """How fast one base model trains with one method on one kind of device, measured on a
    worker by a short probe the first time such a run starts (``engine.calibrate``), and the
    ratio of actual to estimated time of the runs since. Estimates come from it."""

    base_model = models.ForeignKey(
        "models_app.BaseModel", on_delete=models.CASCADE, related_name="training_calibrations"
    )
    method = models.CharField(max_length=20)
    device = models.CharField(max_length=10)  # "cpu" | "cuda"
    device_name = models.CharField(max_length=200, blank=True)
    measurements = models.JSONField(default=dict)
    chars_per_token = models.FloatField(null=True, blank=True)
    run_ratios = models.JSONField(default=list, blank=True)  # actual / estimated, latest last
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["base_model", "method", "device"], name="training_calibration_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.base_model_id} {self.method} on {self.device_name or self.device}"


class HyperparameterSearch(models.Model):
    """A search over hyperparameters: optuna asks for trials, each a TrainingRun on the gpu queue.

    No optuna storage: the study is rebuilt from the trial rows whenever it is needed."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        # The trials are done and the best was chosen; its model version is being registered.
        # SUCCEEDED only once that version exists (training_app/search/registration.py).
        REGISTERING = "registering", "Registering"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    name = models.CharField(max_length=200)
    snapshot = models.ForeignKey(
        "datasets_app.Snapshot", on_delete=models.PROTECT, related_name="hyperparameter_searches"
    )
    base_model = models.ForeignKey(
        "models_app.BaseModel", on_delete=models.PROTECT, related_name="hyperparameter_searches"
    )
    task = models.CharField(max_length=20, choices=TrainingRun.Task.choices)
    space = models.JSONField(help_text="Ranges and choices searched (see search.DEFAULT_SPACE).")
    fixed_params = models.JSONField(default=dict, blank=True)
    metric = models.CharField(max_length=40)  # a validation metric; direction from the metric
    max_trials = models.PositiveIntegerField(null=True, blank=True)
    max_minutes = models.PositiveIntegerField(null=True, blank=True)
    parallel_trials = models.PositiveSmallIntegerField(default=1)
    seed = models.PositiveIntegerField(default=0)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.RUNNING, db_index=True
    )
    message = models.CharField(max_length=500, blank=True)
    best_trial = models.ForeignKey(
        TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,
        related_name="hyperparameter_searches",
    )
    # Who registers the best trial's model: set when a worker takes that step (a claim that
    # goes stale when the worker dies, so beat takes it over), cleared when an attempt fails.
    registration_claimed_at = models.DateTimeField(null=True, blank=True)
    registration_attempts = models.PositiveSmallIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(max_trials__isnull=False) | models.Q(max_minutes__isnull=False),
                name="search_has_a_budget",
            ),
            models.CheckConstraint(
                condition=models.Q(parallel_trials__gte=1), name="search_parallel_trials_gte_1"
            ),
        ]

    def __str__(self) -> str:
        return self.name or f"Search #{self.pk}"

    @property
    def is_finished(self) -> bool:
        """Nothing more happens to it: a REGISTERING search is not finished yet."""
        return self.status in self.FINISHED_STATUSES

    @property
    def is_running(self) -> bool:
        """Still starting or waiting for trials (and so still cancellable)."""
        return self.status == self.Status.RUNNING


class RetrainLoop(models.Model):
    """Retrain on new labels: snapshot the dataset, fine-tune from the current version on the
    gpu queue, register the new version, pre-label the unlabeled records with it.

    A small state machine advanced by each job's completion (``training_app/retrain.py``); every
    step is idempotent, so a lost worker or message only delays it."""

    class Step(models.TextChoices):
        QUEUED = "queued", "Waiting to snapshot"
        TRAINING = "training", "Fine-tuning"
        PREDICTING = "predicting", "Pre-labeling the unlabeled records"
        SUCCEEDED = "succeeded", "Done"
        FAILED = "failed", "Failed"

    ACTIVE_STEPS = (Step.QUEUED, Step.TRAINING, Step.PREDICTING)

    dataset = models.ForeignKey(
        "datasets_app.Dataset", on_delete=models.CASCADE, related_name="retrain_loops"
    )
    from_version = models.ForeignKey(
        "models_app.ModelVersion", null=True, on_delete=models.SET_NULL, related_name="+"
    )
    snapshot = models.ForeignKey(
        "datasets_app.Snapshot", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    training_run = models.ForeignKey(
        TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    new_version = models.ForeignKey(
        "models_app.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    batch_prediction = models.ForeignKey(
        "models_app.BatchPrediction",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    step = models.CharField(max_length=16, choices=Step.choices, default=Step.QUEUED)
    message = models.CharField(max_length=500, blank=True)
    error_message = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["dataset"],
                condition=models.Q(step__in=["queued", "training", "predicting"]),
                name="retrain_loop_one_active_per_dataset",
            )
        ]

    def __str__(self) -> str:
        return f"Retrain loop {self.pk} of dataset {self.dataset_id} ({self.step})"

    @property
    def is_active(self) -> bool:
        return self.step in self.ACTIVE_STEPS
