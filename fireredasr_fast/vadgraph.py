"""silero VAD's sequence model rebuilt as a few large matrix products.

silero's sequence model (silero_vad_16k_sequence.onnx) takes a call's windows of 576 samples
(64 of context, then 512) and runs its STFT and its four 1-D convolutions once per window:
onnxruntime then does one tiny matrix product per window and layer (a few output frames
each), most of the VAD's time. The same computation over all of a call's windows at once is
one product per layer: the STFT as the frames of every window times silero's basis (a
periodic Hann window times the DFT); each convolution, over a window's few frames, as one
dense matrix (its taps placed where they meet the input frames, zeros where they meet the
padding); then silero's own LSTM, output layer and sigmoid, unchanged. The graph keeps the
sequence model's inputs and outputs (input, h, c -> speech_probs, hn, cn), so the VAD calls
it as it calls silero's (vad._SequenceModel); docs/benchmarks.md#vad-as-large-matrix-products-issue-32.

Reading silero's weights needs the `onnx` package, whose import costs more CPU than a VAD
process's whole start: so the graph is built once from the model file, checked against
onnxruntime running silero's own graph on a fixed signal, and kept in the cache (keyed by
the model file's hash and onnxruntime's version); a VAD process loads it without onnx. A
model file that is not the sequence model as expected, or a graph whose probabilities differ
from silero's by more than TOLERANCE, is refused (once, with a warning; the refusal is cached
too) and the VAD runs silero's own graph.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .fsutil import atomic_write_bytes, cache_dir

log = logging.getLogger("fireredasr_fast")

# Bump when the graph built here changes: older cached graphs are then never read.
GRAPH_VERSION = 1
# The most a probability of the rebuilt graph may differ from silero's own on the check
# signal (they differ by float rounding only: the products sum in another order).
TOLERANCE = 1e-5

WINDOW = 576  # samples per window: 64 of context, then silero's 512
FRAME, HOP = 256, 128  # silero's STFT: frames of 256 samples every 128
FRAMES = 4  # frames per window that silero keeps (of 5 after reflect-padding by 128 each side)
BINS = FRAME // 2 + 1
HIDDEN = 128
STRIDES = (1, 2, 2, 1)  # the encoder's four convolutions (kernel 3, padding 1)
# Silero's weights by name, with the shapes this rebuild expects.
SHAPES = {
    "stft.forward_basis_buffer": (2 * BINS, 1, FRAME),
    "encoder.0.weight": (128, BINS, 3),
    "encoder.0.bias": (128,),
    "encoder.1.weight": (64, 128, 3),
    "encoder.1.bias": (64,),
    "encoder.2.weight": (64, 64, 3),
    "encoder.2.bias": (64,),
    "encoder.3.weight": (HIDDEN, 64, 3),
    "encoder.3.bias": (HIDDEN,),
    "output.weight": (1, HIDDEN, 1),
    "output.bias": (1,),
}
LSTM_SHAPES = ((1, 4 * HIDDEN, HIDDEN), (1, 4 * HIDDEN, HIDDEN), (1, 8 * HIDDEN))  # W, R, B (gates i, o, f, c)
# The operators of silero's sequence graph, in order, and the attributes of its convolutions.
OPS = (
    ["Constant"] * 2 + ["ConstantOfShape", "Concat", "Constant", "Reshape"] + ["Constant"] * 4
    + ["Slice", "Transpose", "Constant", "Reshape", "Cast", "Pad", "Constant", "Unsqueeze", "Conv"]
    + (["Constant"] * 4 + ["Slice"]) * 4
    + ["Constant", "Pow", "Constant", "Pow", "Add", "Sqrt"] + ["Conv", "Relu"] * 4
    + ["Transpose", "LSTM", "Constant", "Squeeze", "Relu", "Transpose", "Conv", "Sigmoid", "Constant", "Reshape"]
)  # fmt: skip
CONVS = [
    {"kernel_shape": [FRAME], "strides": [HOP], "pads": [0, 0]},
    *({"kernel_shape": [3], "strides": [s], "pads": [1, 1]} for s in STRIDES),
    {"kernel_shape": [1], "strides": [1], "pads": [0, 0]},
]
# The check signal: this many windows (three calls of up to 512, the state carried across).
CHECK_WINDOWS = 1100


class Refused(ValueError):
    """The model file is not silero's sequence model as this rebuild expects it."""


