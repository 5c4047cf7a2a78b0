# requires: torch
"""A GPU image classifier served to many streams: preprocessing and ResNet-50, both batched across streams.

Two cells, each with ``call_batch``, so the executor hands them batches made of
one frame from each of many streams (cross-stream dynamic batching; every
stream keeps its own state). Frames stay on the fast path to the GPU:

- ``Preprocess`` copies each frame straight from where it arrived into a
  preallocated batch on ``context.device`` (``non_blocking``: on the ``local``
  runtime frames arrive in page-locked shared memory, so the copies are DMA), then
  resizes (shorter side to ``size``, then a centre crop) the whole batch on the
  device. It waits for the copies (not for the resizing) before it returns, because
  the frames' memory goes back to the sender once the call lets go of it.
- Its output is a :class:`DeviceFrame`: a value type holding a tensor on the
  device. Both cells run in the same inference process, where values pass between
  cells by reference, so the preprocessed batch reaches ``Classify`` without a trip
  through host memory. (Only pipeline inputs and outputs cross a process boundary;
  a ``DeviceFrame`` is neither.)
- ``Classify`` runs ResNet-50, built here in plain torch with random weights
  (no download, no torchvision), in half precision on a GPU. ``load_model``
  builds it once on ``context.device`` and warms it up at the served shape and
  batch size, so no kernel loads on real traffic. On a GPU it then captures the
  forward pass as a CUDA graph (:class:`GraphedModel`): eager PyTorch launches
  ResNet-50's ~160 kernels one by one, holding the GIL for milliseconds per batch
  that the inference process's other threads need; a replay is one launch. The
  normalisation (ImageNet mean and std) is the first layer of the model. It keeps a per-stream count of
  frames in its state.

Both cells allow two calls at once (``concurrency=2``): while the GPU runs one
batch, the host forms and answers the next. Feed at least two batches' worth of
streams (128 streams for batches of 64) to keep the GPU busy.

Run it on a CPU with tiny frames (a few seconds; what the test suite does)::

    python examples/gpu_classifier.py --runtime debug

and on a GPU with real ones::

    python examples/gpu_classifier.py --runtime local --streams 128 --frames 20 --height 480 --width 640 --size 224
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext, ModelContext
from rvai_sdk.data import Inputs, Outputs, Parameters, State
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.resources import CellResources
from rvai_sdk.runtime import BatchingPolicy, Inference, init
from rvai_sdk.exc import InputValidationError
from rvai_sdk.types import Boolean, Class, Float, Image, Integer, Value

# -- ResNet-50 in plain torch (the torchvision architecture, random weights) ---------------------


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here, as torchvision does), 1x1 expand by 4, plus the shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        result: torch.Tensor = self.relu(out + identity)
        return result


class ResNet50(nn.Module):
    """ResNet-50 (He et al. 2015, torchvision layout): 3-4-6-3 bottleneck stages, about 25.6 M parameters."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        layers: list[nn.Module] = []
        in_channels = 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(blocks):
                layers.append(Bottleneck(in_channels, width, stride if i == 0 else 1))
                in_channels = width * Bottleneck.expansion
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        logits: torch.Tensor = self.fc(torch.flatten(self.pool(x), 1))
        return logits


class Normalize(nn.Module):
    """uint8 NHWC frames -> normalised NCHW floats of the model's dtype (on the model's device)."""

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225)) -> None:
        super().__init__()
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std).view(1, 3, 1, 1)))
        self.register_buffer("shift", -torch.tensor(mean).view(1, 3, 1, 1) / torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).to(self.scale.dtype)
        return (x * self.scale + self.shift).contiguous(memory_format=torch.channels_last)


def build_model(device: str, *, half: bool | None = None, num_classes: int = 1000) -> nn.Module:
    """Normalize + ResNet-50 with random weights, in eval mode on ``device`` (fp16 on CUDA unless ``half=False``)."""
    torch.manual_seed(0)
    model = nn.Sequential(Normalize(), ResNet50(num_classes)).eval()
    half = device.startswith("cuda") if half is None else half
    model = model.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model.half() if half else model  # type: ignore[no-any-return]


