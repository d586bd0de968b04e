"""ONNX Runtime sessions: creation options and the outputs each task reads."""

from __future__ import annotations

import logging
import platform
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger("mobilenet_serve.runtime")

INPUT_NAME = "image"
# ONNX Runtime's session config key that runs int8 weights as uint8 (kOrtSessionOptionsAvx2PrecisionMode).
UINT8_WEIGHTS_OPTION = "session.x64quantprecision"
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})

# Each task asks ONNX Runtime for exactly these outputs (model_store/README.md names them).
TASK_OUTPUTS: dict[str, tuple[str, ...]] = {
    "classify": ("logits",),
    "embed": ("embedding",),
    "backbone": ("features_s8", "features_s16", "features_s32"),
    "segment": ("seg_logits",),
}


class ModelSession:
    """A model's ONNX Runtime sessions: a wide one for a run alone, a narrow one for runs side by side.

    A lone run should use every core it may (`threads`); runs of several instances at once should
    each use their share (`threads // instances`), since oversubscribed cores cost more than they
    give. ONNX Runtime fixes the thread count per session, so the model keeps one session of each
    width when they differ. `run` may be called from several threads at once.
    """

    def __init__(self, onnx_path: Path, threads: int, instances: int = 1) -> None:
        self._wide = open_session(onnx_path, threads)
        narrow_threads = max(1, threads // max(1, instances))
        self._narrow = self._wide if narrow_threads == threads else open_session(onnx_path, narrow_threads)
        inputs = self._wide.get_inputs()
        if [i.name for i in inputs] != [INPUT_NAME]:
            raise ValueError(f"expected one input named {INPUT_NAME!r}, found {[i.name for i in inputs]}")
        self.output_names = frozenset(o.name for o in self._wide.get_outputs())

    def run(self, batch: np.ndarray, outputs: tuple[str, ...], alone: bool = True) -> list[np.ndarray]:
        session = self._wide if alone else self._narrow
        return session.run(list(outputs), {INPUT_NAME: batch})

    def warm_up(self, batch: np.ndarray, outputs: tuple[str, ...]) -> None:
        self._wide.run(list(outputs), {INPUT_NAME: batch})
        if self._narrow is not self._wide:
            self._narrow.run(list(outputs), {INPUT_NAME: batch})


def open_session(onnx_path: Path, threads: int) -> ort.InferenceSession:
    """A session as the service runs it; the tests of the models' fidelity open theirs here too."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if threads > 1:
        # Worker threads spin between a run's operators, since waking a sleeping one per operator costs
        # about 0.5 ms a run, and stop the moment the run returns, so they never take a core that another
        # instance or an image decoder needs (docs/benchmarks.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
    if u8s8_saturates():
        # ONNX Runtime's own remedy: its int8 weights become uint8 (the same values, shifted with their zero
        # point) so that MLAS multiplies uint8 by uint8, which cannot saturate. Slower, but without it the int8
        # MobileNetV2's logits fell to a cosine of 0.85-0.98 against torch on an AVX2 CPU (docs/benchmarks.md).
        options.add_session_config_entry(UINT8_WEIGHTS_OPTION, "1")
    options.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])


@cache
def u8s8_saturates() -> bool:
    """Whether ONNX Runtime's fused uint8 x int8 kernels can saturate here: an x86 CPU without VNNI.

    Without VNNI, MLAS sums each pair of uint8 x int8 products with VPMADDUBSW, in 16 bits that clip
    (ONNX Runtime's quantization guide and `session.x64quantprecision` in its session config keys).
    """
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # an x86 CPU of unknown features: take the kernels that are exact everywhere
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    if flags & VNNI_FLAGS:
        return False
    log.info("x86 CPU without VNNI: int8 models run with uint8 weights (session.x64quantprecision), exact but slower")
    return True
