"""The people-counting example: generated clips -> HOG batched across streams -> a tracker per stream -> SQLite.

One run of the example's pipeline (two cameras, the debug runtime; the notebook runs it on
the local runtime) feeds every test that reads the table: the counts per camera, one track
per person, what the detector saw against where the figures were drawn, and the batches.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rvai_sdk.exc import InputValidationError
from rvai_sdk.types import Detections, Point
from tests.conftest import require_extra

ROOT = Path(__file__).resolve().parents[2]


def _example() -> Any:
    for module in ("cv2", "av", "sqlalchemy"):
        require_extra(module)
    if str(ROOT / "examples") not in sys.path:
        sys.path.append(str(ROOT / "examples"))  # the local runtime's inference process imports it from there too
    import people_counting

    return people_counting


@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both generated clips counted into SQLite on the debug runtime: the driver's counters and the rows."""
    example = _example()
    import sqlalchemy as sa

    folder = tmp_path_factory.mktemp("people")
    videos = {ref: example.make_clip(str(folder / f"{ref}.mp4"), walkers) for ref, walkers in example.SCENES.items()}
    database = f"sqlite:///{folder / 'people.db'}"
    final = example.count_people(videos, database=database, table="people", timeout=90.0)
    engine = sa.create_engine(database)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text('SELECT source, "index", status, tracks FROM people ORDER BY source, "index"')).all()
    finally:
        engine.dispose()
    return {"example": example, "final": final, "database": database, "rows": rows}


def test_people_crossing_the_line_are_counted_per_stream(counted: dict[str, Any]) -> None:
    example = counted["example"]
    counts = example.read_counts(counted["database"], "people")
    assert counts == {
        "cam-1": {"frames": example.FRAMES, "most_people": 2, "in": 3, "out": 0},
        "cam-2": {"frames": example.FRAMES, "most_people": 1, "in": 1, "out": 1},
    }
    # the clips' own ground truth agrees with the numbers above
    assert example.expected_crossings(example.SCENES["cam-1"], line_x=example.WIDTH / 2) == (3, 0)
    assert example.expected_crossings(example.SCENES["cam-2"], line_x=example.WIDTH / 2) == (1, 1)
    for ref, entry in counted["final"]["sources"].items():
        assert (entry["processed"], entry["failed"], entry["written"]) == (example.FRAMES, 0, example.FRAMES), ref


def test_each_person_keeps_one_track_and_each_stream_numbers_its_own(counted: dict[str, Any]) -> None:
    seen: dict[str, set[int]] = {}
    for row in counted["rows"]:
        tracks = Detections.from_json(_json(row.tracks))
        assert tracks.track_ids is not None
        seen.setdefault(row.source, set()).update(tracks.track_ids.tolist())
    # three people on cam-1 and two on cam-2: one track each, numbered from 1 in each stream's own state
    assert seen == {"cam-1": {1, 2, 3}, "cam-2": {1, 2}}


def test_hog_finds_the_generated_figures_in_the_decoded_video(counted: dict[str, Any]) -> None:
    example = counted["example"]
    by_frame = {(row.source, row.index): Detections.from_json(_json(row.tracks)) for row in counted["rows"]}
    visible = found = false_alarms = 0
    for ref, walkers in example.SCENES.items():
        for index, (_, truth) in enumerate(example.render_scene(walkers)):
            centres = ((found_boxes := by_frame[(ref, index)].xyxy)[:, 0] + found_boxes[:, 2]) / 2
            drawn = [(x0 + x1) / 2 for x0, _, x1, _ in truth]
            for x0, _, x1, _ in truth:
                if x0 >= 8 and x1 <= example.WIDTH - 8:  # the whole figure is in the frame
                    visible += 1
                    found += bool(np.any(np.abs(centres - (x0 + x1) / 2) < 16))
            false_alarms += sum(1 for c in centres if not any(abs(c - d) < 24 for d in drawn))
    assert visible > 60
    assert found / visible >= 0.9, f"HOG found {found} of {visible} whole figures"
    print(f"HOG found {found} of {visible} whole figures, {false_alarms} false alarms")
    assert false_alarms <= 2, f"{false_alarms} detections where no figure was drawn"


def test_the_detector_takes_frames_of_both_streams_in_one_call(counted: dict[str, Any]) -> None:
    batches = counted["final"]["batches"]
    assert batches["items"] == 2 * counted["example"].FRAMES
    assert max(batches["batch_sizes"]) == 2  # one frame per stream: never two of the same stream


