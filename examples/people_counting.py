# requires: cv2, av, sqlalchemy
"""People counting on video, with no download: a detector batched across streams, a tracker per stream, SQLite.

Two cells:

- ``DetectPeople`` finds people with OpenCV's HOG people detector (Dalal and Triggs'
  pedestrian model, which ships inside the ``opencv-python-headless`` wheel:
  ``cv2.HOGDescriptor_getDefaultPeopleDetector()``). It has ``call_batch``, so the
  executor hands it one frame from each of several cameras at a time, and
  ``load_model`` builds the detector once, in the inference process.
- ``CountCrossings`` tracks the people of each camera (a small IoU tracker with a
  constant-velocity guess, its state a :class:`Tracks` value kept per sid) and counts
  the tracks whose centre crosses a line, in each direction.

``SourceSinkDriver`` reads each video with a ``VideoSource`` (one stream, so one sid,
per camera) and writes one row per frame into SQLite with a ``DatabaseSink``: the
people in the frame, the running counts, and the tracked boxes as JSON.

With no ``--video`` it renders two short clips of walking figures (``make_clip``: no
camera, no download), counts them, and prints the counts next to what the clips
hold::

    python examples/people_counting.py                      # two generated clips, SQLite in a temporary folder
    python examples/people_counting.py --runtime local --video entrance.mp4 --video hall.mp4 \\
        --line 320,0,320,480 --database sqlite:///people.db

HOG finds upright people roughly 100 pixels tall or taller; it misses people seen from
above, sitting, or much smaller (upscale the video with ``--width``/``--height`` then).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from rvai_sdk.cell import Cell, cell
from rvai_sdk.context import InferenceContext, ModelContext
from rvai_sdk.data import Inputs, Outputs, Parameters, State
from rvai_sdk.exc import InputValidationError
from rvai_sdk.pipeline import Pipeline, PipelineFactory
from rvai_sdk.runtime import Inference, init
from rvai_sdk.types import Detections, FloatRange, Image, Integer, IntegerRange, Point, Value

PERSON = ["person"]
"""The class names of the detections: HOG finds one class."""

# -- a scene with people walking (rendered, so nothing is downloaded) ----------------------------


@dataclass(frozen=True)
class Walker:
    """A figure that walks across the frame at a steady pace.

    Attributes:
        start: the frame at which it steps in (from the left edge when ``speed > 0``,
            from the right edge when ``speed < 0``).
        speed: pixels per frame, positive to the right.
        top: the row of the top of its head.
        height: its height in pixels (HOG needs about 100 or more).
        shirt: the RGB colour of its shirt and arms.
        trousers: the RGB colour of its legs.
    """

    start: int
    speed: float
    top: int = 40
    height: int = 100
    shirt: tuple[int, int, int] = (60, 40, 90)
    trousers: tuple[int, int, int] = (30, 30, 40)

    def centre_x(self, frame: int, width: int) -> float | None:
        """The horizontal centre of the figure in ``frame``, or None before it steps in."""
        if frame < self.start:
            return None
        steps = frame - self.start
        return -30 + self.speed * steps if self.speed > 0 else width + 30 + self.speed * steps


SCENES: dict[str, tuple[Walker, ...]] = {
    # three people to the right, two of them on screen at once
    "cam-1": (
        Walker(0, 12.0),
        Walker(10, 12.0, shirt=(120, 30, 30)),
        Walker(20, 12.0, top=50, height=96, shirt=(30, 70, 120)),
    ),
    # one to the right, then one to the left
    "cam-2": (
        Walker(0, 13.0, shirt=(40, 90, 40)),
        Walker(26, -13.0, shirt=(110, 80, 20)),
    ),
}
"""The clips the example renders when it is given no video: camera ref -> walkers."""

WIDTH, HEIGHT, FRAMES, FPS = 256, 192, 52, 10


def draw_person(frame: npt.NDArray[np.uint8], centre_x: float, walker: Walker, phase: float) -> None:
    """Draw a walking figure (head, torso, swinging arms and legs) onto an RGB frame, in place."""
    import cv2

    u = walker.height / 8.0  # a head's height: a standing adult is about eight heads tall
    top, cx = walker.top, centre_x
    skin = (90, 70, 60)
    swing = np.sin(phase) * 0.9 * u
    hip = top + 4.0 * u
    shoulder = top + 1.1 * u
    for side in (-1, 1):  # legs
        foot = (int(cx + side * (0.5 * u + swing)), int(top + 7.7 * u))
        cv2.line(frame, (int(cx + side * 0.4 * u), int(hip)), foot, walker.trousers, max(2, int(0.55 * u)), cv2.LINE_AA)
    torso = np.array(
        [[cx - u, shoulder], [cx + u, shoulder], [cx + 0.75 * u, hip + 0.2 * u], [cx - 0.75 * u, hip + 0.2 * u]], np.int32
    )
    cv2.fillPoly(frame, [torso], walker.shirt, cv2.LINE_AA)
    for side in (-1, 1):  # arms swing against the legs
        hand = (int(cx + side * (1.05 * u - 0.5 * swing)), int(top + 4.3 * u))
        cv2.line(frame, (int(cx + side * 0.95 * u), int(shoulder + 0.2 * u)), hand, walker.shirt, max(2, int(0.38 * u)), cv2.LINE_AA)
    cv2.rectangle(frame, (int(cx - 0.15 * u), int(top + 0.9 * u)), (int(cx + 0.15 * u), int(shoulder)), skin, -1)
    cv2.ellipse(frame, (int(cx), int(top + 0.5 * u)), (int(0.36 * u), int(0.5 * u)), 0, 0, 360, skin, -1, cv2.LINE_AA)


def render_scene(
    walkers: Sequence[Walker], *, width: int = WIDTH, height: int = HEIGHT, frames: int = FRAMES, seed: int = 0
) -> Iterator[tuple[npt.NDArray[np.uint8], list[tuple[float, float, float, float]]]]:
    """Frames of ``walkers`` over a street-like background, each with the figures' true boxes.

    Yields:
        ``(frame, boxes)``: an RGB ``height x width x 3`` uint8 frame and the
        ``(x_min, y_min, x_max, y_max)`` box of every figure in it (wholly or in part).
    """
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, height)[:, None, None]
    sky, ground = np.array([200.0, 205.0, 210.0]), np.array([150.0, 150.0, 140.0])
    background = np.broadcast_to(sky * (1 - rows) + ground * rows, (height, width, 3)) + rng.normal(0, 4, (height, width, 3))
    background = background.clip(0, 255).astype(np.uint8)
    for index in range(frames):
        frame = background.copy()
        boxes = []
        for walker in walkers:
            cx = walker.centre_x(index, width)
            if cx is not None and -40 < cx < width + 40:
                draw_person(frame, cx, walker, phase=0.5 * (index - walker.start))
                half = 1.1 * walker.height / 8.0
                if cx + half > 0 and cx - half < width:  # some of it is in the frame
                    boxes.append((cx - half, float(walker.top), cx + half, walker.top + 0.97 * walker.height))
        yield frame, boxes


def expected_crossings(walkers: Sequence[Walker], *, line_x: float, width: int = WIDTH, frames: int = FRAMES) -> tuple[int, int]:
    """How many figures cross the vertical line ``x = line_x`` within the clip: ``(to the right, to the left)``."""
    right = left = 0
    for walker in walkers:
        first, last = walker.centre_x(0, width), walker.centre_x(frames - 1, width)
        if last is None:
            continue
        first = walker.centre_x(walker.start, width) if first is None else first
        assert first is not None
        right += int(first < line_x < last)
        left += int(last < line_x < first)
    return right, left


def make_clip(path: str, walkers: Sequence[Walker], *, width: int = WIDTH, height: int = HEIGHT, frames: int = FRAMES, fps: int = FPS) -> str:
    """Render ``walkers`` into an H.264 MP4 (MPEG-4 Part 2 when this PyAV has no libx264) at ``path``."""
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame, _ in render_scene(walkers, width=width, height=height, frames=frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


# -- the detector --------------------------------------------------------------------------------


def people_detector() -> Any:
    """OpenCV's HOG descriptor with its default people detector (a linear SVM that ships in the wheel)."""
    import cv2

    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector(), np.float32))
    return hog