def fast_graph(model: Path, root: Path | None = None) -> bytes | None:
    """The rebuilt graph (ONNX bytes) for silero's sequence model in `model`, from the cache
    (built, checked and cached first if it is not there yet), or None when it was refused or
    cannot be built here (no `onnx` package): the VAD then runs silero's own graph."""
    import onnxruntime as ort

    digest = hashlib.sha256(model.read_bytes()).hexdigest()[:16]
    name = f"silero-sequence-{digest}-ort{ort.__version__}-v{GRAPH_VERSION}"
    graph, refusal = ((root or cache_dir("vad")) / f"{name}.{kind}" for kind in ("onnx", "refused"))
    if graph.is_file():
        return graph.read_bytes()
    if refusal.is_file():
        log.debug("the VAD runs silero's own graph: %s", refusal.read_text(encoding="utf-8").strip())
        return None
    try:
        import onnx  # noqa: F401  (only to build the graph, once)
    except ImportError:
        log.warning("the VAD runs silero's own graph, slower: its fast form needs the onnx package")
        return None
    try:
        data: bytes | None = build_checked(model)
        out, text = graph, data
    except Refused as exc:
        log.warning("the VAD runs silero's own graph, slower: %s", exc)
        data, out, text = None, refusal, f"{model}: {exc}\n".encode()
    except Exception as exc:  # not cached: what failed here may not fail next time
        log.warning("the VAD runs silero's own graph, slower: its fast form could not be built (%s)", exc)
        return None
    try:
        atomic_write_bytes(out, text)
    except OSError as exc:  # a read-only cache: built again by the next process
        log.debug("the VAD's graph is not cached: %s", exc)
    return data


def build_checked(model: Path) -> bytes:
    """The rebuilt graph of `model`, checked against silero's own; Refused when it differs."""
    import onnx

    data = build(weights(onnx.load(str(model))))
    worst = check(model, data)
    if not worst <= TOLERANCE:
        raise Refused(f"its fast form differs from silero's graph by {worst:.3g} (more than {TOLERANCE:g})")
    return data


def weights(proto: Any) -> dict[str, np.ndarray]:
    """Silero's weights from its sequence graph, after checking that the graph is the one this
    rebuild expects (its operators, convolutions, inputs and weight shapes); Refused if not."""
    from onnx import numpy_helper

    graph = proto.graph
    found = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    difference = _difference(graph)
    if difference is None:
        lstm = next(n for n in graph.node if n.op_type == "LSTM")
        named = {name: found.get(name) for name in SHAPES}
        named.update(zip(("lstm.W", "lstm.R", "lstm.B"), (found.get(n) for n in lstm.input[1:4]), strict=True))
        shapes = [*SHAPES.values(), *LSTM_SHAPES]
        if all(_fits(v, s) for v, s in zip(named.values(), shapes, strict=True)):
            return named  # type: ignore[return-value]
        difference = "weights"
    raise Refused(f"not silero's sequence model as expected (its {difference} differ)")


