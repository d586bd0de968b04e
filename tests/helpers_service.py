"""Helpers for the service tests: a real server in a subprocess, test images, metrics parsing."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
STORE = REPO / "model_store"
IMAGES = REPO / "tests" / "data" / "images"

TV_FP32 = "mobilenet_v2_1.0_224_tv"
TV_INT8 = "mobilenet_v2_1.0_224_tv_int8"
V1 = "mobilenet_v1_1.0_224"
V1_SMALL = "mobilenet_v1_0.25_128"
DEEPLAB = "deeplabv3_mnv2_pascal"
DEEPLAB_SMALL = "deeplabv3_mnv2_dm05_pascal"

CAT_IDS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
MACAW = 88
HOTDOG = 934
PASCAL_DOG = 12


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 60.0), **kwargs)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return int(self.process.returncode)


def start_server(
    workdir: Path,
    config: dict[str, Any],
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    timeout: float = 90.0,
    store: Path = STORE,
) -> ServerProcess:
    """Run `python -m service.cli` on a free loopback port with `config` as its YAML file."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log_path = workdir / "server.log"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("MOBILENET_")}
    child_env.update(env or {})
    command = [
        sys.executable, "-m", "service.cli",
        "--port", str(port), "--store", str(store), "--config", str(config_path),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=child_env, stdout=log, stderr=subprocess.STDOUT)
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log_path)
    if wait_ready:
        wait_until_ready(server, timeout)
    return server


def wait_until_ready(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log_text()}")
        try:
            if httpx.get(server.url + "/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server not ready after {timeout} s:\n{server.log_text()}")


def image_bytes(name: str) -> bytes:
    return (IMAGES / name).read_bytes()


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def content_type(name: str) -> str:
    return {"png": "image/png", "jpg": "image/jpeg"}[name.rsplit(".", 1)[-1]]


def metric_samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)], parsed with prometheus_client's own parser."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
    return sum(
        value
        for sample_labels, value in metric_samples(text).get(name, [])
        if all(sample_labels.get(k) == v for k, v in labels.items())
    )


def runs_larger_than_one(metrics_text: str, model: str) -> float:
    """ONNX Runtime runs of `model` that carried more than one image, from the batch-size histogram."""
    count = metric_value(metrics_text, "mobilenet_batch_size_count", model=model)
    single = metric_value(metrics_text, "mobilenet_batch_size_bucket", model=model, le="1.0")
    return count - single


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def top1(response_json: dict[str, Any], index: int = 0) -> int:
    return int(response_json["results"][index]["predictions"][0]["class_id"])
