"""Every option of the trainer, declared once: one dataclass per concern, its `help` the documentation.

The single source of the flags, the env vars (the upper-case flag name), the YAML keys, `--help`, the
option docs and the chart's values (tests compare them). No torch here: a bad value fails in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trainer.config.build import BuildArgs
from trainer.config.data import DataArgs
from trainer.config.declare import MIN_AUDIO_SECONDS, PathStr, Tristate, ValueKind, opt  # noqa: F401  (re-exported)
from trainer.config.generation import GenerationArgs, QualityArgs, SampleArgs, SynthesisArgs
from trainer.errors import ConfigError


@dataclass
class ModelArgs:
    """Where the model comes from and which of its parts train."""

    model_path: PathStr | None = opt(
        None,
        "Directory of a transformers-format Higgs Audio v2 checkpoint (config.json with model_type "
        "higgs_audio_v2, safetensors weights, tokenizer and chat template).",
        required=True,
    )
    audio_tokenizer_path: PathStr | None = opt(
        None,
        "Directory of a transformers-format Higgs Audio v2 audio tokenizer (model_type higgs_audio_v2_tokenizer).",
        required=True,
    )
    tokenizer_path: PathStr | None = opt(
        None, "Directory of the text tokenizer and chat template; defaults to model_path."
    )
    use_text_head: bool = opt(
        False,
        "Build the model with its text head and add the text loss (on the target turns' closing tokens).",
    )
    text_loss_weight: float = opt(1.0, "Weight of the text loss in the total loss.", minimum=0.0)
    freeze_llm: bool = opt(
        False,
        "Full fine-tuning only: freeze the text path (token embeddings, attention, text FFNs, norms, text "
        "head) and train the audio path (audio FFNs, audio embeddings, audio head).",
    )
    freeze_text_embeddings: bool = opt(
        False, "Full fine-tuning only: freeze the text token embedding matrix."
    )
    freeze_audio_tower: bool = opt(
        False,
        "Accepted for old launch scripts. Higgs Audio v2 (generation variant) has no audio encoder, so "
        "there is nothing to freeze; a warning says so.",
    )
    freeze_audio_encoder_proj: bool = opt(
        False, "Accepted for old launch scripts; like freeze_audio_tower it has nothing to act on."
    )
    gradient_checkpointing: bool = opt(
        False, "Recompute activations in the backward pass: less memory, about 30% more compute."
    )
    precomputed_routing: bool = opt(
        True,
        "Split audio and text tokens once per forward and give every decoder layer the index tensors "
        "(outputs equal to transformers' layer; one device synchronisation per forward instead of 18 per layer, "
        "and no torch.compile graph breaks in a layer); false keeps transformers' boolean-mask routing.",
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = opt(
        "sdpa",
        "Attention kernel.",
    )
    bf16: Tristate = opt(
        "auto",
        "Train in bfloat16 mixed precision: auto (on GPU yes, on CPU no), true or false.",
    )


@dataclass
class LoraArgs:
    """Low-rank adapters (peft) instead of full fine-tuning."""

    use_lora: bool = opt(False, "Train LoRA adapters and keep every base weight frozen.")
    lora_rank: int = opt(16, "LoRA rank r.", minimum=1)
    lora_alpha: float = opt(32.0, "LoRA scaling alpha (the update is scaled by alpha / r).", minimum=0.0,
                            exclusive_min=True)
    lora_dropout: float = opt(0.05, "Dropout on the LoRA input.", minimum=0.0, maximum=0.999)
    lora_target_modules: list[str] = opt(
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        "Comma-separated module names to adapt, or one regular expression prefixed with 're:' "
        "(for example 're:.*audio_mlp\\.(gate|up|down)_proj' for the audio FFNs only).",
    )
    lora_modules_to_save: list[Literal["audio_head", "audio_embedding"]] = opt(
        [],
        "Comma-separated extra modules trained in full and saved with the adapter: audio_head, "
        "audio_embedding.",
    )


@dataclass
class TrainArgs:
    """The optimisation schedule, evaluation, checkpoints and resumption."""

    output_dir: PathStr | None = opt(
        None,
        "Where checkpoints (checkpoint-N/) and the final adapter (lora_adapters/) are written; synthesize "
        "--input writes its clips here.",
        required=True,
    )
    num_train_epochs: float = opt(3.0, "Epochs to train (ignored when max_steps > 0).", minimum=0.0,
                                  exclusive_min=True)
    max_steps: int = opt(-1, "Optimizer steps to train; -1 means num_train_epochs decides.", minimum=-1)
    per_device_train_batch_size: int = opt(1, "Samples per rank per micro-batch (ignored when max_tokens_per_batch "
                                           "is set).", minimum=1)
    max_tokens_per_batch: int = opt(
        0,
        "Token budget of a micro-batch: length-grouped samples fill each one up to this many padded tokens "
        "(longest sample x count), so short clips make large batches and long clips small ones; a sample "
        "longer than the budget stops the run before training. 0: a fixed per_device_train_batch_size "
        "(docs/training.md).",
        minimum=0,
    )
    per_device_eval_batch_size: int = opt(1, "Samples per rank per evaluation batch.", minimum=1)
    gradient_accumulation_steps: int = opt(1, "Micro-batches per optimizer step.", minimum=1)
    learning_rate: float = opt(1e-4, "Peak learning rate.", minimum=0.0, exclusive_min=True)
    weight_decay: float = opt(0.0, "AdamW weight decay.", minimum=0.0)
    warmup_steps: int = opt(
        -1,
        "Linear warm-up steps; -1 means warmup_ratio of the run decides, 0 means none. Not shorter than the "
        "run is an error: the learning rate would never leave the warm-up ramp.",
        minimum=-1,
    )
    warmup_ratio: float = opt(
        0.05,
        "Linear warm-up as a fraction of the run's optimizer steps, where warmup_steps is -1 (so a short run "
        "still reaches its learning rate).",
        minimum=0.0,
        maximum=0.5,
    )
    lr_scheduler_type: Literal["cosine", "linear", "constant", "constant_with_warmup"] = opt(
        "cosine", "Learning-rate schedule after warm-up.",
    )
    max_grad_norm: float = opt(1.0, "Gradient clipping norm (0 disables clipping).", minimum=0.0)
    logging_steps: int = opt(10, "Log losses every N optimizer steps.", minimum=1)
    save_steps: int = opt(500, "Save a checkpoint every N optimizer steps.", minimum=1)
    eval_steps: int = opt(500, "Evaluate every N optimizer steps.", minimum=1)
    save_total_limit: int = opt(3, "Keep at most N checkpoints (oldest removed first); 0 keeps all.",
                                minimum=0)
    async_save: bool = opt(
        True,
        "LoRA runs: training waits only while a checkpoint's adapter is written; its optimizer and scheduler "
        "state (twice the adapter's size) are copied to host memory and written on a background thread, and "
        "the checkpoint counts as complete once that is done. Full fine-tuning writes the model and optimizer "
        "state while training waits, and only the flush to stable storage and the completeness marker go to "
        "the thread. The next save, the end of training and a signal stop wait for it. false: save "
        "synchronously, the flush included.",
    )
    fsdp: bool = opt(
        False,
        "Shard weights, gradients and optimizer state over the ranks (PyTorch FSDP2 through the Trainer: full "
        "shard, one unit per decoder layer) instead of replicating them (DDP), so that full fine-tuning fits a "
        "GPU's memory. Checkpoints hold the full, gathered state and resume on any number of processes; saves "
        "are synchronous (async_save does not apply). See docs/training.md.",
    )
    fsdp_cpu_offload: bool = opt(
        False,
        "With fsdp on GPUs: keep the sharded weights, gradients and optimizer state in host memory and move "
        "each layer to the GPU only for its forward and backward (less GPU memory, slower steps).",
    )
    fsdp_reduce_dtype: Literal["float32", "bfloat16"] = opt(
        "float32",
        "With fsdp and bf16: the precision in which gradients are reduce-scattered across ranks (compute is "
        "bfloat16, the sharded masters stay float32). float32 sums as DDP does; bfloat16 halves the traffic.",
    )
    load_best_model_at_end: bool = opt(
        False, "Reload the checkpoint with the lowest eval_loss at the end (needs save_steps to be a "
        "multiple of eval_steps).",
    )
    disable_eval: bool = opt(False, "Run no evaluation at all and build no evaluation set.")
    seed: int = opt(42, "Seed of model initialisation, dropout and data order; of sampling in synthesize.")
    report_to: str = opt(
        "none", "Comma-separated Trainer integrations to log to (none, tensorboard, wandb, ...).",
    )
    resume: str = opt(
        "auto",
        "auto: continue from the newest complete checkpoint in output_dir; never: start fresh, refused "
        "(configuration error) while output_dir holds complete checkpoints; or the path of a checkpoint directory.",
    )
    save_on_signal: bool = opt(
        True,
        "On SIGTERM or SIGINT (preemption, eviction, docker stop) every rank stops at the next step end and a "
        "checkpoint is saved there; false: stop there without saving one (a checkpoint due at that step by "
        "--save_steps is still written).",
    )
    signal_save_timeout_seconds: float = opt(
        100.0,
        "Seconds from SIGTERM/SIGINT within which the current step and the checkpoint must be done; past that "
        "the process exits with 128 + the signal number, and the cut-short checkpoint is ignored on restart. "
        "0: no bound. Keep it below the pod's terminationGracePeriodSeconds (the chart derives it from that).",
        minimum=0.0,
    )
    ddp_timeout: int = opt(
        1800,
        "Seconds a rank waits for the others (a collective, a barrier) before it gives up and the run ends with "
        "exit code 160. While the ranks wait for the audio encoding before training, only time without "
        "progress counts, so a first run over hours of audio is not cut short. Also the longest a rank that "
        "fails waits for rank 0 to finish writing a checkpoint before it exits.",
        minimum=1,
    )
    nan_policy: Literal["stop", "skip"] = opt(
        "stop",
        "What a NaN or infinite training loss does: stop (exit code 4 before the weights change; nothing new is "
        "saved, the newest complete checkpoint stays the resume point) or skip (that optimizer step leaves the "
        "weights alone and is counted in the nan_steps_skipped log key).",
    )
    run_name: str | None = opt(None, "Name of this run in logs and metrics; defaults to output_dir's name.")
    log_level: Literal["debug", "info", "warning", "error"] = opt("info", "Log level of the trainer.")

    @property
    def evaluates(self) -> bool:
        """Whether the run evaluates at all.

        The one place this is decided (data preparation builds an evaluation set, `TrainingArguments` get a strategy and
        the best-model reload, the Trainer runs it).
        """
        return not self.disable_eval


@dataclass
class MetricsArgs:
    """Prometheus metrics: pushes to a Pushgateway and an optional /metrics endpoint (docs/monitoring.md)."""

    pushgateway_url: str | None = opt(
        None, "Pushgateway base URL (http://host:9091 or https://...); unset: nothing is pushed."
    )
    metrics_namespace: str | None = opt(
        None,
        "Kubernetes namespace of the run, pushed as the `namespace` grouping label so that runs of the same "
        "name in two namespaces stay apart (the chart sets it from the pod's namespace).",
    )
    metrics_port: int = opt(
        0, "Port on which rank 0 serves /metrics for a PodMonitor to scrape; 0: no server.",
        minimum=0, maximum=65535,
    )
    metrics_bind_address: str = opt("0.0.0.0", "Address the /metrics server listens on.")
    metrics_push_interval_seconds: float = opt(
        15.0, "Seconds between two pushes.", minimum=0.0, exclusive_min=True
    )
    metrics_push_timeout_seconds: float = opt(
        5.0, "Timeout of one push request: a slower gateway costs a counted failure, never training time.",
        minimum=0.0, exclusive_min=True,
    )
    metrics_delete_on_finish: bool = opt(
        False,
        "After a successful run, delete its job and rank groups from the Pushgateway (after the final "
        "push) so that finished runs leave no stale series; the last-success timestamp stays, and a "
        "failed run keeps its groups for the alert.",
    )
    pushgateway_username: str | None = opt(None, "Basic-auth user name for the Pushgateway.")
    pushgateway_password: str | None = opt(
        None, "Basic-auth password for the Pushgateway (the chart reads it from a Secret)."
    )
    pushgateway_tls_ca_file: PathStr | None = opt(
        None, "CA bundle (PEM) that signed the Pushgateway's certificate; unset: the system CAs."
    )
    pushgateway_tls_insecure_skip_verify: bool = opt(
        False, "Accept any Pushgateway certificate (encrypts, does not authenticate the gateway)."
    )

    def __post_init__(self) -> None:
        from trainer.config.values import label  # values reads this module's declarations: imported at use

        url = self.pushgateway_url
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{label('pushgateway_url')}: expected http://... or https://..., got {url!r}"
            )
        if bool(self.pushgateway_username) != bool(self.pushgateway_password):
            raise ConfigError(
                "--pushgateway_username and --pushgateway_password (PUSHGATEWAY_USERNAME, "
                "PUSHGATEWAY_PASSWORD) go together: set both for basic auth, or neither"
            )


@dataclass
class ClusterArgs:
    """On Kubernetes: Events on the job object, and the retry budget that bounds restarts (docs/kubernetes.md)."""

    events: bool = opt(
        True,
        "Record Kubernetes Events on the job (started or resumed, checkpoint saved, stopped, failed, "
        "succeeded) with the pod's service account. Best effort: bounded time, a failure is counted and "
        "logged, never stops training. Off outside a cluster (no job_name, or no in-cluster credentials).",
    )
    job_name: str | None = opt(
        None, "Name of the PyTorchJob or TrainJob this run belongs to, the object the Events are about "
        "(the chart sets it); unset: no Events.",
    )
    job_kind: Literal["PyTorchJob", "TrainJob"] = opt(
        "PyTorchJob", "Kind of that job object.",
    )
    job_namespace: str | None = opt(
        None, "Namespace of that job (the chart sets it from the pod's namespace); unset: the service "
        "account's namespace.",
    )
    events_timeout_seconds: float = opt(
        5.0, "Timeout of one request to the Kubernetes API: a slower API server costs a counted failure, "
        "never training time.",
        minimum=0.0, exclusive_min=True,
    )
    retry_budget: int = opt(
        3,
        "Attempts in a row that may end with a retried exit code (128 and above) without saving a new "
        "complete checkpoint; the next attempt then ends at once with exit code 6, which the operator does "
        "not retry. SIGTERM and SIGINT stops (preemption, eviction, deletion) do not count. 0 turns the "
        "budget off. The launcher keeps the attempts in OUTPUT_DIR/launch-attempts.jsonl.", minimum=0,
    )


@dataclass
class Config:
    """The whole configuration, one sub-tree per concern."""

    model: ModelArgs = field(default_factory=ModelArgs)
    lora: LoraArgs = field(default_factory=LoraArgs)
    data: DataArgs = field(default_factory=DataArgs)
    train: TrainArgs = field(default_factory=TrainArgs)
    metrics: MetricsArgs = field(default_factory=MetricsArgs)
    cluster: ClusterArgs = field(default_factory=ClusterArgs)
    generation: GenerationArgs = field(default_factory=GenerationArgs)
    samples: SampleArgs = field(default_factory=SampleArgs)
    quality: QualityArgs = field(default_factory=QualityArgs)
    synthesis: SynthesisArgs = field(default_factory=SynthesisArgs)
    build: BuildArgs = field(default_factory=BuildArgs)  # build-dataset


# The options of training, in the order of `train --help`, the docs and the chart's values.
GROUPS: dict[str, type] = {
    "model": ModelArgs, "lora": LoraArgs, "data": DataArgs, "train": TrainArgs, "metrics": MetricsArgs,
    "cluster": ClusterArgs, "generation": GenerationArgs, "samples": SampleArgs, "quality": QualityArgs,
}
# Options of single commands (synthesize and evaluate; build-dataset): in their --help and docs, not in
# train's or the chart's.
COMMAND_GROUPS: dict[str, type] = {"synthesis": SynthesisArgs, "build": BuildArgs}