def _difference(graph: Any) -> str | None:
    """What in silero's graph is not as this rebuild expects: its operators, convolutions or inputs."""
    from onnx import helper

    if [node.op_type for node in graph.node] != OPS:
        return "operators"
    convs = [{a.name: helper.get_attribute_value(a) for a in n.attribute} for n in graph.node if n.op_type == "Conv"]
    if any({k: conv.get(k) for k in want} != want for conv, want in zip(convs, CONVS, strict=True)):
        return "convolutions"
    dims = [[d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in graph.input]
    if [i.name for i in graph.input] != ["input", "h", "c"] or dims[0][1:] != [WINDOW]:
        return "inputs"
    return None


def _fits(value: np.ndarray | None, shape: tuple[int, ...]) -> bool:
    return value is not None and value.shape == shape and value.dtype == np.float32


def conv_matrix(weight: np.ndarray, bias: np.ndarray, frames: int, stride: int) -> tuple[np.ndarray, np.ndarray, int]:
    """A convolution (kernel 3, padding 1) over a window's `frames` input frames as one dense
    matrix on the frames laid end to end (frame-major): each tap where it meets an input frame,
    zeros where it meets the padding. Returns the matrix, the bias per output and the frames out."""
    out_channels, in_channels, kernel = weight.shape
    frames_out = (frames + 2 - kernel) // stride + 1
    dense = np.zeros((frames * in_channels, frames_out * out_channels), np.float32)
    for t in range(frames_out):
        for k in range(kernel):
            source = t * stride + k - 1
            if 0 <= source < frames:
                rows = slice(source * in_channels, (source + 1) * in_channels)
                dense[rows, t * out_channels : (t + 1) * out_channels] = weight[:, :, k].T
    return dense, np.tile(bias, frames_out).astype(np.float32), frames_out


class _Graph:
    """An ONNX graph written node by node (onnx.helper), with its constants."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.constants: list[Any] = []

    def const(self, name: str, value: np.ndarray | list[int]) -> str:
        from onnx import numpy_helper

        array = np.asarray(value, dtype=np.int64) if isinstance(value, list) else value
        self.constants.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str, **attributes: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op_type, inputs, [output], **attributes))
        return output

    def slice(self, source: str, start: int, end: int, axis: int, output: str) -> str:
        ends = [self.const(f"{output}.{k}", [v]) for k, v in (("start", start), ("end", end), ("axis", axis))]
        return self.op("Slice", [source, *ends], output)


def _spectrum(g: _Graph, basis: np.ndarray) -> str:
    """input (N, 576) -> the magnitudes of each window's frames 1..4, (N, 4 * 129). Silero
    reflect-pads a window by 128 on each side and drops its first frame: frames 1..4 start at
    samples 0, 128, 256, 384 of the window and the last one reaches 64 into the right padding."""
    right = (FRAMES - 1) * HOP + FRAME - WINDOW
    padded = g.op("Pad", ["input", g.const("pads", [0, 0, 0, right])], "padded", mode="reflect")
    rows = g.const("rows", [-1, HOP])
    halves = [
        g.op("Reshape", [g.slice(padded, a, a + FRAMES * HOP, 1, f"half{a}"), rows], f"rows{a}") for a in (0, HOP)
    ]
    frames = g.op("Concat", halves, "frames", axis=1)  # (N * 4, 256): a frame's two halves of 128
    spectrum = g.op("MatMul", [frames, g.const("basis", basis[:, 0, :].T)], "spectrum")  # real 0:129, imag 129:258
    power = g.op("Mul", [spectrum, spectrum], "power")
    parts = [g.slice(power, a, a + BINS, 1, name) for a, name in ((0, "real2"), (BINS, "imag2"))]
    magnitude = g.op("Sqrt", [g.op("Add", parts, "power.sum")], "magnitude")
    return g.op("Reshape", [magnitude, g.const("magnitude.shape", [-1, FRAMES * BINS])], "features")


def build(w: dict[str, np.ndarray]) -> bytes:
    """The rebuilt graph (ONNX bytes) from silero's weights (weights())."""
    from onnx import helper

    g = _Graph()
    x, frames = _spectrum(g, w["stft.forward_basis_buffer"]), FRAMES
    for i, stride in enumerate(STRIDES):
        dense, bias, frames = conv_matrix(w[f"encoder.{i}.weight"], w[f"encoder.{i}.bias"], frames, stride)
        x = g.op("Gemm", [x, g.const(f"conv{i}", dense), g.const(f"conv{i}.bias", bias)], f"conv{i}.out")
        x = g.op("Relu", [x], f"relu{i}")
    sequence = g.op("Unsqueeze", [x, g.const("batch_axis", [1])], "sequence")  # (N, 1, 128): N steps of batch 1
    lstm = [g.const(name, w[f"lstm.{name}"]) for name in "WRB"]
    g.nodes.append(helper.make_node("LSTM", [sequence, *lstm, "", "h", "c"], ["lstm", "hn", "cn"], hidden_size=HIDDEN))
    x = g.op("Relu", [g.op("Reshape", ["lstm", g.const("lstm.shape", [-1, HIDDEN])], "lstm.rows")], "relu.lstm")
    output = [g.const("output", w["output.weight"][:, :, 0].T), g.const("output.bias", w["output.bias"])]
    head = g.op("Gemm", [x, *output], "logit")
    g.op("Reshape", [g.op("Sigmoid", [head], "prob"), g.const("probs.shape", [-1])], "speech_probs")
    state = [1, 1, HIDDEN]
    inputs = [helper.make_tensor_value_info("input", 1, ["windows", WINDOW])]
    inputs += [helper.make_tensor_value_info(name, 1, state) for name in ("h", "c")]
    outputs = [helper.make_tensor_value_info("speech_probs", 1, ["windows"])]
    outputs += [helper.make_tensor_value_info(name, 1, state) for name in ("hn", "cn")]
    graph = helper.make_graph(g.nodes, "silero_vad_sequence_products", inputs, outputs, g.constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)], ir_version=8).SerializeToString()


