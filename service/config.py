"""Service settings: CLI flags > environment (MOBILENET_*) > YAML file > defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULT_STORE = Path(__file__).resolve().parent.parent / "model_store"
PREFERRED_DEFAULT_MODEL = "mobilenet_v2_1.0_224_tv_int8"


class BatchingConfig(BaseModel):
    """Dynamic batching knobs for one model (the names follow Triton's dynamic batcher)."""

    model_config = ConfigDict(extra="forbid")

    # Threads that run this model's batches at the same time (Triton's instance_group count);
    # None: one per core of intra_op_threads.
    instances: int | None = Field(default=None, ge=1, le=64)
    # On a CPU an image costs about the same in a batch of 1 or 32, so bigger batches only make a queued
    # image's wait, and so p99, longer (docs/benchmarks.md, "Batches of at most 4").
    max_batch_size: int = Field(default=4, ge=1, le=256)
    # A batch is not interrupted once it runs, so its work is bounded too: at most this many multiply-adds
    # (at the batch's resolution), and never less than one image. DeepLab at 513 (2.7 G) runs one at a time.
    max_batch_macs: int = Field(default=4_000_000_000, ge=1)
    # 0: a free instance takes what is queued at once; on a CPU, waiting for a fuller batch leaves a core idle
    # (docs/benchmarks.md, "No queue delay").
    max_queue_delay_ms: float = Field(default=0.0, ge=0.0, le=10_000.0)
    max_queue_size: int = Field(default=256, ge=1)
    timeout_ms: float = Field(default=10_000.0, gt=0.0)


class AutoConfig(BaseModel):
    """`model=auto` on /classify (auto_select.py)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # Models (every resolution they take) or `model@resolution` points auto may choose; None: every served
    # ImageNet classifier. Auto chooses among the frontier of these.
    candidates: Annotated[list[str] | None, NoDecode] = None
    # The latency budget of a request that names none.
    default_budget_ms: float = Field(default=100.0, gt=0.0)
    # How many times the predicted queue wait counts against the budget: the margin for its variance.
    wait_factor: float = Field(default=1.5, ge=1.0, le=100.0)
    # The span over which auto averages the cores' use and its requests' rate (auto_load.py), and the time its
    # ceiling takes to climb the frontier's mean step in cost (auto_ceiling.Ceiling): larger, steadier under a
    # fluctuating load and slower to climb back once it has fallen.
    hold_seconds: float = Field(default=1.0, gt=0.0, le=600.0)

    @field_validator("candidates", mode="before")
    @classmethod
    def _split_candidates(cls, value: Any) -> Any:
        return _split_names(value)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MOBILENET_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # The Open Inference Protocol over gRPC (service/grpc) on this port of the same host, as Triton's 8001; 0: off.
    grpc_port: int = Field(default=8001, ge=0, le=65535)
    store: Path = DEFAULT_STORE
    config: Path | None = None
    default_model: str = PREFERRED_DEFAULT_MODEL
    # None means every variant in the store.
    models: Annotated[list[str] | None, NoDecode] = None
    # Cores the models share (cpu_shares.py): a batch alone uses them all, batches side by side one each.
    intra_op_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    # Pin each batch to the core it was granted, when the process's CPU set has exactly intra_op_threads cores.
    pin_instances: bool = True
    # Threads that parse V2 request bodies and encode large responses (NPZ, PNG masks), off the event loop.
    codec_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    max_body_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    # The request bodies being received, all together; past it a new request gets 503 with Retry-After.
    max_buffered_body_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    # Wall time one image's decoding may take in its decoder process before the process is killed; 0 decodes
    # on the instance threads themselves, which cannot be stopped.
    decode_budget_seconds: float = Field(default=1.0, ge=0.0)
    # An image whose decode yields more pixels than this (a JPEG's after DCT downscaling) is decoded on its own,
    # before it queues, with the CPU share of one image (service/large_images.py); 0 decodes all in batches.
    large_image_pixels: int = Field(default=4 * 1024 * 1024, ge=0)
    max_images_per_request: int = Field(default=32, ge=1)
    # The largest V2 inference response, estimated before it is serialised; past it the request gets a 400.
    max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    api_key: SecretStr | None = None
    # When set, the model-control routes (/v2/repository/...) need this key instead of api_key.
    admin_api_key: SecretStr | None = None
    # Who changes the loaded models while serving, as Triton's --model-control-mode: none (those loaded at
    # start stay), explicit (the repository routes load and unload), poll (the store is followed).
    model_control_mode: Literal["none", "explicit", "poll"] = "none"
    # How often poll mode compares the store with what is loaded (Triton's --repository-poll-secs).
    repository_poll_seconds: float = Field(default=15.0, gt=0.0)
    log_level: str = "info"
    # text: one readable line per event; json: one JSON object per line (python-json-logger), with an access
    # line's method, path, model, status, latency_ms and request_id as fields.
    log_format: Literal["text", "json"] = "text"
    # Access-log lines for probes, scrapes and the docs pages (never counted in the request metrics).
    access_log_operational: bool = False
    shutdown_grace_seconds: float = Field(default=10.0, ge=0.0)
    # How long an idle keep-alive connection stays open. It must outlast the idle timeout of every client pool,
    # proxy and load balancer in front (httpx 5 s, nginx upstream and AWS ALB 60 s): when the server closes
    # first, a request sent on the connection at that instant meets a TCP reset and no answer.
    keep_alive_timeout_seconds: int = Field(default=75, ge=1)
    # Past this many open connections a new one is answered 503 and closed at once, so that no number of
    # half-open connections can use up the process's file descriptors.
    max_connections: int = Field(default=1000, ge=1)
    # A request line and headers larger than this get 431.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    # A request's headers must arrive within this of its first byte (408 otherwise), and its body within
    # `body_timeout_seconds` of its headers (the connection is closed otherwise).
    header_timeout_seconds: float = Field(default=10.0, gt=0.0)
    body_timeout_seconds: float = Field(default=60.0, gt=0.0)
    # At most this long, at start-up, timing each ImageNet classifier at each resolution on this host
    # (calibration.py, GET /v1/tradeoffs); 0 times none.
    calibration_seconds: float = Field(default=5.0, ge=0.0)
    # How often to check whether resident memory grew enough to give freed heap memory back (heap_trim.py); 0: never.
    heap_trim_interval_seconds: float = Field(default=2.0, ge=0.0)
    # How often the loaded models' files are checked against their manifests; 0 turns the check off.
    store_check_interval_seconds: float = Field(default=30.0, ge=0.0)
    default_batching: BatchingConfig = BatchingConfig()
    batching: dict[str, BatchingConfig] = {}
    auto: AutoConfig = AutoConfig()

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        return _split_names(value)

    @field_validator("api_key", "admin_api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: Any) -> Any:
        # An empty MOBILENET_API_KEY (common in Helm templates) means "no key", not "the empty key".
        return None if value == "" else value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.lower()
        if level not in {"critical", "error", "warning", "info", "debug"}:
            raise ValueError(f"unknown log level {value!r}")
        return level

    def batching_for(self, model: str) -> BatchingConfig:
        """The model's batching, with `instances` resolved (every field set)."""
        config = self.batching.get(model, self.default_batching)
        if config.instances is None:
            config = config.model_copy(update={"instances": self.intra_op_threads})
        return config

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_path = _yaml_path(init_settings)
        if yaml_path is not None:
            if not yaml_path.is_file():
                raise FileNotFoundError(f"config file not found: {yaml_path}")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path))
        return tuple(sources)


def _split_names(value: Any) -> Any:
    """A comma-separated string as a list; an empty list means "no restriction", as in the Helm chart's values."""
    if isinstance(value, str):
        value = [name.strip() for name in value.split(",") if name.strip()]
    return value or None


def _yaml_path(init_settings: PydanticBaseSettingsSource) -> Path | None:
    init_kwargs = init_settings.init_kwargs if isinstance(init_settings, InitSettingsSource) else {}
    value = init_kwargs.get("config") or os.environ.get("MOBILENET_CONFIG")
    return Path(value) if value else None
