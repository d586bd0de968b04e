"""ONNX Runtime sessions: creation options and the outputs each task reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

INPUT_NAME = "image"

# Each task asks ONNX Runtime for exactly these outputs (model_store/README.md names them).
TASK_OUTPUTS: dict[str, tuple[str, ...]] = {
    "classify": ("logits",),
    "embed": ("embedding",),
    "backbone": ("features_s8", "features_s16", "features_s32"),
    "segment": ("seg_logits",),
}


class ModelSession:
    """One ONNX Runtime session; `run` is called from a single inference thread per model."""

    def __init__(self, onnx_path: Path, intra_op_threads: int) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        # Spinning intra-op threads would steal the cores the image decoders need between runs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
        inputs = self._session.get_inputs()
        if [i.name for i in inputs] != [INPUT_NAME]:
            raise ValueError(f"expected one input named {INPUT_NAME!r}, found {[i.name for i in inputs]}")
        self.output_names = frozenset(o.name for o in self._session.get_outputs())

    def run(self, batch: np.ndarray, outputs: tuple[str, ...]) -> list[np.ndarray]:
        return self._session.run(list(outputs), {INPUT_NAME: batch})