def check_signal(windows: int = CHECK_WINDOWS) -> np.ndarray:
    """A fixed signal, (windows, 576) as the VAD gives them: voiced-like bursts (a square wave
    at a drifting pitch, ring-modulated by two tones, at syllable rate) over noise whose level
    drifts, so that the speech probabilities vary from window to window."""
    rng = np.random.default_rng(32)
    n = windows * 512 + 64
    t = np.arange(n) / 16000.0
    pitch = 120 + 40 * np.sin(2 * np.pi * 0.3 * t)
    pulses = np.sign(np.sin(2 * np.pi * np.cumsum(pitch) / 16000.0))
    voiced = pulses * np.sin(2 * np.pi * 700 * t) * np.sin(2 * np.pi * 1200 * t)
    syllables = np.clip(np.sin(2 * np.pi * 3.0 * t) * np.sin(2 * np.pi * 0.13 * t) * 2, 0, 1)
    noise = rng.standard_normal(n) * 10 ** (-1.5 - 1.5 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.07 * t)))
    audio = (0.3 * voiced * syllables + noise).astype(np.float32)
    starts = np.arange(windows) * 512
    return np.stack([audio[s : s + WINDOW] for s in starts])


def run_windows(session: Any, windows: np.ndarray, calls: int = 512) -> np.ndarray:
    """The probabilities of `windows` (N, 576) through a session of the sequence model's
    inputs and outputs, in calls of `calls` windows, the LSTM's state carried across."""
    hidden = cell = np.zeros((1, 1, HIDDEN), np.float32)
    out = []
    for first in range(0, len(windows), calls):
        values, hidden, cell = session.run(None, {"input": windows[first : first + calls], "h": hidden, "c": cell})
        out.append(values)
    return np.concatenate(out)


def check(model: Path, data: bytes) -> float:
    """The largest difference between the probabilities of the rebuilt graph and silero's own
    (both through onnxruntime, one thread) on check_signal."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.inter_op_num_threads = options.intra_op_num_threads = 1
    windows = check_signal()
    probs = [
        run_windows(ort.InferenceSession(m, sess_options=options, providers=["CPUExecutionProvider"]), windows)
        for m in (str(model), data)
    ]
    return float(np.abs(probs[0] - probs[1]).max())