class GraphedModel:
    """``model`` captured as a CUDA graph at one batch size: one call replays every kernel of the forward pass.

    Eager PyTorch launches ResNet-50's ~160 kernels one at a time from Python, holding the GIL for
    milliseconds per batch while the inference process's transport and executor threads need it
    too. A graph's replay is one launch. A smaller batch is padded up to the captured size (its
    extra rows are computed and ignored); a batch of another shape runs eagerly. Calls from several
    threads are safe: their copy in, replay and copy out are queued on the device's one stream
    under a lock (microseconds), so each call's kernels follow the previous call's.
    """

    def __init__(self, model: nn.Module, device: str, batch: int, side: int) -> None:
        self.model = model
        self._lock = threading.Lock()
        self._input = torch.zeros((batch, side, side, 3), dtype=torch.uint8, device=device)
        warm = torch.cuda.Stream(device)  # warm-up on a side stream, as graph capture requires
        warm.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(warm), torch.inference_mode():
            for _ in range(3):
                model(self._input)
        torch.cuda.current_stream(device).wait_stream(warm)
        self._graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self._graph, capture_error_mode="thread_local"):
            self._output: torch.Tensor = model(self._input)
        torch.cuda.synchronize(device)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        n = frames.shape[0]
        if n > self._input.shape[0] or frames.shape[1:] != self._input.shape[1:]:
            out: torch.Tensor = self.model(frames)
            return out
        with self._lock:
            self._input[:n].copy_(frames)
            self._graph.replay()
            return self._output[:n].clone()  # queued before the next call's copy in: it reads this call's logits


# -- a value that stays on the device ------------------------------------------------------------


class DeviceFrame(Value):
    """A preprocessed frame (``size x size x 3`` uint8 tensor) on the inference process's device.

    It passes from one cell to the next in the same process by reference. It has no
    JSON form: it is meant for ports between cells, not for pipeline inputs or outputs.
    """

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    @classmethod
    def coerce(cls, value: Any, like: Any = None) -> DeviceFrame:
        if isinstance(value, cls):
            return value
        if isinstance(value, torch.Tensor):
            return cls(value)
        raise InputValidationError(f"expected DeviceFrame (a torch tensor), got {type(value).__name__}", expected="DeviceFrame")

    def to_json(self) -> Any:
        raise TypeError("a DeviceFrame stays in the inference process; declare an Image output to send frames out")

    @classmethod
    def from_json(cls, obj: Any, like: Any = None) -> DeviceFrame:
        raise InputValidationError("a DeviceFrame cannot come from JSON; send an Image", expected="DeviceFrame")

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        return {"description": "a frame on the GPU (never sent over the wire)"}

    @classmethod
    def fake(cls, rng: np.random.Generator | None = None) -> DeviceFrame:
        rng = rng if rng is not None else np.random.default_rng()
        return cls(torch.from_numpy(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)))

    def __repr__(self) -> str:
        return f"DeviceFrame({tuple(self.tensor.shape)}, {self.tensor.device})"


# -- cells ---------------------------------------------------------------------------------------


@dataclass
class FrameIn(Inputs):
    frame: Image = Inputs.field(name="Frame", description="an RGB frame, uint8 HxWx3, any size")


@dataclass
class FrameOut(Outputs):
    frame: DeviceFrame = Outputs.field(name="Preprocessed frame", description="size x size x 3, uint8, on the device")


@dataclass
class DeviceFrameIn(Inputs):
    frame: DeviceFrame = Inputs.field(name="Preprocessed frame", description="size x size x 3, uint8, on the device")


