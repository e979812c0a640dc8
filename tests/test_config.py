"""`Settings`: prefix, seed-project aliases, derived paths, refusals outside development mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from wanserve.config import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in (
        "MAX_CONCURRENT_TASKS",
        "TASK_TIMEOUT",
        "SERVER_PORT",
        "WAN_CHECKPOINT_DIR",
        "T5_CPU",
        "WANSERVE_PORT",
    ):
        monkeypatch.delenv(name, raising=False)


def test_settings_seed_aliases_read(monkeypatch):
    monkeypatch.setenv("MAX_CONCURRENT_TASKS", "3")
    monkeypatch.setenv("TASK_TIMEOUT", "90")
    monkeypatch.setenv("SERVER_PORT", "9001")
    monkeypatch.setenv("WAN_CHECKPOINT_DIR", "/ckpt/wan")
    monkeypatch.setenv("T5_CPU", "true")
    settings = Settings()
    assert (settings.concurrency, settings.task_timeout_s, settings.port) == (3, 90.0, 9001)
    assert settings.checkpoint_dir == Path("/ckpt/wan") and settings.t5_cpu and settings.weights_configured


def test_flashvsr_service_variables_reach_the_engine(monkeypatch):
    monkeypatch.setenv("FLASHVSR_MODEL_PATH", "/models/FlashVSR-v1.1")
    monkeypatch.setenv("FLASHVSR_STREAMING_LQ_MAX_BYTES", str(64 << 20))
    monkeypatch.setenv("FLASHVSR_CACHE_OFFLOAD", "1")
    config = Settings().engine_config("cpu")
    assert config.upscale.streaming_lq_max_bytes == 64 << 20 and config.upscale.cache_offload is True
    for name in ("flashvsr-v1.1-tiny", "flashvsr-v1.1-tiny-long", "flashvsr-v1.1-full"):
        assert config.weights.model_path(name) == "/models/FlashVSR-v1.1"


def test_settings_prefixed_name_wins_over_alias(monkeypatch):
    monkeypatch.setenv("SERVER_PORT", "9001")
    monkeypatch.setenv("WANSERVE_PORT", "9002")
    assert Settings().port == 9002


def test_settings_defaults_sqlite_in_data_dir(tmp_path):
    settings = Settings(data_dir=tmp_path / "d")
    assert settings.resolved_database_url == f"sqlite:///{(tmp_path / 'd' / 'wanserve.db').resolve()}"
    assert settings.resolved_output_dir == (tmp_path / "d" / "outputs").resolve()
    assert not settings.weights_configured and settings.retention_s == 86400


def test_settings_models_comma_separated(monkeypatch):
    monkeypatch.setenv("WANSERVE_MODELS", "tiny-t2v, tiny-i2v")
    assert Settings().models == ["tiny-t2v", "tiny-i2v"]


def test_settings_dotenv_read(tmp_path):
    (tmp_path / ".env").write_text("WANSERVE_MAX_QUEUE=7\n")
    assert Settings().max_queue == 7


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"api_key": ""}, "WANSERVE_API_KEY"),
        ({"api_key": "  "}, "WANSERVE_API_KEY"),
        ({"allow_open": True}, "WANSERVE_ALLOW_OPEN"),
        ({"api_key": "k", "cors_origins": ["*"]}, "WANSERVE_CORS_ORIGINS"),
        ({"api_key": "k", "hold_dir": "/tmp/h"}, "WANSERVE_TEST_HOLD_DIR"),
    ],
)
def test_settings_production_refuses_unsafe(values, fragment):
    with pytest.raises(ValidationError, match=fragment):
        Settings(environment="production", **values)


def test_settings_production_with_key_accepted():
    assert not Settings(environment="production", api_key="secret").dev_mode


def test_settings_bad_values_refused():
    with pytest.raises(ValidationError, match="concurrency"):
        Settings(concurrency=0)
    with pytest.raises(ValidationError, match="max_upload_mb"):
        Settings(max_upload_mb=500, max_request_mb=100)


def test_engine_config_from_settings_seed_variables(monkeypatch, tmp_path):
    """The seed services' `WAN_CHECKPOINT_DIR` applies to the first model; `T5_CPU` keeps the text encoder on CPU."""
    from wanserve.config import Settings

    monkeypatch.setenv("WAN_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.setenv("T5_CPU", "1")
    monkeypatch.setenv("WANSERVE_MODELS", "wan2.1-t2v-14b,wan2.1-t2v-1.3b")
    config = Settings(_env_file=None).engine_config("cpu", (("wan2.1-t2v-1.3b", "/weights/small"),))
    assert dict(config.weights.model_paths) == {"wan2.1-t2v-14b": str(tmp_path), "wan2.1-t2v-1.3b": "/weights/small"}
    assert config.weights.checkpoint_dir == str(tmp_path)
    assert config.memory.text_encoder_on_cpu is True
    assert config.device == "cpu"


def test_settings_broker_url_must_be_redis(monkeypatch):
    monkeypatch.setenv("WANSERVE_BROKER_URL", "redis://127.0.0.1:6379/0")
    assert Settings().broker_url == "redis://127.0.0.1:6379/0"
    monkeypatch.setenv("WANSERVE_BROKER_URL", "")
    assert Settings().broker_url is None
    monkeypatch.setenv("WANSERVE_BROKER_URL", "amqp://guest@localhost//")
    with pytest.raises(
        ValidationError, match="`WANSERVE_BROKER_URL` must be a redis:// URL, got 'amqp://guest@localhost//'"
    ):
        Settings()


def test_vae_dtype_reaches_the_engine_and_a_bad_one_is_named(monkeypatch):
    monkeypatch.setenv("WANSERVE_VAE_DTYPE", "bfloat16")
    assert Settings().engine_config("cpu").memory.vae_dtype == "bfloat16"
    monkeypatch.setenv("WANSERVE_VAE_DTYPE", "float8")
    with pytest.raises(ValidationError) as error:
        Settings()
    assert "WANSERVE_VAE_DTYPE" in str(error.value) and "float8" in str(error.value)
