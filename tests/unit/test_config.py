"""Settings: CLI flags > MOBILENET_* environment > YAML file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from service.cli import load_settings, parse_args
from service.config import DEFAULT_STORE, PREFERRED_DEFAULT_MODEL, Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("MOBILENET_"):
            monkeypatch.delenv(key)


def write_yaml(tmp_path: Path, content: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(content), encoding="utf-8")
    return path


def test_defaults() -> None:
    settings = Settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.store == DEFAULT_STORE and (DEFAULT_STORE.parent / "service").is_dir()
    assert settings.default_model == PREFERRED_DEFAULT_MODEL
    assert settings.models is None and settings.api_key is None
    assert settings.intra_op_threads >= 1


def test_priority_cli_over_env_over_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_yaml(tmp_path, {"port": 7000, "host": "0.0.0.0", "log_level": "debug", "max_body_bytes": 123})
    monkeypatch.setenv("MOBILENET_PORT", "7100")
    monkeypatch.setenv("MOBILENET_HOST", "10.0.0.1")
    settings = load_settings(parse_args(["--config", str(config), "--port", "7200"]))
    assert settings.port == 7200  # CLI
    assert settings.host == "10.0.0.1"  # env over YAML
    assert settings.log_level == "debug" and settings.max_body_bytes == 123  # YAML over defaults


def test_config_path_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILENET_CONFIG", str(write_yaml(tmp_path, {"default_model": "mobilenet_v1_1.0_224"})))
    assert Settings().default_model == "mobilenet_v1_1.0_224"


def test_models_comma_separated_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILENET_MODELS", "a, b,c")
    assert Settings().models == ["a", "b", "c"]


def test_batching_per_model_from_yaml(tmp_path: Path) -> None:
    config = write_yaml(
        tmp_path,
        {
            "default_batching": {"max_batch_size": 4, "max_queue_delay_ms": 1},
            "batching": {
                "m1": {"max_batch_size": 32, "max_queue_delay_ms": 5, "max_queue_size": 64, "timeout_ms": 500}
            },
        },
    )
    settings = Settings(config=config)
    assert settings.batching_for("m1").max_batch_size == 32
    assert settings.batching_for("m1").timeout_ms == 500
    assert settings.batching_for("other").max_batch_size == 4


def test_nested_env_batching(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILENET_DEFAULT_BATCHING__MAX_BATCH_SIZE", "3")
    assert Settings().default_batching.max_batch_size == 3


def test_auto_settings_from_env_and_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_yaml(tmp_path, {"auto": {"enabled": False, "default_budget_ms": 250, "hold_seconds": 3}})
    monkeypatch.setenv("MOBILENET_AUTO__CANDIDATES", "m1, m2@160")
    settings = Settings(config=config)
    assert settings.auto.candidates == ["m1", "m2@160"]
    assert not settings.auto.enabled and settings.auto.default_budget_ms == 250 and settings.auto.hold_seconds == 3
    for bad in ({"default_budget_ms": 0}, {"wait_factor": 0.5}, {"hold_seconds": 0}, {"budget": 5}):
        with pytest.raises(ValidationError):
            Settings(config=write_yaml(tmp_path, {"auto": bad}))


def test_api_key_from_env_and_empty_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILENET_API_KEY", "s3cret")
    assert Settings().api_key is not None and Settings().api_key.get_secret_value() == "s3cret"
    monkeypatch.setenv("MOBILENET_API_KEY", "")
    assert Settings().api_key is None


def test_typos_and_bad_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        Settings(config=write_yaml(tmp_path, {"max_batch_sise": 3}))
    with pytest.raises(ValidationError):
        Settings(default_batching={"max_batch_size": 0})
    with pytest.raises(ValidationError):
        Settings(log_level="loud")
    with pytest.raises(FileNotFoundError):
        Settings(config=tmp_path / "missing.yaml")


def test_empty_model_list_means_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(config=write_yaml(tmp_path, {"models": []})).models is None
    monkeypatch.setenv("MOBILENET_MODELS", "")
    assert Settings().models is None