@dataclass
class PreprocessParameters(Parameters):
    size: Integer = Parameters.field(default=Integer(224), description="output side in pixels")
    warmup_height: Integer = Parameters.field(default=Integer(0), description="frame height to warm up at (0: none)")
    warmup_width: Integer = Parameters.field(default=Integer(0), description="frame width to warm up at")
    warmup_batch: Integer = Parameters.field(default=Integer(64), description="batch size to warm up at")


class DeviceBatches:
    """Preallocated device batches by frame shape; one per call in flight, reused across calls.

    A batch goes back to the free list once every kernel that reads it is queued: all
    work runs on the device's one default stream, in order, so the next call's copies
    into it start only after those kernels.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self._free: dict[tuple[int, int], list[torch.Tensor]] = {}
        self._lock = threading.Lock()

    def take(self, height: int, width: int, n: int) -> torch.Tensor:
        """A ``(>= n, height, width, 3)`` uint8 batch on the device."""
        with self._lock:
            free = self._free.get((height, width), [])
            for i, batch in enumerate(free):
                if batch.shape[0] >= n:
                    return free.pop(i)
        return torch.empty((n, height, width, 3), dtype=torch.uint8, device=self.device)

    def give(self, batch: torch.Tensor) -> None:
        with self._lock:
            self._free.setdefault((batch.shape[1], batch.shape[2]), []).append(batch)


def preprocess_frames(batches: DeviceBatches, frames: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """Frames of one shape -> ``(n, size, size, 3)`` uint8 on the device: copied in, resized, centre-cropped."""
    n = len(frames)
    height, width = int(frames[0].shape[0]), int(frames[0].shape[1])
    buffer = batches.take(height, width, n)
    batch = buffer[:n]
    for j, frame in enumerate(frames):
        source = np.asarray(frame)
        if not source.flags.writeable:  # torch wants writable memory; small frames may arrive read-only
            source = source.copy()
        batch[j].copy_(torch.from_numpy(source), non_blocking=True)  # from the slot straight to the device
    copied = torch.cuda.Event() if batch.is_cuda else None
    if copied is not None:
        copied.record()
    if (height, width) == (size, size):
        out = batch.clone()  # the buffer is reused by the next call
    else:
        x = batch.permute(0, 3, 1, 2).float()
        scale = size / min(height, width)
        resized = torch.nn.functional.interpolate(
            x,
            size=(max(size, round(height * scale)), max(size, round(width * scale))),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        top = (resized.shape[2] - size) // 2
        left = (resized.shape[3] - size) // 2
        cropped = resized[:, :, top : top + size, left : left + size]
        out = cropped.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    batches.give(buffer)
    if copied is not None:
        copied.synchronize()  # the frames' memory may be handed back only once their copies are done
    return out


@cell(max_batch_size=64, max_batch_wait=0.002, concurrency=2)
class Preprocess(Cell):
    """Copy frames to the device, resize (shorter side to ``size``, bilinear, antialiased) and centre-crop there."""

    @classmethod
    def load_model(cls, context: ModelContext, parameters: PreprocessParameters, model_path: str | None) -> Any:
        batches = DeviceBatches(context.device)
        height, width = int(parameters.warmup_height), int(parameters.warmup_width)
        if height and width:  # kernels loaded and the batch allocated at the served shape, before traffic
            frames = [np.zeros((height, width, 3), dtype=np.uint8)] * int(parameters.warmup_batch)
            preprocess_frames(batches, frames, int(parameters.size))
        return batches

    @classmethod
    def call_batch(
        cls, contexts: Sequence[InferenceContext], parameters: PreprocessParameters, inputs_list: Sequence[FrameIn]
    ) -> list[FrameOut]:
        size = int(parameters.size)
        batches: DeviceBatches = contexts[0].model
        outs: list[FrameOut | None] = [None] * len(inputs_list)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, inputs in enumerate(inputs_list):
            groups.setdefault(inputs.frame.shape, []).append(i)
        for indices in groups.values():
            frames = preprocess_frames(batches, [inputs_list[i].frame for i in indices], size)
            for j, i in enumerate(indices):
                outs[i] = FrameOut(frame=DeviceFrame(frames[j]))
        return [o for o in outs if o is not None]


@cell(max_batch_size=64, max_batch_wait=0.002)
class PreprocessSerial(Preprocess):
    """:class:`Preprocess`, one call at a time."""


@dataclass
class ClassifyOut(Outputs):
    label: Class = Outputs.field(name="Label", description="the top-1 class")
    score: Float = Outputs.field(name="Score", description="its softmax probability")
    frames: Integer = Outputs.field(name="Frames", description="frames this stream has sent so far")


@dataclass
class ClassifyParameters(Parameters):
    size: Integer = Parameters.field(default=Integer(224), description="input side to warm up at")
    warmup_batch: Integer = Parameters.field(default=Integer(64), description="batch size to warm up at")
    cuda_graphs: Boolean = Parameters.field(
        default=Boolean(True), description="on a GPU, replay the model as a CUDA graph captured at warmup_batch x size"
    )


@dataclass
class StreamState(State):
    frames: Integer = State.field(default=Integer(0))


@cell(state=StreamState, max_batch_size=64, max_batch_wait=0.002, concurrency=2)
class Classify(Cell):
    """ResNet-50 on a batch of preprocessed frames (on the device); top-1 label and score per frame."""

    @classmethod
    def load_model(cls, context: ModelContext, parameters: ClassifyParameters, model_path: str | None) -> Any:
        model = build_model(context.device)
        size = int(parameters.size)
        with torch.inference_mode():  # warm-up at the served shape: full batches and single frames
            for batch in (int(parameters.warmup_batch), 1, int(parameters.warmup_batch)):
                model(torch.zeros(batch, size, size, 3, dtype=torch.uint8, device=context.device))
        if not context.device.startswith("cuda"):
            return model
        torch.cuda.synchronize(context.device)
        if not parameters.cuda_graphs:
            return model
        try:
            return GraphedModel(model, context.device, int(parameters.warmup_batch), size)
        except Exception as exc:  # a torch or driver that cannot capture: the eager model, and why
            logging.getLogger(__name__).warning("CUDA graph capture failed (%s: %s); running the model eagerly", type(exc).__name__, exc)
            torch.cuda.synchronize(context.device)
            return model

    @classmethod
    def call_batch(
        cls, contexts: Sequence[InferenceContext], parameters: ClassifyParameters, inputs_list: Sequence[DeviceFrameIn]
    ) -> list[ClassifyOut]:
        model = contexts[0].model
        batch = torch.stack([inputs.frame.tensor for inputs in inputs_list])  # on the device already
        with torch.inference_mode():
            logits = model(batch)
            scores, labels = torch.softmax(logits.float(), dim=1).max(dim=1)
        outs = []
        for context, label, score in zip(contexts, labels.tolist(), scores.tolist()):
            context.state.frames = Integer(context.state.frames + 1)
            outs.append(ClassifyOut(label=Class(label, f"class-{label}"), score=Float(score), frames=context.state.frames))
        return outs


@cell(state=StreamState, max_batch_size=64, max_batch_wait=0.002)
class ClassifySerial(Classify):
    """:class:`Classify`, one call at a time."""


def classifier_pipeline(concurrency: int = 2) -> Pipeline:
    """frame -> preprocess -> classify -> label, score, frames; ``concurrency`` calls of each cell at once (1 or 2)."""
    if concurrency not in (1, 2):
        raise ValueError(f"concurrency must be 1 or 2, got {concurrency}")
    pf = PipelineFactory(name="gpu-classifier")
    pre = pf.add_cell(ref="preprocess", cell=Preprocess() if concurrency == 2 else PreprocessSerial())
    net = pf.add_cell(ref="classify", cell=Classify() if concurrency == 2 else ClassifySerial())
    pf.declare_input(ref="frame", input=pre.inputs.frame)
    pf.connect(pre.outputs.frame, net.inputs.frame)
    pf.declare_output(ref="label", output=net.outputs.label)
    pf.declare_output(ref="score", output=net.outputs.score)
    pf.declare_output(ref="frames", output=net.outputs.frames)
    return pf.build()


def classifier_inference(
    size: int = 224,
    gpu: bool | None = None,
    max_batch_size: int = 64,
    max_batch_wait: float = 0.005,
    *,
    concurrency: int = 2,
    frame_shape: tuple[int, int] | None = None,
    cuda_graphs: bool = True,
) -> Inference:
    """The example's Inference.

    Args:
        size: the model's input side in pixels.
        gpu: put both cells on one GPU (``None``: when CUDA is available).
        max_batch_size: batch limit of both cells (1 turns batching off); also the warm-up batch.
        max_batch_wait: most seconds a batch of either cell waits to fill.
        concurrency: calls of each cell at once (2 overlaps host work with the GPU's).
        frame_shape: ``(height, width)`` of the frames to serve, to warm preprocessing up at it.
        cuda_graphs: on a GPU, run the model as a CUDA graph (one launch per batch instead of one per
            kernel, see :class:`GraphedModel`); ``False``: eagerly.
    """
    gpu = torch.cuda.is_available() if gpu is None else gpu
    cells = ("preprocess", "classify")
    policy = BatchingPolicy(max_batch_size=max_batch_size, max_batch_wait=max_batch_wait if max_batch_size > 1 else 0.0)
    height, width = frame_shape or (0, 0)
    return Inference(
        pipeline=classifier_pipeline(concurrency),
        parameters={
            "preprocess": {"size": size, "warmup_height": height, "warmup_width": width, "warmup_batch": max_batch_size},
            "classify": {"size": size, "warmup_batch": max_batch_size, "cuda_graphs": cuda_graphs},
        },
        resources={ref: CellResources(gpus=1) for ref in cells} if gpu else {},
        batching={ref: policy for ref in cells},
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", default="debug", choices=["debug", "local", "ray"])
    parser.add_argument("--streams", type=int, default=4, help="concurrent streams (sids)")
    parser.add_argument("--frames", type=int, default=3, help="frames per stream")
    parser.add_argument("--height", type=int, default=48, help="input frame height")
    parser.add_argument("--width", type=int, default=64, help="input frame width")
    parser.add_argument("--size", type=int, default=32, help="model input side (224 for real use)")
    parser.add_argument("--max-batch", type=int, default=64, help="most frames per batch of either cell")
    parser.add_argument("--concurrency", type=int, default=2, choices=[1, 2], help="calls of each cell at once")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    frames = [Image(rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)) for _ in range(args.streams)]
    inference = classifier_inference(
        args.size, max_batch_size=args.max_batch, concurrency=args.concurrency, frame_shape=(args.height, args.width)
    )
    with init(args.runtime) as rt, rt.start_inference(inference) as proc:
        start = time.perf_counter()
        last: dict[str, dict[str, Any]] = {}
        for _ in range(args.frames):  # every stream sends a frame; the executor batches them across streams
            futures = {f"camera-{i}": proc.predict({"frame": frames[i]}, sid=f"camera-{i}") for i in range(args.streams)}
            last = {sid: future.result(timeout=600) for sid, future in futures.items()}
        elapsed = time.perf_counter() - start
        cells = proc.stats()["cells"]
    for sid, out in last.items():
        print(f"{sid}: frames={out['frames']} label={out['label'].name} score={out['score']:.4f}")
    total = args.streams * args.frames
    print(f"{total} frames in {elapsed:.2f} s ({total / elapsed:.1f} frames/s) on {args.runtime}")
    for ref in ("preprocess", "classify"):
        sizes = cells[ref]["batch_size"]
        print(f"{ref}: {cells[ref]['calls']} calls, mean batch {sizes['mean']:.1f}, max batch {sizes['max']}")


if __name__ == "__main__":
    main()