def detect_people(hog: Any, frame: npt.NDArray[np.uint8], *, min_score: float = 0.5, overlap: float = 0.45) -> Detections:
    """The people HOG finds in one RGB frame, as Detections of class ``person``.

    Args:
        hog: :func:`people_detector`'s descriptor.
        frame: an ``H x W x 3`` uint8 frame.
        min_score: the least SVM margin kept (HOG's scores are margins, not probabilities:
            about 0.5 and more for clear people).
        overlap: boxes overlapping a better one by more than this IoU are dropped.
    """
    import cv2

    rects, weights = hog.detectMultiScale(frame, winStride=(8, 8), padding=(8, 8), scale=1.05)
    if len(rects) == 0:
        return Detections.empty()
    scores = np.asarray(weights, dtype=np.float32).reshape(-1)
    kept = cv2.dnn.NMSBoxes([list(map(int, r)) for r in rects], scores.tolist(), min_score, overlap)
    keep = np.asarray(kept, dtype=np.int64).reshape(-1)
    boxes = np.asarray(rects, dtype=np.float32)[keep]
    boxes[:, 2:] += boxes[:, :2]  # x, y, w, h -> x_min, y_min, x_max, y_max
    return Detections(xyxy=boxes, scores=scores[keep], class_ids=np.zeros(len(keep), np.int64), class_names=PERSON)


