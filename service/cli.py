"""`mobilenet-serve`: parse flags, build the settings, run uvicorn with the app."""

from __future__ import annotations

import argparse
import importlib
import logging.config
import math
import sys
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError
from uvicorn.main import STARTUP_FAILURE

from .app import create_app
from .config import Settings
from .connections import ConnectionLimits, descriptors_for, guarded_protocol
from .draining_server import DrainingServer
from .heap_trim import limit_arenas

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mobilenet-serve",
        description=(
            "Serve the MobileNet model store over HTTP. Flags override MOBILENET_* variables and the YAML file. "
            "`mobilenet-serve import --help` turns your own model into a store entry."
        ),
    )
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (default 8000)")
    parser.add_argument("--grpc-port", type=int, help="port of the gRPC Open Inference Protocol (default 8001; 0: off)")
    parser.add_argument("--store", type=Path, help="model store directory (default: the bundled model_store/)")
    parser.add_argument("--config", type=Path, help="YAML settings file")
    parser.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--log-format", choices=["text", "json"], help="log lines as text (default) or JSON")
    parser.add_argument(
        "--model-control-mode", choices=["none", "explicit", "poll"],
        help="who changes the loaded models while serving, as Triton's flag (default none)",
    )  # fmt: skip
    return parser.parse_args(argv)


def run_import(argv: list[str]) -> int:
    """`mobilenet-serve import ...` (model_store/build/import_command.py), which needs the `build` extra."""
    try:
        command = importlib.import_module("model_store.build.import_command")
    except ImportError as exc:
        print(f"mobilenet-serve import needs the onnx package ({exc}): pip install 'mobilenet-serve[build]'",
              file=sys.stderr)  # fmt: skip
        return 2
    return int(command.main(argv))


def load_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {key: value for key, value in vars(args).items() if value is not None}
    return Settings(**overrides)


def logging_config(level: str, log_format: str = "text") -> dict[str, Any]:
    upper = level.upper()
    formatter: dict[str, Any] = {"format": LOG_FORMAT}
    if log_format == "json":
        formatter = {"()": "pythonjsonlogger.json.JsonFormatter", "format": LOG_FORMAT,
                     "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"}}  # fmt: skip
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
        "loggers": {
            "mobilenet_serve": {"handlers": ["stderr"], "level": upper, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": upper, "propagate": False},
            "uvicorn.error": {"level": upper},
        },
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["import"]:
        raise SystemExit(run_import(argv[1:]))
    args = parse_args(argv)
    try:
        settings = load_settings(args)
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        print(f"mobilenet-serve: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    logging.config.dictConfig(logging_config(settings.log_level, settings.log_format))
    limit_arenas()
    descriptors_for(settings.max_connections)
    limits = ConnectionLimits(
        settings.max_connections,
        settings.max_header_bytes,
        settings.header_timeout_seconds,
        settings.body_timeout_seconds,
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=logging_config(settings.log_level, settings.log_format),
        log_level=settings.log_level,
        # The app writes its own access line, which knows the model.
        access_log=False,
        timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_grace_seconds)),
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
        http=guarded_protocol(limits),
        server_header=False,
    )
    server = DrainingServer(config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


if __name__ == "__main__":
    main()
