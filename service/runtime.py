"""How the service opens an ONNX Runtime session: threads, spinning, and the int8 kernels this CPU computes exactly."""

from __future__ import annotations

import logging
import platform
from functools import cache
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger("mobilenet_serve.runtime")

INPUT_NAME = "image"
# ONNX Runtime's session config key that runs int8 weights as uint8 (kOrtSessionOptionsAvx2PrecisionMode).
UINT8_WEIGHTS_OPTION = "session.x64quantprecision"
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})


def open_session(onnx_path: Path, threads: int) -> ort.InferenceSession:
    """A session as the service runs it; the tests of the models' fidelity open theirs here too."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # No arena of ONNX Runtime's own: it kept the largest a session ever needed (two DeepLab runs at once held
    # their memory after an attack), while freed to malloc it goes back to the system (heap_trim.py); it
    # costs no speed measurably (docs/reliability.md, "Memory after an attack").
    options.enable_cpu_mem_arena = False
    if threads > 1:
        # Worker threads spin between a run's operators, since waking a sleeping one per operator costs
        # more than spinning, and stop the moment the run returns, so they never take a core that another
        # instance or an image decoder needs (docs/benchmarks.md, "Spinning").
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
    if u8s8_saturates():
        # ONNX Runtime's own remedy: its int8 weights become uint8 (the same values, shifted with their zero
        # point) so that MLAS multiplies uint8 by uint8, which cannot saturate. Slower, but exact
        # (docs/benchmarks.md, "int8 on a CPU without VNNI").
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