# -- the tracker: per-stream state as a value type -----------------------------------------------


def box_iou(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Intersection over union of every box in ``a`` (``(N, 4)``) with every box in ``b`` (``(M, 4)``)."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


_TRACK_ARRAYS = (("xyxy", np.float32, (-1, 4)), ("velocity", np.float32, (-1, 2)), ("ids", np.int64, (-1,)),
                 ("misses", np.int64, (-1,)), ("sides", np.int8, (-1,)))


class Tracks(Value):
    """The people one camera is tracking: a value type, so it can be a field of a cell's ``State``.

    Per track: its last box (``xyxy``), its centre's velocity in pixels per frame, its
    id, the frames since it was last seen (``misses``) and the side of the counting
    line its centre was last on (``sides``: +1, -1, or 0 for on the line). ``next_id``
    is the id the next new track gets. A ``Tracks`` is never changed in place:
    :meth:`update` returns a new one, so the empty default can be shared.

    Example:
        >>> tracks = Tracks.empty()
        >>> frame = Detections(xyxy=[[10, 10, 50, 110]], scores=[1.0], class_ids=[0])
        >>> tracks, tracked, crossed_in, crossed_out = tracks.update(frame, line=(Point(100, 0), Point(100, 200)))
        >>> tracked.track_ids.tolist(), len(tracks), crossed_in
        ([1], 1, 0)
        >>> Tracks.from_json(tracks.to_json()).ids.tolist()
        [1]
    """

    __slots__ = ("xyxy", "velocity", "ids", "misses", "sides", "next_id")

    def __init__(
        self,
        xyxy: Any = (),
        velocity: Any = (),
        ids: Any = (),
        misses: Any = (),
        sides: Any = (),
        next_id: int = 1,
    ) -> None:
        values = {"xyxy": xyxy, "velocity": velocity, "ids": ids, "misses": misses, "sides": sides}
        count = None
        for name, dtype, shape in _TRACK_ARRAYS:
            try:
                array = np.asarray(values[name], dtype=dtype).reshape(shape)
            except (TypeError, ValueError) as exc:
                raise InputValidationError(f"Tracks.{name}: {exc}", field=f".{name}", expected="Tracks") from exc
            if count is not None and len(array) != count:
                raise InputValidationError(
                    f"Tracks.{name}: {len(array)} rows, but xyxy has {count}; give one row per track", field=f".{name}", expected="Tracks"
                )
            count = len(array)
            setattr(self, name, array)
        self.next_id = int(next_id)

    xyxy: npt.NDArray[np.float32]
    velocity: npt.NDArray[np.float32]
    ids: npt.NDArray[np.int64]
    misses: npt.NDArray[np.int64]
    sides: npt.NDArray[np.int8]

    @classmethod
    def empty(cls) -> Tracks:
        """No track yet (the state of a new stream)."""
        return cls()

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"Tracks(ids={self.ids.tolist()}, next_id={self.next_id})"

    def update(
        self, detections: Detections, *, line: tuple[Point, Point], iou_min: float = 0.2, max_misses: int = 10
    ) -> tuple[Tracks, Detections, int, int]:
        """Match one frame's detections to the tracks and count the tracks that crossed ``line``.

        Each track's box is moved by its velocity for every frame since it was seen, then
        the pairs with the highest IoU (at least ``iou_min``) are matched greedily. An
        unmatched detection starts a new track; a track unmatched for more than
        ``max_misses`` frames is dropped. A matched track whose centre moved from one side
        of the line segment to the other (while level with the segment) counts once.

        Args:
            detections: this frame's detections.
            line: the counting line's start and end points, in pixels.
            iou_min: the least IoU of a match.
            max_misses: how many frames a track may go unseen before it is dropped.

        Raises:
            ValueError: the line's two points are the same.

        Returns:
            ``(tracks, tracked, crossed_in, crossed_out)``: the new tracks, the detections
            with ``track_ids``, and the crossings in this frame: *in* from the side that
            the cross product ``(end - start) x (centre - start)`` makes positive to the
            negative side, *out* the other way. For a line from top to bottom, *in* is
            left to right; swap ``start`` and ``end`` to swap them.
        """
        boxes = detections.xyxy
        predicted = self.xyxy + np.tile(self.velocity, 2) * (self.misses + 1)[:, None]
        track_of = np.full(len(boxes), -1, np.int64)  # detection -> track row
        if len(self) and len(boxes):
            iou = box_iou(predicted, boxes)
            for flat in np.argsort(-iou, axis=None):
                row, col = divmod(int(flat), len(boxes))
                if iou[row, col] < iou_min:
                    break
                if track_of[col] < 0 and row not in track_of:
                    track_of[col] = row
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        start = np.array([float(line[0].x), float(line[0].y)], np.float32)
        direction = np.array([float(line[1].x), float(line[1].y)], np.float32) - start
        if not direction.any():
            raise ValueError(f"the counting line starts and ends at {tuple(start.tolist())}; give two different points")
        relative = centres - start
        cross = direction[0] * relative[:, 1] - direction[1] * relative[:, 0]
        sides = np.sign(cross).astype(np.int8)
        along = relative @ direction / max(float(direction @ direction), 1e-9)
        level = (along >= 0) & (along <= 1)

        seen = track_of[track_of >= 0]
        kept = np.ones(len(self), bool)
        misses = self.misses + 1
        misses[seen] = 0
        kept &= misses <= max_misses
        xyxy, velocity, old_sides = self.xyxy.copy(), self.velocity.copy(), self.sides.copy()
        crossed_in = crossed_out = 0
        ids = np.empty(len(boxes), np.int64)
        new_rows = []
        next_id = self.next_id
        for col, row in enumerate(track_of.tolist()):
            if row < 0:
                ids[col] = next_id
                new_rows.append(col)
                next_id += 1
                continue
            ids[col] = self.ids[row]
            old_centre = (self.xyxy[row, :2] + self.xyxy[row, 2:]) / 2
            steps = self.misses[row] + 1
            velocity[row] = 0.5 * velocity[row] + 0.5 * (centres[col] - old_centre) / steps
            xyxy[row] = boxes[col]
            before, now = old_sides[row], sides[col]
            if now != 0:
                if before > 0 > now and level[col]:
                    crossed_in += 1
                elif before < 0 < now and level[col]:
                    crossed_out += 1
                old_sides[row] = now
        new = np.asarray(new_rows, np.int64)
        tracks = Tracks(
            xyxy=np.concatenate([xyxy[kept], boxes[new]]),
            velocity=np.concatenate([velocity[kept], np.zeros((len(new), 2), np.float32)]),
            ids=np.concatenate([self.ids[kept], ids[new]]),
            misses=np.concatenate([misses[kept], np.zeros(len(new), np.int64)]),
            sides=np.concatenate([old_sides[kept], sides[new]]),
            next_id=next_id,
        )
        tracked = Detections(
            xyxy=boxes, scores=detections.scores, class_ids=detections.class_ids, class_names=detections.class_names, track_ids=ids
        )
        return tracks, tracked, crossed_in, crossed_out

    # the value-type protocol (see docs/concepts/types.md): coercion, JSON, schema, fake, pickling

    @classmethod
    def coerce(cls, value: Any, like: Any = None) -> Tracks:
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls.from_json(value)
        raise InputValidationError(f"expected Tracks or its JSON form, got {type(value).__name__}", expected="Tracks")

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name).tolist() for name, _, _ in _TRACK_ARRAYS} | {"next_id": self.next_id}

    @classmethod
    def from_json(cls, obj: Any, like: Any = None) -> Tracks:
        if not isinstance(obj, Mapping):
            raise InputValidationError(f"expected the JSON form of Tracks (an object of arrays), got {type(obj).__name__}", expected="Tracks")
        names = {name for name, _, _ in _TRACK_ARRAYS} | {"next_id"}
        if set(obj) != names:
            raise InputValidationError(
                f"Tracks: expected the fields {sorted(names)}, got {sorted(obj)}", expected="Tracks"
            )
        return cls(**{name: obj[name] for name, _, _ in _TRACK_ARRAYS}, next_id=obj["next_id"])

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        number_rows = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
        integers = {"type": "array", "items": {"type": "integer"}}
        return {
            "type": "object",
            "description": "the tracks of one stream",
            "properties": {"xyxy": number_rows, "velocity": number_rows, "ids": integers, "misses": integers,
                           "sides": integers, "next_id": {"type": "integer"}},
        }

    @classmethod
    def fake(cls, rng: np.random.Generator | None = None) -> Tracks:
        rng = rng if rng is not None else np.random.default_rng()
        n = int(rng.integers(0, 4))
        corner = rng.uniform(0, 200, (n, 2))
        return cls(
            xyxy=np.concatenate([corner, corner + rng.uniform(10, 100, (n, 2))], axis=1),
            velocity=rng.normal(0, 5, (n, 2)),
            ids=np.arange(1, n + 1),
            misses=rng.integers(0, 3, n),
            sides=rng.choice([-1, 1], n),
            next_id=n + 1,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (Tracks, (self.xyxy, self.velocity, self.ids, self.misses, self.sides, self.next_id))


# -- cells and the pipeline ----------------------------------------------------------------------


@dataclass
class FrameIn(Inputs):
    frame: Image = Inputs.field(name="Frame", description="an RGB video frame")


@dataclass
class DetectParameters(Parameters):
    min_score: FloatRange = Parameters.field(
        default=FloatRange(0.5, min=0.0, max=10.0), description="the least HOG score (SVM margin) of a person kept"
    )


@dataclass
class DetectionsOut(Outputs):
    detections: Detections = Outputs.field(name="People", description="the people in the frame, class 'person'")


@cell(max_batch_size=16, max_batch_wait=0.005)
class DetectPeople(Cell):
    """HOG people detection, one frame from each of several streams per call."""

    @classmethod
    def load_model(cls, context: ModelContext, parameters: DetectParameters, model_path: str | None) -> Any:
        return people_detector()

    @classmethod
    def call_batch(
        cls, contexts: list[InferenceContext], parameters: DetectParameters, inputs_list: list[FrameIn]
    ) -> list[DetectionsOut]:
        hog = contexts[0].model
        min_score = float(parameters.min_score)
        return [DetectionsOut(detections=detect_people(hog, np.asarray(inputs.frame), min_score=min_score)) for inputs in inputs_list]


@dataclass
class DetectionsIn(Inputs):
    detections: Detections = Inputs.field(name="People", description="the people in the frame")


@dataclass
class CountParameters(Parameters):
    line_start: Point = Parameters.field(default=Point(WIDTH / 2, 0), description="the counting line's first point, in pixels")
    line_end: Point = Parameters.field(default=Point(WIDTH / 2, HEIGHT), description="the counting line's second point")
    max_misses: IntegerRange = Parameters.field(
        default=IntegerRange(10, min=0, max=1000), description="frames a track may go unseen before it ends"
    )


@dataclass
class CountState(State):
    tracks: Tracks = State.field(default=Tracks.empty(), description="this stream's tracks")
    crossed_in: Integer = State.field(default=Integer(0))
    crossed_out: Integer = State.field(default=Integer(0))


@dataclass
class CountOut(Outputs):
    people: Integer = Outputs.field(name="People", description="people detected in this frame")
    crossed_in: Integer = Outputs.field(name="In", description="tracks that crossed the line 'in' on this stream so far")
    crossed_out: Integer = Outputs.field(name="Out", description="tracks that crossed the line 'out' on this stream so far")
    tracks: Detections = Outputs.field(name="Tracks", description="this frame's people with their track ids")


@cell(state=CountState)
class CountCrossings(Cell):
    """Tracks the people of one stream and counts those that cross the line (state per sid)."""

    @classmethod
    def call(cls, context: InferenceContext, parameters: CountParameters, inputs: DetectionsIn) -> CountOut:
        state = context.state
        line = (parameters.line_start, parameters.line_end)
        state.tracks, tracked, crossed_in, crossed_out = state.tracks.update(
            inputs.detections, line=line, max_misses=int(parameters.max_misses)
        )
        state.crossed_in = Integer(state.crossed_in + crossed_in)
        state.crossed_out = Integer(state.crossed_out + crossed_out)
        return CountOut(people=Integer(len(tracked)), crossed_in=state.crossed_in, crossed_out=state.crossed_out, tracks=tracked)


def build_pipeline() -> Pipeline:
    """frame -> DetectPeople -> CountCrossings -> people, crossed_in, crossed_out, tracks."""
    pf = PipelineFactory(name="PeopleCounting")
    detect = pf.add_cell(ref="detect", cell=DetectPeople())
    count = pf.add_cell(ref="count", cell=CountCrossings())
    pf.connect(detect.outputs.detections, count.inputs.detections)
    pf.declare_input(ref="frame", input=detect.inputs.frame)
    for port in count.outputs:
        pf.declare_output(ref=port.name, output=port)
    return pf.build()


# -- running it ----------------------------------------------------------------------------------


def count_people(
    videos: Mapping[str, str],
    *,
    database: str,
    table: str = "people",
    runtime: str = "debug",
    line: tuple[Point, Point] | None = None,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Stream every video through the pipeline into ``table`` of ``database``, to their ends.

    Args:
        videos: camera ref (also its sid and its ``source`` in the table) -> video file or URL.
        database: a SQLAlchemy URL, e.g. ``sqlite:///people.db``.
        table: the table to write (created when missing).
        runtime: ``debug``, ``local`` or ``ray``.
        line: the counting line (default: the vertical line through the middle of a
            ``WIDTH x HEIGHT`` frame).
        timeout: the most seconds to wait for the videos to end.

    Returns:
        The driver's final counters (``stats()``), once every frame is written.
    """
    from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
    from rvai_sdk.extensions.sinks.database_sink import DatabaseSink
    from rvai_sdk.extensions.sources.video_source import VideoSource

    parameters = {}
    if line is not None:
        parameters["count"] = CountParameters(line_start=line[0], line_end=line[1])
    inference = Inference(pipeline=build_pipeline(), parameters=parameters)
    with init(runtime) as rt, rt.start_inference(inference) as proc:
        stream = proc.add_driver(
            "cameras",
            SourceSinkDriver,
            sources={ref: VideoSource(url) for ref, url in videos.items()},
            sinks={"db": DatabaseSink(database, table=table)},
        )
        final = SourceSinkDriver.wait(stream, timeout=timeout)
        stream.stop()
        final["batches"] = proc.stats()["cells"]["detect"]
    return final


def read_counts(database: str, table: str = "people") -> dict[str, dict[str, int]]:
    """Per camera, as the table has it: frames, the most people in one frame, and the final in/out counts."""
    import sqlalchemy as sa

    engine = sa.create_engine(database)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    f'SELECT source, COUNT(*) AS frames, MAX(people) AS most, MAX(crossed_in) AS crossed_in, '
                    f'MAX(crossed_out) AS crossed_out FROM "{table}" WHERE status = \'complete\' GROUP BY source ORDER BY source'
                )
            )
            return {
                row.source: {"frames": row.frames, "most_people": row.most, "in": row.crossed_in, "out": row.crossed_out}
                for row in rows
            }
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", default="debug", help="debug (in this process), local (separate processes) or ray")
    parser.add_argument("--video", action="append", default=[], help="a video file or camera URL; repeat for more cameras")
    parser.add_argument("--line", default=None, help="the counting line x1,y1,x2,y2 in pixels (default: vertical, mid-frame)")
    parser.add_argument("--database", default=None, help="a SQLAlchemy URL (default: SQLite in a temporary folder)")
    parser.add_argument("--table", default="people", help="the table to write (created when missing)")
    args = parser.parse_args(argv)
    line = None
    if args.line:
        try:
            x1, y1, x2, y2 = (float(v) for v in args.line.split(","))
        except ValueError:
            parser.error(f"--line takes x1,y1,x2,y2 in pixels (e.g. 128,0,128,192), got {args.line!r}")
        if (x1, y1) == (x2, y2):
            parser.error(f"--line {args.line}: the line starts and ends at the same point; give two different points")
        line = (Point(x1, y1), Point(x2, y2))

    workdir = tempfile.mkdtemp(prefix="rvai-people-counting-")
    try:
        if args.video:
            videos = {f"cam-{i + 1}": url for i, url in enumerate(args.video)}
        else:
            videos = {ref: make_clip(os.path.join(workdir, f"{ref}.mp4"), walkers) for ref, walkers in SCENES.items()}
            print(f"no --video given: counting {len(videos)} generated clips of {FRAMES} frames ({WIDTH}x{HEIGHT})")
        database = args.database or f"sqlite:///{os.path.join(workdir, 'people.db')}"
        final = count_people(videos, database=database, table=args.table, runtime=args.runtime, line=line)
        for ref, entry in final["sources"].items():
            print(f"{ref}: {entry['processed']} frames processed, {entry['failed']} failed, {entry['written']} rows written")
        for ref, counts in read_counts(database, args.table).items():
            line_text = f"{ref}: in={counts['in']} out={counts['out']} (most people in one frame: {counts['most_people']})"
            if not args.video and line is None:  # the clips were drawn for the default line
                right, left = expected_crossings(SCENES[ref], line_x=WIDTH / 2)
                line_text += f"; the clip has in={right} out={left}"
            print(line_text)
        if args.database:
            print(f"rows are in {database} (table {args.table!r})")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
