"""Many cameras on one GPU: how many 1080p30 H.264 streams one inference process holds end to end.

For growing N, on the ``local`` runtime, in one run:

    N looped 1080p30 H.264 files, paced like cameras (``VideoSource(realtime=True, loop=True)``,
    ``decode="auto"``: the GPU's hardware decoder through PyAV when it works, else the CPU)
    -> SourceSinkDriver processes (``--per-driver`` cameras each, live drop policy)
    -> preprocess on the GPU (``examples/gpu_classifier.py``'s batched ``Preprocess``: the
       1080p frame is copied to the device and resized there)
    -> a batched ResNet-50 fp16 cell -> a time stamp -> SQLite (one file per driver process).

For each N, after a warm-up, one window of ``--seconds``: frames/s written per stream
(answered by the model: the lowest and the mean), frames dropped (the sources' queues overflowed: inference or
decode fell behind), GPU utilisation (NVML, sampled through the window), the host's CPU
use, and the p50/p99 frame latency (from the decoded frame to the model's answer, from
the rows in SQLite). N is *held* when every stream wrote >= 95% of 30 frames/s and
nothing was dropped; the run stops at the first N not held, or when ``--budget``
seconds would be exceeded, and reports the largest N held.

First, a decode probe (in a child process, so that this one never creates a CUDA
context): PyAV on the CPU, PyAV's CUDA hardware acceleration (with its RGB conversion, with
none, with the NV12 array), torchcodec and PyNvVideoCodec (NV12 or RGB in device memory,
copied to host or not), one decoder and eight at once, each decoding the clip three times
in a row: works or not (and why), and in steady state (past each decoder's first frames)
CPU ms per frame and frames/s.

    python benchmarks/bench_cameras.py [--streams 8,16,24,32,48,64,80,96,128] [--seconds 5] [--write docs/performance.md]
    python benchmarks/bench_cameras.py --cpu-smoke      # a tiny model and clip on the CPU: the self-check only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))

from _report import machine, write_section  # noqa: E402
from bench_stream import make_clip  # noqa: E402  (one clip maker for the stream and camera benchmarks)

import gpu_classifier  # noqa: E402
import torch  # noqa: E402

from rvai_sdk.cell import Cell, cell  # noqa: E402
from rvai_sdk.context import InferenceContext, ModelContext  # noqa: E402
from rvai_sdk.data import Inputs, Outputs, Parameters  # noqa: E402
from rvai_sdk.pipeline import PipelineFactory  # noqa: E402
from rvai_sdk.types import Float  # noqa: E402

FPS = 30
HELD = 0.95  # of FPS, per stream, with no drop


# -- the decode probe (child process) ----------------------------------------------------------------


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


WARM = 10  # frames per decoder left out of the probe's figures: opening a GPU decoder (a CUDA context, a session) is paid once per camera, not per frame


def probe_decoders(clip: str, passes: int = 3) -> list[dict[str, Any]]:
    """Each decode option on the clip: ``{"name", "ok", "why", "frames", "cpu_ms", "fps"}``; never raises.

    Each option decodes the clip ``passes`` times in a row with one decoder (as a looped camera
    does); its figures are the steady state: CPU ms per frame and frames/s counted from the
    ``WARM``-th frame of each decoder, so that opening it (a CUDA context, an NVDEC session)
    is left out. Options that run several decoders at once (threads) give their sum.
    """
    results: list[dict[str, Any]] = []

    class Meter:
        """Counts frames; notes CPU and wall time once every decoder of an option is past its warm-up."""

        def __init__(self, decoders: int) -> None:
            self.lock = threading.Lock()
            self.warm_left, self.frames = decoders, 0
            self.at: tuple[float, float] | None = None
            self.seen: dict[int, int] = {}

        def tick(self) -> None:
            me = threading.get_ident()
            with self.lock:
                n = self.seen[me] = self.seen.get(me, 0) + 1
                if self.at is not None:
                    self.frames += 1
                elif n == WARM:
                    self.warm_left -= 1
                    if self.warm_left == 0:
                        self.at = (_cpu(), time.perf_counter())

    def attempt(name: str, decode: Any, decoders: int = 1) -> None:
        meter = Meter(decoders)
        try:
            note = decode(meter.tick)
        except BaseException as exc:  # noqa: BLE001 - a probe reports every failure
            results.append({"name": name, "ok": False, "why": f"{type(exc).__name__}: {str(exc)[:300]}"})
            return
        if meter.at is None or not meter.frames:
            results.append({"name": name, "ok": False, "why": f"decoded fewer than {WARM} frames per decoder ({note})"})
            return
        c0, t0 = meter.at
        wall = time.perf_counter() - t0
        results.append(
            {"name": name, "ok": True, "why": note, "frames": meter.frames, "cpu_ms": 1000 * (_cpu() - c0) / meter.frames,
             "fps": meter.frames / wall if wall else 0.0}
        )

    def pyav(tick: Any, hwaccel: Any = None, threads: bool = True, convert: str | None = "rgb24") -> str:
        import av

        with av.open(clip, hwaccel=hwaccel) as container:
            stream = container.streams.video[0]
            if threads:
                stream.thread_type = "AUTO"
            for i in range(passes):
                if i:
                    container.seek(0)
                for frame in container.decode(stream):
                    if convert == "native":
                        frame.to_ndarray()
                    elif convert:
                        frame.to_ndarray(format=convert)
                    tick()
            hw = stream.codec_context.is_hwaccel
        if hwaccel is not None and not hw:
            raise RuntimeError("opened, but FFmpeg decoded on the CPU (no CUDA decoder for this codec here)")
        return f"PyAV {av.__version__}" + (", decoded by NVDEC" if hw else "")

    def pyav_cuda(tick: Any, primary: bool, convert: str | None = "rgb24") -> str:
        from av.codec.hwaccel import HWAccel, hwdevices_available

        if "cuda" not in hwdevices_available():
            raise RuntimeError(f"this PyAV's FFmpeg has no CUDA device type (has {hwdevices_available()})")
        options: dict[str, object] = {"primary_ctx": "1"} if primary else {}
        return pyav(tick, HWAccel("cuda", allow_software_fallback=False, options=options), threads=False, convert=convert)

    def torchcodec(tick: Any, device: str) -> str:
        import torchcodec  # type: ignore[import-not-found]
        from torchcodec.decoders import VideoDecoder  # type: ignore[import-not-found]

        decoder = VideoDecoder(clip, device=device)
        for _ in range(passes):
            for i in range(len(decoder)):
                decoder[i]
                tick()
        return f"torchcodec {torchcodec.__version__}"

    def nvvideocodec(tick: Any, color: str = "NATIVE", to_host: bool = False, decoders: int = 1) -> str:
        """PyNvVideoCodec's demuxer and decoder (the API that takes a live URL too), frames in device memory;
        ``to_host``: each frame copied into page-locked host memory (what a driver process then sends)."""
        import PyNvVideoCodec as nvc  # type: ignore[import-not-found]

        def one() -> str:
            host = None
            for _ in range(passes):
                demuxer = nvc.CreateDemuxer(filename=clip)
                decoder = nvc.CreateDecoder(
                    gpuid=0, codec=demuxer.GetNvCodecId(), cudacontext=0, cudastream=0, usedevicememory=True,
                    outputColorType=getattr(nvc.OutputColorType, color),
                )
                for packet in demuxer:
                    for frame in decoder.Decode(packet):
                        if to_host:
                            device = torch.from_dlpack(frame)
                            if host is None:
                                host = torch.empty(device.shape, dtype=device.dtype, pin_memory=True)
                            host.copy_(device)  # synchronous: the decoder may reuse the surface after this
                            host.numpy()
                        tick()
            return f"PyNvVideoCodec {getattr(nvc, '__version__', '?')}"

        return _threads(decoders, one)

    attempt("PyAV, CPU (codec threads)", pyav)
    attempt("PyAV, CPU (one thread)", lambda tick: pyav(tick, threads=False))
    attempt("PyAV, CUDA hwaccel (primary context)", lambda tick: pyav_cuda(tick, True))
    attempt("PyAV, CUDA hwaccel (own context)", lambda tick: pyav_cuda(tick, False))
    attempt("PyAV, CUDA hwaccel, frames to host, no array", lambda tick: pyav_cuda(tick, True, convert=None))
    attempt("PyAV, CUDA hwaccel, NV12 array (no RGB conversion)", lambda tick: pyav_cuda(tick, True, convert="native"))
    attempt("VideoSource(decode='auto')", lambda tick: _video_source(clip, tick, passes))
    attempt("torchcodec, CUDA", lambda tick: torchcodec(tick, "cuda"))
    attempt("PyNvVideoCodec, NV12 on the GPU", nvvideocodec)
    attempt("PyNvVideoCodec, RGB on the GPU", lambda tick: nvvideocodec(tick, "RGB"))
    attempt("PyNvVideoCodec, RGB on the GPU, copied to host", lambda tick: nvvideocodec(tick, "RGB", to_host=True))
    attempt("PyNvVideoCodec x8 decoders at once, RGB, copied to host", lambda tick: nvvideocodec(tick, "RGB", True, 8), 8)
    attempt("PyAV x8 CUDA hwaccel decoders at once, RGB array", lambda tick: _threads(8, lambda: pyav_cuda(tick, True)), 8)
    return results


def _threads(n: int, work: Any) -> str:
    """Run ``work`` on ``n`` threads at once; its note, or its first error raised."""
    notes: list[str] = []
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            notes.append(work())
        except BaseException as exc:  # noqa: BLE001 - reported by the probe
            errors.append(exc)

    workers = [threading.Thread(target=guarded) for _ in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    return notes[0]


def _video_source(clip: str, tick: Any, passes: int) -> str:
    from rvai_sdk.drivers import SourceContext
    from rvai_sdk.extensions.sources.video_source import VideoSource

    wanted = passes * source_frames(clip)  # counted once, before the measured frames
    source = VideoSource(clip, params={"loop": passes > 1})
    source.open(SourceContext(ref="probe", inputs=pipeline(tiny=True).inputs))
    frames = 0
    try:
        for _ in source.items():
            tick()
            frames += 1
            if frames >= wanted:
                break
    finally:
        source.close()
    stats = source.stats()
    why = "; ".join(str(stats[k]) for k in ("decode_fallback", "convert_fallback") if stats.get(k))
    return f"decoder {stats['decoder']}, RGB on the {stats.get('convert', 'cpu')}" + (f" ({why})" if why else "")


def source_frames(clip: str) -> int:
    """Frames in the clip (its stream's count, else decoded once on the CPU)."""
    import av

    with av.open(clip) as container:
        stream = container.streams.video[0]
        return int(stream.frames) or sum(1 for _ in container.decode(stream))


def run_probe(clip: str) -> list[dict[str, Any]]:
    try:
        result = subprocess.run(
            [sys.executable, __file__, "--probe-child", clip], capture_output=True, text=True, timeout=120
        )
        line = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        out: list[dict[str, Any]] = json.loads(line)
        return out
    except Exception as exc:  # noqa: BLE001 - a probe that crashes (a driver fault) is reported, not fatal
        tail = locals().get("result")
        detail = tail.stderr[-500:] if tail is not None else ""
        return [{"name": "decode probe", "ok": False, "why": f"{type(exc).__name__}: {exc} {detail}".strip()}]


# -- the pipeline --------------------------------------------------------------------------------


@dataclasses.dataclass
class ScoreIn(Inputs):
    score: Float = Inputs.field()


@dataclasses.dataclass
class StampOut(Outputs):
    done_at: Float = Outputs.field(description="when the model's answer was there (seconds since the epoch)")


@cell(max_batch_size=64, max_batch_wait=0.005)
class Stamp(Cell):
    """The time the model answered, for the frame latency read back from SQLite."""

    @classmethod
    def call_batch(cls, contexts: Sequence[InferenceContext], parameters: Parameters, inputs_list: Sequence[ScoreIn]) -> list[StampOut]:
        now = Float(time.time())
        return [StampOut(done_at=now) for _ in inputs_list]


@cell(state=gpu_classifier.StreamState, max_batch_size=64, max_batch_wait=0.005, concurrency=2)
class TinyClassify(gpu_classifier.Classify):
    """:class:`Classify` with a tiny net instead of ResNet-50 (``--cpu-smoke``)."""

    @classmethod
    def load_model(cls, context: ModelContext, parameters: gpu_classifier.ClassifyParameters, model_path: str | None) -> Any:
        torch.manual_seed(0)
        net = torch.nn.Sequential(
            gpu_classifier.Normalize(), torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(), torch.nn.Linear(8, 10),
        )
        return net.eval().to(context.device)


def pipeline(*, tiny: bool) -> Any:
    """frame -> preprocess (GPU) -> classify (ResNet-50, or a tiny net) -> stamp; outputs label, score, done_at."""
    pf = PipelineFactory(name="cameras")
    pre = pf.add_cell(ref="preprocess", cell=gpu_classifier.Preprocess())
    net = pf.add_cell(ref="classify", cell=TinyClassify() if tiny else gpu_classifier.Classify())
    stamp = pf.add_cell(ref="stamp", cell=Stamp())
    pf.declare_input(ref="frame", input=pre.inputs.frame)
    pf.connect(pre.outputs.frame, net.inputs.frame)
    pf.connect(net.outputs.score, stamp.inputs.score)
    pf.declare_output(ref="label", output=net.outputs.label)
    pf.declare_output(ref="score", output=net.outputs.score)
    pf.declare_output(ref="done_at", output=stamp.outputs.done_at)
    return pf.build()


# -- GPU utilisation ---------------------------------------------------------------------------------


class GpuSampler:
    """Samples GPU utilisation (NVML, else ``nvidia-smi``) on a thread; never creates a CUDA context."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.how = "none"
        self.name = ""
        self._stop = threading.Event()
        self._read: Any = None
        try:
            import pynvml  # type: ignore[import-not-found, import-untyped, unused-ignore]

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._read = lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            self.how = "NVML"
            name = pynvml.nvmlDeviceGetName(handle)
            self.name = name.decode() if isinstance(name, bytes) else str(name)
        except Exception:  # noqa: BLE001
            if shutil.which("nvidia-smi"):
                self._read = self._smi
                self.how = "nvidia-smi"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _smi() -> float:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True, text=True, timeout=10,
        )
        return float(out.stdout.strip().splitlines()[0])

    def _run(self) -> None:
        while self._read is not None and not self._stop.wait(0.25):
            try:
                self.samples.append(self._read())
            except Exception:  # noqa: BLE001
                self._read = None

    def mark(self) -> int:
        return len(self.samples)

    def mean_since(self, mark: int) -> float | None:
        window = self.samples[mark:]
        return statistics.mean(window) if window else None

    def stop(self) -> None:
        self._stop.set()


# -- one N ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    streams: int
    min_fps: float
    mean_fps: float
    dropped: int
    gpu_util: float | None
    cpu_util: float
    p50_ms: float
    p99_ms: float
    decoders: str
    held: bool


def latencies(dbs: Sequence[str], start: float, end: float) -> list[float]:
    """Seconds from the decoded frame (the row's timestamp) to the model's answer, for frames captured in the window."""
    out: list[float] = []
    for db in dbs:
        if not os.path.exists(db):
            continue
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            rows = conn.execute(
                "SELECT done_at - timestamp FROM results WHERE status = 'complete' AND timestamp BETWEEN ? AND ?", (start, end)
            ).fetchall()
        out += [float(r[0]) for r in rows if r[0] is not None]
    return sorted(out)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="8,16,24,32,48,64,80,96,128", help="camera counts to try, growing")
    parser.add_argument("--seconds", type=float, default=5.0, help="window per N")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after every new camera wrote a row")
    parser.add_argument("--per-driver", type=int, default=4, help="cameras per SourceSinkDriver process")
    parser.add_argument("--decode", default="auto", choices=["auto", "cuda", "cpu"], help="VideoSource's decoder")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds for the whole run; no N starts past it")
    parser.add_argument("--batch", type=int, default=64, help="max batch of the GPU cells")
    parser.add_argument("--cpu-smoke", action="store_true", help="a tiny model and clip on the CPU: the self-check only")
    parser.add_argument("--write", type=Path, help="replace this markdown file's <!-- bench:cameras --> section")
    parser.add_argument("--probe-child", metavar="CLIP", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.probe_child:
        print(json.dumps(probe_decoders(args.probe_child)))
        return []
    began = time.monotonic()
    try:
        import psutil
    except ImportError:
        psutil = None

    from rvai_sdk.extensions.drivers.source_sink_driver import SourceSinkDriver
    from rvai_sdk.extensions.sinks.database_sink import DatabaseSink
    from rvai_sdk.extensions.sources.video_source import VideoSource
    from rvai_sdk.resources import CellResources
    from rvai_sdk.runtime import BatchingPolicy, Inference, init

    if args.cpu_smoke:
        width, height, clip_seconds, gpu = 160, 120, 1.0, False
        counts = [1, 2]
        args.seconds, args.warmup, args.batch = min(args.seconds, 2.0), 0.5, 8
    else:
        width, height, clip_seconds, gpu = 1920, 1080, 2.0, True
        counts = [int(n) for n in args.streams.split(",")]
    workdir = tempfile.mkdtemp(prefix="rvai-bench-cameras-")
    clip = os.path.join(workdir, f"clip-{height}p.mp4")
    frames = make_clip(clip, seconds=clip_seconds, width=width, height=height)
    print(f"clip: {frames} frames of {width}x{height} H.264 at {FPS} fps, looped; host {machine()}", flush=True)

    probe = run_probe(clip)
    print("decode probe (each option decodes the clip once, in a child process):")
    for p in probe:
        figures = f"{p['frames']} frames, {p['cpu_ms']:.1f} CPU ms/frame, {p['fps']:.0f} frames/s" if p["ok"] else ""
        print(f"  {p['name']}: {'works' if p['ok'] else 'FAILS'}; {figures} {p['why']}", flush=True)

    cells = ("preprocess", "classify", "stamp")
    policy = BatchingPolicy(max_batch_size=args.batch, max_batch_wait=0.005)
    inference = Inference(
        pipeline=pipeline(tiny=args.cpu_smoke),
        parameters={
            "preprocess": {"size": 32 if args.cpu_smoke else 224, "warmup_height": height, "warmup_width": width,
                           "warmup_batch": args.batch},
            "classify": {"size": 32 if args.cpu_smoke else 224, "warmup_batch": args.batch},
        },
        resources={ref: CellResources(gpus=1) for ref in cells[:2]} if gpu else {},
        batching={ref: policy for ref in cells},
    )
    gpu_sampler = GpuSampler() if gpu else None
    args.gpu_name = gpu_sampler.name if gpu_sampler else ""
    rows: list[Row] = []
    problems: list[str] = []
    fallbacks: set[str] = set()
    handles: list[Any] = []
    dbs: list[str] = []
    cams: list[str] = []
    camera_params = {"loop": True, "realtime": True, "drop": "drop_oldest", "buffer": 8, "decode": args.decode}
    spawn = 1.0  # seconds per new driver process, measured as they start
    with init("local") as rt, rt.start_inference(inference) as proc:
        for n in counts:
            new_drivers = -(-n // args.per_driver) - len(handles)
            step_cost = args.warmup + args.seconds + 6.0 + spawn * new_drivers
            if time.monotonic() - began + step_cost > args.budget:
                print(f"  N={n}: not started (the {args.budget:g} s budget would be exceeded)", flush=True)
                break
            t_spawn, spawned = time.monotonic(), 0
            while len(cams) < n:  # new cameras go to the last driver until it is full, then to a new one
                ref = f"cam-{len(cams)}"
                if not handles or len(cams) % args.per_driver == 0:
                    db = os.path.join(workdir, f"d{len(handles)}.db")
                    dbs.append(db)
                    spawned += 1
                    handles.append(
                        proc.add_driver(
                            f"cameras-{len(handles)}", SourceSinkDriver,
                            sources={ref: VideoSource(clip, params=camera_params)},
                            sinks={"db": DatabaseSink(f"sqlite:///{db}", params={"buffer": 4096})},
                        )
                    )
                else:
                    SourceSinkDriver.add_source_to(handles[-1], ref=ref, source=VideoSource(clip, params=camera_params))
                cams.append(ref)
            if spawned:
                spawn = (time.monotonic() - t_spawn) / spawned

            def snapshot() -> dict[str, dict[str, Any]]:
                merged: dict[str, dict[str, Any]] = {}
                for h in handles:
                    merged.update(h.stats()["sources"])
                return merged

            deadline = time.monotonic() + 90
            while not all(int(s["written"]) > 0 for s in snapshot().values()) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(args.warmup)
            before, t0, w0 = snapshot(), time.monotonic(), time.time()
            mark = gpu_sampler.mark() if gpu_sampler else 0
            if psutil is not None:
                psutil.cpu_percent()
            time.sleep(args.seconds)
            after, t1, w1 = snapshot(), time.monotonic(), time.time()
            cpu_util = psutil.cpu_percent() if psutil is not None else float("nan")
            elapsed = t1 - t0
            # frames answered per stream (counted one by one; rows reach SQLite in the sinks' batches)
            rates = [(int(after[r]["processed"]) - int(before[r]["processed"])) / elapsed for r in cams]
            dropped = sum(int(after[r]["dropped"]) - int(before[r]["dropped"]) for r in cams)
            failed = sum(int(after[r]["failed"]) - int(before[r]["failed"]) for r in cams)
            decoders: dict[str, int] = {}
            for r in cams:
                inner = after[r].get("source") or {}
                key = f"{inner.get('decoder', '?')} (RGB on the {inner.get('convert', 'cpu')})"
                decoders[key] = decoders.get(key, 0) + 1
                for why in ("decode_fallback", "convert_fallback"):
                    if inner.get(why):
                        fallbacks.add(str(inner[why]))
            time.sleep(0.5)  # rows of the window's last frames reach SQLite (the sinks write in batches)
            lat = latencies(dbs, w0, w1)
            pct = lambda q: 1000 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")  # noqa: E731
            held = min(rates) >= HELD * FPS and dropped == 0 and failed == 0
            row = Row(
                n, min(rates), statistics.mean(rates), dropped,
                gpu_sampler.mean_since(mark) if gpu_sampler else None, cpu_util, pct(0.5), pct(0.99),
                ", ".join(f"{k} {v}" for k, v in sorted(decoders.items())), held,
            )
            rows.append(row)
            util = f"{row.gpu_util:.0f}%" if row.gpu_util is not None else "n/a"
            print(
                f"  N={n}: per stream {row.min_fps:.1f} min / {row.mean_fps:.1f} mean frames/s, dropped {dropped}, "
                f"failed {failed}, GPU {util}, host CPU {cpu_util:.0f}%, latency p50 {row.p50_ms:.0f} ms p99 "
                f"{row.p99_ms:.0f} ms, decoders: {row.decoders}: {'held' if held else 'NOT held'}",
                flush=True,
            )
            if failed:
                problems.append(f"N={n}: {failed} frames failed in the pipeline")
            if not lat:
                problems.append(f"N={n}: no row of the window in SQLite")
            elif abs(len(lat) - sum(rates) * elapsed) > max(2 * n, 0.2 * len(lat)):
                problems.append(f"N={n}: {len(lat)} rows in SQLite for the window, but the drivers counted {sum(rates) * elapsed:.0f}")
            if args.write and not args.cpu_smoke:  # after every N: a run cut short still leaves its figures
                best = max((r.streams for r in rows if r.held), default=0)
                write_section(args.write, "cameras", render(rows, probe, best, fallbacks, args, gpu_sampler.how if gpu_sampler else "none"))
            if not held and not args.cpu_smoke:
                break
        for h in handles:
            h.stop()
    if gpu_sampler:
        gpu_sampler.stop()
    shutil.rmtree(workdir, ignore_errors=True)

    best = max((r.streams for r in rows if r.held), default=0)
    print(f"largest N held at {FPS} fps with no drop: {best}" + (" (--cpu-smoke: means nothing)" if args.cpu_smoke else ""))
    if fallbacks:
        print("decode fallbacks: " + "; ".join(sorted(fallbacks)))
    print("self-check: " + ("OK (every window has rows in SQLite that match the drivers' counts; nothing failed)" if not problems else "FAILED"))
    for problem in problems:
        print(f"  - {problem}")
    if args.write and not args.cpu_smoke:
        write_section(args.write, "cameras", render(rows, probe, best, fallbacks, args, gpu_sampler.how if gpu_sampler else "none"))
    if problems:
        raise SystemExit(1)
    return rows


def render(rows: Sequence[Row], probe: Sequence[dict[str, Any]], best: int, fallbacks: set[str], args: Any, util_how: str) -> str:
    """The markdown of the bench:cameras section."""
    gpu = os.environ.get("RVAI_GPU_NAME") or getattr(args, "gpu_name", "") or "the GPU of this run (name not read)"
    lines = [
        f"### Many cameras: 1080p30 H.264 → decode → GPU preprocess → ResNet-50 fp16 → SQLite",
        "",
        f"`python benchmarks/bench_cameras.py --seconds {args.seconds:g}` on **{gpu}**, host {machine()}; "
        f"{args.per_driver} cameras per driver process, decode `{args.decode}`, window {args.seconds:g} s per N, GPU "
        f"utilisation from {util_how}:",
        "",
        "| cameras | frames/s per stream, min / mean | dropped | GPU util | host CPU | latency p50 / p99 | decoders | held |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        util = f"{r.gpu_util:.0f}%" if r.gpu_util is not None else "n/a"
        lines.append(
            f"| {r.streams} | {r.min_fps:.1f} / {r.mean_fps:.1f} | {r.dropped} | {util} | {r.cpu_util:.0f}% | "
            f"{r.p50_ms:.0f} / {r.p99_ms:.0f} ms | {r.decoders} | {'yes' if r.held else 'no'} |"
        )
    lines += ["", f"Largest N held at {FPS} fps with no drop: **{best}** (goal >= 64).", "", "Decode options probed on this machine:", ""]
    for p in probe:
        figures = f" {p['cpu_ms']:.1f} CPU ms/frame, {p['fps']:.0f} frames/s;" if p["ok"] else ""
        lines.append(f"- {p['name']}: {'works' if p['ok'] else 'fails'};{figures} {p['why']}")
    if fallbacks:
        lines.append(f"- VideoSource fell back to the CPU: {'; '.join(sorted(fallbacks))}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