# -- the tracker's state value ---------------------------------------------------------------------


def _frame(*boxes: tuple[float, float, float, float]) -> Detections:
    return Detections(xyxy=np.array(boxes, np.float32).reshape(-1, 4), scores=np.ones(len(boxes), np.float32),
                      class_ids=np.zeros(len(boxes), np.int64))


def _walk(example: Any, xs: list[float | None], line: tuple[Point, Point], **kwargs: Any) -> tuple[Any, int, int, list[int]]:
    tracks, total_in, total_out, ids = example.Tracks.empty(), 0, 0, []
    for x in xs:
        frame = _frame() if x is None else _frame((x - 20, 40, x + 20, 140))  # None: not seen in this frame
        tracks, tracked, crossed_in, crossed_out = tracks.update(frame, line=line, **kwargs)
        total_in, total_out = total_in + crossed_in, total_out + crossed_out
        ids += tracked.track_ids.tolist()
    return tracks, total_in, total_out, ids


def test_a_track_that_crosses_back_counts_in_then_out_and_keeps_its_id_through_missed_frames() -> None:
    example = _example()
    line = (Point(100, 0), Point(100, 200))
    missed = None
    xs = [40.0, 50.0, 60.0, missed, missed, 90.0, 100.0, 110.0, 120.0, 110.0, 100.0, 90.0, 80.0]
    tracks, crossed_in, crossed_out, ids = _walk(example, xs, line)
    assert (crossed_in, crossed_out) == (1, 1)
    assert set(ids) == {1}
    assert len(tracks) == 1 and tracks.next_id == 2
    # the same walk against the line drawn the other way round swaps in and out
    _, crossed_in, crossed_out, _ = _walk(example, xs, (line[1], line[0]))
    assert (crossed_in, crossed_out) == (1, 1)
    _, crossed_in, crossed_out, _ = _walk(example, xs[:9], (line[1], line[0]))
    assert (crossed_in, crossed_out) == (0, 1)


def test_a_track_passing_beyond_the_end_of_the_line_is_not_counted() -> None:
    example = _example()
    short_line = (Point(100, 0), Point(100, 50))  # ends above the figure's centre (y = 90)
    _, crossed_in, crossed_out, _ = _walk(example, [40.0, 60.0, 80.0, 100.0, 120.0, 140.0], short_line)
    assert (crossed_in, crossed_out) == (0, 0)


def test_a_track_unseen_for_longer_than_max_misses_ends_and_a_new_one_starts() -> None:
    example = _example()
    line = (Point(500, 0), Point(500, 200))
    missed = None
    tracks, _, _, ids = _walk(example, [40.0, 50.0, missed, missed, missed, 60.0], line, max_misses=2)
    assert ids == [1, 1, 2]
    assert tracks.ids.tolist() == [2]


def test_a_line_of_two_equal_points_is_refused_with_the_point() -> None:
    example = _example()
    with pytest.raises(ValueError, match=r"starts and ends at \(100.0, 0.0\); give two different points"):
        example.Tracks.empty().update(_frame((0, 0, 10, 10)), line=(Point(100, 0), Point(100, 0)))


def test_the_examples_docstrings_run() -> None:
    import doctest

    example = _example()
    result = doctest.testmod(example)
    assert result.attempted >= 4 and result.failed == 0


def test_tracks_round_trip_through_json_and_pickle_and_reject_bad_json() -> None:
    example = _example()
    rng = np.random.default_rng(7)
    for _ in range(20):
        tracks = example.Tracks.fake(rng)
        for copy in (example.Tracks.from_json(tracks.to_json()), pickle.loads(pickle.dumps(tracks))):
            assert copy.to_json() == tracks.to_json()
    with pytest.raises(InputValidationError, match="Tracks.ids: 1 rows, but xyxy has 2"):
        example.Tracks.from_json(
            {"xyxy": [[0, 0, 1, 1], [0, 0, 2, 2]], "velocity": [[0, 0], [0, 0]], "ids": [1], "misses": [0, 0], "sides": [1, 1], "next_id": 2}
        )
    with pytest.raises(InputValidationError, match="expected the fields"):
        example.Tracks.from_json({"boxes": []})


def _json(value: Any) -> Any:
    import json

    return json.loads(value) if isinstance(value, str) else value
