"""Anomaly engine: streaming models of how each device pair and device normally talks.

OT traffic is periodic: an HMI reads the same registers of the same PLC every 250 ms for years. The
engine learns, per *channel*, what one time bin of that traffic looks like, and alerts when bins
stop looking like it. A channel is a device pair over one protocol (``10.10.2.13 -> 10.10.1.10
modbus``) or one device over one protocol (``* -> 10.10.1.10 modbus``: every client together, which
also covers clients never seen while learning).

Two sources feed it, both aggregated per bin with numpy, never per packet in Python:

- **protocol messages** (Modbus, S7comm, CIP explicit and I/O messages, DNP3 application fragments)
  per ``bin_seconds`` (10 s): requests, responses, mean message size, request period (median
  inter-arrival time), period regularity (coefficient of variation of the inter-arrival times) and
  the function-code mix;
- **short flows** (at most ``short_flow_seconds`` long, whatever the protocol, dissected or not) per
  ``flow_bin_seconds`` (60 s): connections and packets. This is where floods of SYNs or datagrams
  show, which never become protocol messages.

The model is Kitsune's damped incremental statistics: for every channel and feature a weight, a
linear sum and a sum of squares, all decayed by ``2 ** (-age / half_life)``, which give a mean and a
variance in O(1) memory and are plain numbers, stored as JSON in the baseline file. They are kept
as numpy arrays over all channels (one operation per bin for every channel), which is why river's
per-object statistics are not used. Bins in which a
channel was idle count as zeros; counts are judged against the bins in which the channel was active
(the conditional moments follow from the same sums), so a maintenance session that comes every few
minutes is judged against the other sessions, not against the silence between them.

A training window (the ``--learn`` captures, or the first ``--learn-minutes``) trains the model; after
it the model is frozen and judges. A feature deviates when its z-score (against a standard deviation
floored at ``relative_floor`` of the mean) reaches ``threshold`` and the change is material (a factor
``min_ratio``); an alert fires after ``consecutive_bins`` deviating bins in a row, or at once for a
deviation of ``burst_factor * threshold``. Every alert lists the features that deviated, expected
against observed. No training, no anomaly alerts.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from fieldward.detect.engine import AlertBook, DetectionContext, Detector
from fieldward.detect.model import AlertType, Severity
from fieldward.detect.settings import AnomalySettings
from fieldward.protocols.base import Event

logger = logging.getLogger(__name__)

ENGINE = "anomaly"
MODEL_FORMAT = 1
NS = 1_000_000_000
ANY = "*"
NONE: Final = np.iinfo(np.int64).max
DENSE_LIMIT: Final = 1 << 22
"""Cells up to which per-cell tallies use a dense bincount instead of a sort."""
FLOW_CACHE: Final = 1 << 16
"""Live flows whose channels are remembered (the cache is emptied past this; it refills itself)."""
JITTER_FLOOR: Final = 0.05
"""Smallest standard deviation of the inter-arrival CV used in its z-score."""
SLICE_BINS: Final = 64
"""Bins whose features are computed in one vectorized pass (bounds the memory of a long close)."""
GAP: Final = -(1 << 62)
"""Marks a gap in the capture in the list of bins to process."""
MAX_LABELS = 128
"""Distinct function codes kept (all protocols together); more share an ``other`` column."""
VALUE_LIMIT = 1e12
"""Feature values are clipped to +-this before they enter the sums: a hostile capture cannot
overflow the squares to infinity."""

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]


# ---------------------------------------------------------------------------------------- alert types

VERIFY = (
    "Compare with the process owner's expectations: a planned change (new HMI screen, recipe, "
    "maintenance) is normal and can be learned; otherwise inspect the source host."
)


def _type(
    name: str, title: str, severity: Severity, mitre: tuple[str, ...], description: str, fix: str = VERIFY
) -> AlertType:
    return AlertType(f"{ENGINE}.{name}", title, severity, description, fix, mitre)


RATE = _type(
    "rate_change",
    "Traffic volume changed",
    Severity.MEDIUM,
    ("T0814", "T0806"),
    "The number of requests, responses, connections or packets of a device pair (or towards a device) "
    "left the range learned for it: a flood, a brute force of I/O commands, or a poll rate change.",
    "Find what changed on the source host. A flood or a burst of commands from an unexpected "
    "program is an attack on availability or control: block the source.",
)
SIZE = _type(
    "size_change",
    "Message size changed",
    Severity.LOW,
    ("T0802", "T0861"),
    "The mean size of the protocol messages of a device pair changed: different or many more "
    "registers, tags or blocks are read or written than while learning.",
)
PERIODICITY = _type(
    "periodicity_break",
    "Periodic polling changed",
    Severity.MEDIUM,
    ("T0831", "T0830"),
    "A periodic poll changed its period or became irregular: a new program polls the device, "
    "messages are injected between the cyclic ones, or something in the path delays them.",
)
FUNCTION_MIX = _type(
    "function_mix_change",
    "Function-code mix changed",
    Severity.HIGH,
    ("T0855", "T0836", "T0831"),
    "The shares of the function codes (Modbus functions, S7 jobs, CIP services, DNP3 functions) "
    "between two devices changed: typically writes or commands where the learned traffic read.",
)
SILENT = _type(
    "silent_device",
    "Periodic traffic stopped",
    Severity.HIGH,
    ("T0814", "T0815", "T0881"),
    "A device pair that exchanged messages in (almost) every learned bin went silent, or a device "
    "stopped answering requests that keep coming.",
    "Check the device and its client: a crashed or stopped controller, a broken link or a denial "
    "of service means the process is no longer visible or controlled.",
)
ALERT_TYPES: Final = (RATE, SIZE, PERIODICITY, FUNCTION_MIX, SILENT)


# ---------------------------------------------------------------------------------------- sources


FUTURE_SKEW_NS = 3600 * 1_000_000_000
"""A timestamp this far beyond the newest one seen is a jump of the clock (see ``_advance``)."""
JUMP_SUPPORT = 64
"""Timestamps beyond the skew needed before the watermark follows the jump."""


@dataclass(frozen=True, slots=True)
class Source:
    """How one event log becomes channel messages: its protocol name in alerts, the column with
    the function code (the mix), the column with the message size, and how codes are named."""

    protocol: str
    label: str | None
    size: str | None
    server_ports: tuple[int, ...] = ()
    """Ports of the server side (empty: peers, both sides alike)."""
    code_name: str = "FC"
    hex_codes: bool = False
    fallback_label: str | None = None
    """Column naming the message when ``label`` is empty (S7 userdata has no function code)."""

    @property
    def columns(self) -> tuple[str, ...]:
        own = (self.label, self.size, self.fallback_label)
        return ("ts", "orig_h", "resp_h", "orig_p", "resp_p", "is_orig", "flow_id", *(c for c in own if c))


SOURCES: Final[dict[str, Source]] = {
    "modbus": Source("modbus", "function_code", "len", (502,)),
    "s7comm": Source("s7comm", "function_code", None, (102,), "function", fallback_label="rosctr_name"),
    "cip": Source("enip", "cip_service_code", None, (44818,), "service", hex_codes=True),
    "cip_io": Source("cip_io", None, "data_length"),
    "dnp3_application": Source("dnp3", "fc", "len", (20000,)),
}
"""The message logs the engine reads. CIP I/O has no function code; S7comm and CIP carry no size
of their own in these logs."""


GETTERS: Final = {log: attrgetter(*source.columns) for log, source in SOURCES.items()}
"""The fields of an event that arrives alone (not in a table), as one tuple."""


# ---------------------------------------------------------------------------------------- features

REQUESTS, RESPONSES, MEAN_SIZE, PERIOD, JITTER, ACTIVE, ANSWERED = range(7)
MESSAGE_FEATURES: Final = ("requests", "responses", "mean_size", "period", "jitter", "active", "answered")
MESSAGE_COUNTS: Final = (True, True, False, False, False, True, False)
"""Features that are 0 in a bin without traffic (the others are undefined there)."""

FLOWS, PACKETS, BYTES, FLOW_ACTIVE = range(4)
FLOW_FEATURES: Final = ("flows", "packets", "bytes", "active")
FLOW_COUNTS: Final = (True, True, True, True)


class DampedStats:
    """Damped incremental statistics (Kitsune's, one decay rate) of ``F`` features of many channels.

    Per channel and feature: weight ``w``, linear sum ``ls`` and squared sum ``ss``, each multiplied
    by ``decay`` at every update before the new value is added. Mean ``ls / w`` and variance
    ``ss / w - mean**2`` follow at any time. A missing value (NaN) only decays the sums. Channels
    added later start with the weight of the bins already seen for features that are zero when a
    channel is idle (``counts``): they were observed, and were zero.
    """

    def __init__(self, features: int, counts: Sequence[bool]) -> None:
        self.features = features
        self.counts = np.asarray(counts, dtype=bool)
        self.w = np.zeros((0, features))
        self.ls = np.zeros((0, features))
        self.ss = np.zeros((0, features))
        self.seen = 0.0
        """Damped number of updates (the weight of a channel present in all of them)."""

    @property
    def channels(self) -> int:
        return int(self.w.shape[0])

    def grow(self, channels: int) -> None:
        """Add channels up to ``channels``, idle so far."""
        extra = channels - self.channels
        if extra <= 0:
            return
        w = np.zeros((extra, self.features))
        w[:, self.counts] = self.seen
        self.w = np.vstack([self.w, w])
        self.ls = np.vstack([self.ls, np.zeros((extra, self.features))])
        self.ss = np.vstack([self.ss, np.zeros((extra, self.features))])

    def update(self, values: F64, decay: float) -> None:
        """One bin: ``values`` is channels x features, NaN where a feature is undefined."""
        valid = np.isfinite(values)
        x = np.where(
            valid, np.clip(np.nan_to_num(values, posinf=0.0, neginf=0.0), -VALUE_LIMIT, VALUE_LIMIT), 0.0
        )
        self.w = self.w * decay + valid
        self.ls = self.ls * decay + x
        self.ss = self.ss * decay + x * x
        self.seen = self.seen * decay + 1.0

    def moments(self) -> tuple[F64, F64, F64]:
        """Weight, mean and variance per channel and feature (0 where the weight is 0)."""
        return _moments(self.w, self.ls, self.ss)

    def to_json(self, rows: Sequence[int]) -> list[list[list[float]]]:
        return [[_finite_list(a[row]) for a in (self.w, self.ls, self.ss)] for row in rows]


def _moments(w: F64, ls: F64, ss: F64) -> tuple[F64, F64, F64]:
    safe = np.where(w > 0, w, 1.0)
    mean = np.where(w > 0, ls / safe, 0.0)
    var = np.where(w > 0, np.maximum(ss / safe - mean * mean, 0.0), 0.0)
    return w, np.nan_to_num(mean), np.nan_to_num(var)


def _finite_list(values: F64) -> list[float]:
    return [float(v) if math.isfinite(v) else 0.0 for v in values.tolist()]


def _stable_order(keys: I64, bound: int) -> I64:
    """Stable argsort of non-negative ``keys`` below ``bound`` (a radix sort when they fit 16 bits)."""
    if bound <= 1 << 16:
        order: I64 = np.argsort(keys.astype(np.uint16), kind="stable")
    else:
        order = np.argsort(keys, kind="stable")
    return order


@dataclass(slots=True)
class BinFeatures:
    """Feature vectors of consecutive bins of protocol messages, for every channel."""

    x: F64
    """bins x channels x features (NaN where a feature is undefined)."""
    first_ts: I64
    """bins x channels: time of the channel's first message in the bin (-1: none)."""
    first_flow: I64
    """bins x channels: flow of that message (-1: none)."""
    mix: tuple[I64, I64, I64, F64]
    """Requests per (bin, channel, function code) present: positions, channels, codes, counts."""


def message_features(
    bins: int,
    parent: I64,
    pos: I64,
    segment: I64,
    ch: I64,
    dev: I64,
    ts: I64,
    request: Bool,
    size: F64,
    label: I64,
    flow: I64,
    last_request: I64,
) -> tuple[BinFeatures, I64]:
    """Features of ``bins`` consecutive bins of messages, and the updated last request per channel.

    ``parent`` holds the device channel of every channel (-1: none, or a device channel itself).
    Per message: ``pos`` its bin (0 .. bins - 1), ``segment`` the stretch of capture it is in (a gap
    in the capture starts a new one: no inter-arrival time spans it; segment 0 continues the bins
    before), ``ch`` its pair channel and ``dev`` its device channel (-1: none), ``size`` (NaN:
    unknown), ``label`` its function code (-1: none). ``last_request`` holds each channel's previous
    request time (-1: none), where the first inter-arrival time of segment 0 starts.

    Messages are counted in their pair channel (or in their device channel when the pair has none),
    then every pair channel is added to its device channel.
    """
    channels = parent.shape[0]
    cells = bins * channels
    shape = (bins, channels)
    x = np.full((bins, channels, len(MESSAGE_FEATURES)), np.nan)
    ids = np.where(ch >= 0, ch, dev)
    keep = ids >= 0
    if not keep.all():
        pos, segment, ch, ids, ts, label, flow = (
            pos[keep],
            segment[keep],
            ch[keep],
            ids[keep],
            ts[keep],
            label[keep],
            flow[keep],
        )
        request, size = request[keep], size[keep]
    key = pos * channels + ids
    sized = np.isfinite(size)
    sums = np.stack(
        [
            np.bincount(key[request], minlength=cells),
            np.bincount(key[~request], minlength=cells),
            np.bincount(key[sized], minlength=cells),
            np.bincount(key[sized], weights=np.clip(size[sized], 0.0, VALUE_LIMIT), minlength=cells),
        ]
    ).astype(np.float64)
    # First message of each channel and bin: the alert's time and evidence.
    first_ts = np.full(cells, NONE, dtype=np.int64)
    first_flow = np.full(cells, -1, dtype=np.int64)
    np.minimum.at(first_ts, key, ts)
    earliest = ts == first_ts[key]
    first_flow[key[earliest]] = flow[earliest]
    # Function codes of the requests.
    coded = request & (label >= 0)
    width = max(1, int(label.max(initial=-1)) + 1)
    mix_keys = key[coded] * width + label[coded]
    if cells * width <= DENSE_LIMIT:
        tally = np.bincount(mix_keys, minlength=cells * width)
        mix_key = np.flatnonzero(tally)
        mix_count = tally[mix_key]
    else:
        mix_key, mix_count = np.unique(mix_keys, return_counts=True)
    cell, code = mix_key // width, mix_key % width
    mix_pos, mix_ch = cell // channels, cell % channels
    # Pair channels add up into their device channels.
    pairs = np.flatnonzero(parent >= 0)
    if pairs.shape[0]:
        up = parent[pairs]
        flat = sums.reshape(4, bins, channels)
        np.add.at(flat.transpose(2, 0, 1), up, flat.transpose(2, 0, 1)[pairs])
        grid_ts, grid_flow = first_ts.reshape(shape), first_flow.reshape(shape)
        np.minimum.at(grid_ts.T, up, grid_ts.T[pairs])
        winner = grid_ts[:, pairs] == grid_ts[:, up]
        rows, cols = np.nonzero(winner & (grid_ts[:, pairs] != NONE))
        grid_flow[rows, up[cols]] = grid_flow[rows, pairs[cols]]
        rolled = parent[mix_ch] >= 0
        order = np.argsort(np.concatenate([mix_pos, mix_pos[rolled]]), kind="stable")
        mix_pos = np.concatenate([mix_pos, mix_pos[rolled]])[order]
        mix_ch = np.concatenate([mix_ch, parent[mix_ch[rolled]]])[order]
        code = np.concatenate([code, code[rolled]])[order]
        mix_count = np.concatenate([mix_count, mix_count[rolled]])[order]
    requests, responses, count, total = (a.reshape(shape) for a in sums)
    x[..., REQUESTS] = requests
    x[..., RESPONSES] = responses
    x[..., ACTIVE] = requests > 0
    x[..., ANSWERED] = np.where(requests > 0, (responses > 0).astype(np.float64), np.nan)
    x[..., MEAN_SIZE] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    first_ts[first_ts == NONE] = -1
    mix = (mix_pos, mix_ch, code, mix_count.astype(np.float64))
    # Inter-arrival times of the requests of each device pair (not of device channels: their
    # requests come from several clients).
    last = last_request.copy()
    mask = request & (ch >= 0)
    if mask.any():
        rch, rts, rpos, rseg = ch[mask], ts[mask], pos[mask], segment[mask]
        # Messages arrive in time order per channel: a stable sort by channel keeps it (a rare
        # message out of order gives a negative inter-arrival time, which is dropped).
        order = _stable_order(rch, channels)
        rch, rts, rpos, rseg = rch[order], rts[order], rpos[order], rseg[order]
        first = np.ones(rch.shape[0], dtype=bool)
        first[1:] = (rch[1:] != rch[:-1]) | (rseg[1:] != rseg[:-1])
        previous = np.empty_like(rts)
        previous[1:] = rts[:-1]
        previous[first] = np.where(rseg[first] == 0, last[rch[first]], -1)
        iat = (rts - previous).astype(np.float64) / NS
        good = (previous >= 0) & (iat >= 0)
        ends = np.ones(rch.shape[0], dtype=bool)
        ends[:-1] = rch[1:] != rch[:-1]
        last[rch[ends]] = rts[ends]
        gkey, giat = (rpos * channels + rch)[good], iat[good]
        if gkey.shape[0]:
            n = np.bincount(gkey, minlength=cells)
            s1 = np.bincount(gkey, weights=giat, minlength=cells)
            s2 = np.bincount(gkey, weights=giat * giat, minlength=cells)
            mean = np.where(n > 0, s1 / np.maximum(n, 1), 0.0)
            std = np.sqrt(np.maximum(np.where(n > 0, s2 / np.maximum(n, 1), 0.0) - mean * mean, 0.0))
            jitter = np.where((n >= 3) & (mean > 0), std / np.where(mean > 0, mean, 1.0), np.nan)
            x[..., JITTER] = jitter.reshape(shape)
            by_iat = np.argsort(giat)
            order = by_iat[_stable_order(gkey[by_iat], cells)]
            sorted_keys = gkey[order]
            starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
            sizes_ = np.diff(np.append(starts, sorted_keys.shape[0]))
            groups = sorted_keys[starts]
            median = giat[order][starts + sizes_ // 2]
            period = np.full(cells, np.nan)
            period[groups[sizes_ >= 2]] = median[sizes_ >= 2]
            x[..., PERIOD] = period.reshape(shape)
    return BinFeatures(x, first_ts.reshape(shape), first_flow.reshape(shape), mix), last


# ---------------------------------------------------------------------------------------- judging


@dataclass(slots=True)
class Deviation:
    """One feature of one bin that left its learned range."""

    feature: str
    expected: float
    observed: float
    z: float
    text: str


@dataclass(slots=True)
class Finding:
    """What one channel's bin looked like when it deviated: the alert type it points to, the
    largest z-score and every deviation."""

    channel: int
    alert_type: AlertType
    score: float
    deviations: list[Deviation] = field(default_factory=list)
    mix: dict[str, tuple[float, float]] = field(default_factory=dict)


def _z(observed: F64, mean: F64, var: F64, floor: F64 | float) -> F64:
    scale = np.sqrt(np.maximum(var + np.square(floor), 1e-12))
    z: F64 = np.nan_to_num((observed - mean) / scale, nan=0.0, posinf=0.0, neginf=0.0)
    return z


def _ratio(observed: F64, mean: F64, offset: float) -> F64:
    a = np.abs(observed) + offset
    b = np.abs(mean) + offset
    ratio: F64 = np.maximum(a, b) / np.maximum(np.minimum(a, b), 1e-12)
    return ratio


@dataclass(slots=True)
class Judgement:
    """Per-channel verdict arrays of one bin (vectorized), with the z-scores behind them."""

    score: F64
    deviated: Bool
    z: F64
    flags: Bool
    """channels x features: which features deviated."""
    silent: Bool
    mute: Bool
    """Channels that stopped answering (not just stopped)."""


SILENCE: Final = frozenset({"silence", "unanswered"})
COUNTS: Final = frozenset({"requests", "responses", "flows", "packets", "bytes"})


def classify(deviations: Sequence[Deviation]) -> AlertType:
    """The alert type of a deviating bin: silence if a periodic channel went quiet, else the type of
    the most deviating feature (ties: function-code mix, more traffic, period, less traffic, size)."""
    if any(d.feature in SILENCE for d in deviations):
        return SILENT

    def kind(d: Deviation) -> tuple[int, AlertType]:
        if d.feature == "function_mix":
            return 0, FUNCTION_MIX
        if d.feature in COUNTS:
            return (1, RATE) if d.z > 0 else (3, RATE)
        if d.feature in ("period", "jitter"):
            return 2, PERIODICITY
        return 4, SIZE

    best = max(deviations, key=lambda d: (abs(d.z), -kind(d)[0]), default=None)
    return SIZE if best is None else kind(best)[1]


def _fmt(value: float, unit: str = "") -> str:
    if not math.isfinite(value):
        return "?"
    if abs(value) >= 100 or abs(value - round(value)) < 0.005:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text}{unit}"


def _fmt_period(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s"


# ---------------------------------------------------------------------------------------- channels


class Channels:
    """The channels of one source: keys, damped statistics, function-code mixes and the runtime
    state (consecutive deviating bins, last request, last flow) of each."""

    def __init__(self, features: tuple[str, ...], counts: Sequence[bool], max_channels: int) -> None:
        self.features = features
        self.keys: list[tuple[str, str, str]] = []
        self.index: dict[tuple[str, str, str], int] = {}
        self.parent = np.zeros(0, dtype=np.int64)
        """Device channel of each pair channel (-1 for device channels)."""
        self.stats = DampedStats(len(features), counts)
        self.labels: list[str] = []
        self.label_index: dict[str, int] = {}
        self.mix = np.zeros((0, 0))
        """Damped request counts per channel and function code (label)."""
        self.max_channels = max_channels
        self.streak = np.zeros(0, dtype=np.int64)
        self.last_request = np.zeros(0, dtype=np.int64)
        self.last_flow = np.zeros(0, dtype=np.int64)
        self.dropped = 0
        """Channels not created because ``max_channels`` was reached."""
        self._orphans: dict[tuple[str, str], list[int]] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, keys: Sequence[tuple[str, str, str]]) -> None:
        """Create the channels of ``keys`` not there yet (idle so far), up to ``max_channels``; a
        pair channel is linked to its device channel when that exists."""
        fresh = list(dict.fromkeys(k for k in keys if k not in self.index))
        room = max(0, self.max_channels - len(self.keys))
        self.dropped += max(0, len(fresh) - room)
        fresh = fresh[:room]
        if not fresh:
            return
        first = len(self.keys)
        for offset, key in enumerate(fresh):
            self.keys.append(key)
            self.index[key] = first + offset
        extra = len(fresh)
        self.stats.grow(len(self.keys))
        self.mix = np.vstack([self.mix, np.zeros((extra, self.mix.shape[1]))])
        self.streak = np.concatenate([self.streak, np.zeros(extra, dtype=np.int64)])
        self.last_request = np.concatenate([self.last_request, np.full(extra, -1, dtype=np.int64)])
        self.last_flow = np.concatenate([self.last_flow, np.full(extra, -1, dtype=np.int64)])
        self.parent = np.concatenate([self.parent, np.full(extra, -1, dtype=np.int64)])
        for channel in range(first, len(self.keys)):
            src, dst, protocol = self.keys[channel]
            if src != ANY:
                device = self.index.get((ANY, dst, protocol), -1)
                self.parent[channel] = device
                if device < 0:
                    self._orphans.setdefault((dst, protocol), []).append(channel)
            else:
                for pair in self._orphans.pop((dst, protocol), ()):
                    self.parent[pair] = channel

    def label(self, key: str) -> int:
        """Column of a function code in :attr:`mix`; past ``MAX_LABELS`` codes of hostile traffic
        share one ``other`` column per protocol."""
        found = self.label_index.get(key)
        if found is not None:
            return found
        if len(self.labels) >= MAX_LABELS:
            other = key.partition("|")[0] + "|other"
            if other in self.label_index:
                return self.label_index[other]
            key = other
        self.label_index[key] = len(self.labels)
        self.labels.append(key)
        self.mix = np.hstack([self.mix, np.zeros((self.mix.shape[0], 1))])
        return len(self.labels) - 1

    # persistence ----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        rows = list(range(len(self.keys)))
        stats = self.stats.to_json(rows)
        channels = []
        for row in rows:
            src, dst, protocol = self.keys[row]
            item: dict[str, Any] = {"src": src, "dst": dst, "protocol": protocol, "stats": stats[row]}
            if self.labels:
                mix = {
                    self.labels[i]: float(v)
                    for i, v in enumerate(self.mix[row].tolist())
                    if v > 0 and math.isfinite(v)
                }
                if mix:
                    item["mix"] = mix
            channels.append(item)
        return {"features": list(self.features), "seen": float(self.stats.seen), "channels": channels}

    def load(self, data: Any) -> None:
        """Restore channels saved by :meth:`to_json` (ValueError, TypeError or KeyError if malformed)."""
        if list(data["features"]) != list(self.features):
            raise ValueError("feature list differs")
        seen = float(data["seen"])
        if not math.isfinite(seen) or seen < 0:
            raise ValueError("bad weight")
        self.stats.seen = seen
        items = list(data["channels"])
        keys = [(str(item["src"]), str(item["dst"]), str(item["protocol"])) for item in items]
        self.add(keys)
        for key, item in zip(keys, items, strict=True):
            channel = self.index.get(key)
            if channel is None:
                continue
            arrays = np.asarray(item["stats"], dtype=np.float64)
            if arrays.shape != (3, len(self.features)) or not np.isfinite(arrays).all():
                raise ValueError(f"bad statistics for {key}")
            self.stats.w[channel], self.stats.ls[channel], self.stats.ss[channel] = arrays
            for label, value in dict(item.get("mix", {})).items():
                count = float(value)
                if math.isfinite(count) and count > 0:
                    column = self.label(str(label))  # may widen the matrix: index it after
                    self.mix[channel, column] = count


@dataclass(slots=True)
class Expectation:
    """What a frozen model expects of every channel: computed once from the damped sums, then
    every judged bin is a handful of vectorized comparisons."""

    channels: int
    labels: int
    trained: Bool
    count_columns: tuple[int, ...]
    count_mean: F64
    count_var: F64
    judged: Bool
    """channels x (mean size, period, jitter): enough training bins with the feature defined."""
    mean: F64
    var: F64
    active_share: F64
    answered_share: F64
    periodic: Bool
    """Channels active in (almost) every training bin with at least one request a bin."""
    answering: Bool
    """Channels whose requests were answered in (almost) every training bin."""
    share: F64
    """channels x function codes: learned share of each code."""
    has_mix: Bool

    @classmethod
    def of(
        cls,
        model: Channels,
        count_columns: tuple[int, ...],
        active: int,
        s: AnomalySettings,
        bin_seconds: float,
    ) -> Expectation:
        stats = model.stats
        min_bins = s.min_training_minutes * 60.0 / bin_seconds
        n = len(model)
        w_all = stats.w[:, active]
        w_active = stats.ls[:, active]
        trained = w_all >= min_bins
        conditional = w_active >= s.min_active_bins
        count_mean = np.zeros((n, len(count_columns)))
        count_var = np.zeros((n, len(count_columns)))
        for j, column in enumerate(count_columns):
            _, m_all, v_all = _moments(w_all, stats.ls[:, column], stats.ss[:, column])
            _, m_act, v_act = _moments(w_active, stats.ls[:, column], stats.ss[:, column])
            count_mean[:, j] = np.where(conditional, m_act, m_all)
            count_var[:, j] = np.where(conditional, v_act, v_all)
        _, active_share, _ = _moments(w_all, stats.ls[:, active], stats.ss[:, active])
        others = (MEAN_SIZE, PERIOD, JITTER) if stats.features == len(MESSAGE_FEATURES) else ()
        judged = np.zeros((n, len(others)), dtype=bool)
        mean = np.zeros((n, len(others)))
        var = np.zeros((n, len(others)))
        for j, column in enumerate(others):
            w, mean[:, j], var[:, j] = _moments(stats.w[:, column], stats.ls[:, column], stats.ss[:, column])
            judged[:, j] = trained & (w >= min_bins)
        answered_share = np.zeros(n)
        answering = np.zeros(n, dtype=bool)
        periodic = np.zeros(n, dtype=bool)
        if others:
            w_answered, answered_share, _ = _moments(
                stats.w[:, ANSWERED], stats.ls[:, ANSWERED], stats.ss[:, ANSWERED]
            )
            answering = trained & (w_answered >= min_bins) & (answered_share >= s.silent_activity)
            periodic = trained & (active_share >= s.silent_activity) & (count_mean[:, 0] >= 1.0)
        totals = model.mix.sum(axis=1) if model.mix.size else np.zeros(n)
        share = model.mix / np.where(totals > 0, totals, 1.0)[:, None] if model.mix.size else np.zeros((n, 0))
        return cls(
            channels=n,
            labels=len(model.labels),
            trained=trained,
            count_columns=count_columns,
            count_mean=count_mean,
            count_var=count_var,
            judged=judged,
            mean=mean,
            var=var,
            active_share=active_share,
            answered_share=answered_share,
            periodic=periodic,
            answering=answering,
            share=share,
            has_mix=trained & (totals > 0),
        )

    def judge_counts(
        self, x: F64, s: AnomalySettings, upward_only: bool, min_increase: Sequence[float] = ()
    ) -> tuple[F64, Bool]:
        """z-scores and deviation flags (channels x count columns) of the counts of one bin.

        Counts of an active bin are judged against the active training bins when there are at
        least ``min_active_bins`` of them, else against all of them (idle ones as zeros); a count
        deviates when its z reaches the threshold and it changed by ``min_ratio`` (with 1 added to
        both sides, so that 0 -> 1 is not infinite) and, upwards, by ``min_increase`` (per column).
        """
        observed = x[:, list(self.count_columns)]
        present = np.isfinite(observed) & (observed > 0)
        obs = np.where(present, observed, 0.0)
        mean, var = self.count_mean, self.count_var
        z = _z(obs, mean, var, np.sqrt(np.square(s.relative_floor * mean) + 1.0))
        flags = present & (_ratio(obs, mean, 1.0) >= s.min_ratio) & (np.abs(z) >= s.threshold)
        flags &= self.trained[:, None]
        if upward_only:
            flags &= z > 0
        if min_increase:
            flags &= (obs - mean < 0) | (obs - mean >= np.asarray(min_increase, dtype=np.float64))
        return z, flags


# ---------------------------------------------------------------------------------------- detector


@dataclass(slots=True)
class _Messages:
    """Protocol messages waiting for their bin to close (numpy columns)."""

    ts: I64
    ch: I64
    dev: I64
    request: Bool
    size: F64
    label: I64
    flow: I64


@dataclass(slots=True)
class _FlowRows:
    """Short flows, pre-aggregated per (pair channel, device channel, bin)."""

    bin: I64
    ch: I64
    dev: I64
    flows: F64
    packets: F64
    bytes: F64
    ts: I64
    flow: I64


def _concat_messages(parts: list[_Messages]) -> _Messages:
    return _Messages(*(np.concatenate([getattr(p, name) for p in parts]) for name in _Messages.__slots__))


def _distinct(values: I64) -> I64:
    """Sorted distinct values (of bin numbers: usually a narrow range, counted without a sort)."""
    if values.shape[0] == 0:
        return values
    low = int(values.min())
    span = int(values.max()) - low + 1
    if span <= DENSE_LIMIT:
        found: I64 = np.flatnonzero(np.bincount(values - low, minlength=span)) + low
        return found
    return np.unique(values)


def _empty_messages() -> _Messages:
    ints = np.zeros(0, dtype=np.int64)
    return _Messages(ints, ints, ints, np.zeros(0, dtype=bool), np.zeros(0), ints, ints)


def _take_messages(rows: _Messages, index: Any) -> _Messages:
    return _Messages(*(getattr(rows, name)[index] for name in _Messages.__slots__))


def _concat_flows(parts: list[_FlowRows]) -> _FlowRows:
    return _FlowRows(*(np.concatenate([getattr(p, name) for p in parts]) for name in _FlowRows.__slots__))


def _take_flows(rows: _FlowRows, index: Any) -> _FlowRows:
    return _FlowRows(*(getattr(rows, name)[index] for name in _FlowRows.__slots__))


def _ns(column: pa.ChunkedArray | pa.Array) -> I64:
    values = column.cast(pa.int64())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return np.asarray(values.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)


def _numbers(column: pa.ChunkedArray | pa.Array) -> F64:
    values = column.cast(pa.float64())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)


def _mask(values: pa.ChunkedArray | pa.Array) -> Bool:
    filled = pc.fill_null(values, False)
    if isinstance(filled, pa.ChunkedArray):
        filled = filled.combine_chunks()
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=bool)


def _encode(values: pa.Array) -> tuple[I64, list[Any]]:
    """Dictionary codes of ``values`` and the distinct values (C++ hashing, no Python per row)."""
    encoded = values.dictionary_encode()
    codes = np.asarray(encoded.indices.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    return codes, encoded.dictionary.to_pylist()


def _addresses(
    orig: pa.ChunkedArray | pa.Array, resp: pa.ChunkedArray | pa.Array
) -> tuple[I64, I64, list[str]]:
    """Both address columns coded against one list of the distinct addresses."""
    n = len(orig)
    both = pa.concat_arrays([_strings(orig), _strings(resp)])
    codes, names = _encode(both)
    return codes[:n], codes[n:], [str(name) for name in names]


def _strings(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    values = pc.fill_null(column.cast(pa.string()), "")
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _clock(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / NS, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


class AnomalyDetector(Detector):
    """Streaming per-channel models of rates, sizes, periodicity and function-code mix."""

    name: ClassVar[str] = ENGINE
    alert_types: ClassVar[tuple[AlertType, ...]] = ALERT_TYPES
    logs: ClassVar[frozenset[str]] = frozenset(SOURCES)

    def __init__(self, alerts: AlertBook, context: DetectionContext | None = None) -> None:
        super().__init__(alerts, context)
        s = self.settings = self.context.settings.anomaly
        self.bin_ns = max(1, round(s.bin_seconds * NS))
        self.flow_bin_ns = max(1, round(s.flow_bin_seconds * NS))
        half_life = max(s.half_life_hours, 1e-9) * 3600.0
        self.decay = 2.0 ** (-s.bin_seconds / half_life)
        self.flow_decay = 2.0 ** (-s.flow_bin_seconds / half_life)
        self.messages = Channels(MESSAGE_FEATURES, MESSAGE_COUNTS, s.max_channels)
        self.flows = Channels(FLOW_FEATURES, FLOW_COUNTS, s.max_channels)
        self._pending: list[_Messages] = []
        self._flow_cache: dict[int, tuple[int, int, bool]] = {}
        self._expected: dict[int, Expectation] = {}
        """The frozen models' expectations (dropped whenever a model trains)."""
        """Pair channel, device channel and direction of the live flows of protocol messages."""
        self._buffer: dict[str, list[tuple[Any, ...]]] = {}
        self._flow_pending: list[_FlowRows] = []
        self._flow_observed: set[int] = set()
        self._first_ts: int | None = None
        self._last_ts = -1
        self._jump_support = 0
        """Timestamps seen beyond the watermark's future skew (see :meth:`_advance`)."""
        self._closed = -(1 << 62)
        """Last message bin processed (later rows for it or before it are late)."""
        self._last_bin: int | None = None
        """Last message bin judged or trained (for the capture-gap rule)."""
        self._flow_closed = -(1 << 62)
        self.trained_bins = 0
        self.judged_bins = 0
        self.late = 0
        self.malformed = 0
        self._load()

    # ------------------------------------------------------------------ model persistence

    def _load(self) -> None:
        data = self.context.knowledge.models.get(ENGINE)
        if not data:
            return
        try:
            if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
                raise ValueError(f"format {data.get('format') if isinstance(data, dict) else None!r}")
            s = self.settings
            if (
                float(data["bin_seconds"]) != s.bin_seconds
                or float(data["flow_bin_seconds"]) != s.flow_bin_seconds
            ):
                raise ValueError("learned with other bin lengths")
            self.messages.load(data["messages"])
            self.flows.load(data["flows"])
        except Exception as exc:  # a hand-edited or hostile baseline file must not stop the sensor
            logger.warning("anomaly model in the baseline ignored: %s", exc)
            s = self.settings
            self.messages = Channels(MESSAGE_FEATURES, MESSAGE_COUNTS, s.max_channels)
            self.flows = Channels(FLOW_FEATURES, FLOW_COUNTS, s.max_channels)

    def model_json(self) -> dict[str, Any]:
        """The trained model as the baseline file keeps it (``models["anomaly"]``)."""
        return {
            "format": MODEL_FORMAT,
            "bin_seconds": self.settings.bin_seconds,
            "flow_bin_seconds": self.settings.flow_bin_seconds,
            "half_life_hours": self.settings.half_life_hours,
            "messages": self.messages.to_json(),
            "flows": self.flows.to_json(),
        }

    # ------------------------------------------------------------------ input

    def _learning_rows(self, ts: I64) -> Bool:
        if self.context.learning:
            return np.ones(ts.shape[0], dtype=bool)
        until = self.context.learn_until_ns
        if until is None:
            return np.zeros(ts.shape[0], dtype=bool)
        return ts < until

    def _advance(self, ts: I64) -> None:
        """Move the time watermark (bins before it are complete) to the newest of ``ts``, unless
        that is a jump of more than ``FUTURE_SKEW_NS`` that fewer than ``JUMP_SUPPORT`` timestamps
        back: one packet with a wild clock must not close every bin and drop the rest of the
        capture as late, while a real jump (the next capture, hours later) is taken at once."""
        high = int(ts.max())
        if self._last_ts < 0 or high <= self._last_ts + FUTURE_SKEW_NS:
            self._last_ts = max(self._last_ts, high)
            return
        beyond = ts > self._last_ts + FUTURE_SKEW_NS
        self._jump_support += int(beyond.sum())
        if self._jump_support >= JUMP_SUPPORT:
            self._last_ts, self._jump_support = high, 0
            return
        within = ts[~beyond]
        if within.shape[0]:
            self._last_ts = max(self._last_ts, int(within.max()))

    def _observe(self, ts: I64) -> None:
        if ts.shape[0] == 0:
            return
        low, high = int(ts.min()), int(ts.max())
        self._first_ts = low if self._first_ts is None else min(self._first_ts, low)
        self._advance(ts)
        first, last = low // self.flow_bin_ns, high // self.flow_bin_ns
        if last - first <= SLICE_BINS:
            self._flow_observed.update(range(first, last + 1))
        else:  # a table across a gap in the capture: only the bins it has messages in
            self._flow_observed.update(_distinct(ts // self.flow_bin_ns).tolist())

    def _channel_ids(
        self, model: Channels, src: I64, dst: I64, names: list[str], protocol: str, ts: I64
    ) -> tuple[I64, I64]:
        """Pair and device channel of every row (``src`` and ``dst`` index ``names``); channels are
        created for pairs seen in the training window."""
        width = max(1, len(names))
        code = src * width + dst
        present = _distinct(code)
        pairs = [(names[c // width], names[c % width]) for c in present.tolist()]
        missing = [
            i
            for i, (a, b) in enumerate(pairs)
            if (a, b, protocol) not in model.index or (ANY, b, protocol) not in model.index
        ]
        if missing:
            learning = self._learning_rows(ts)
            if learning.any():
                learned = set(_distinct(code[learning]).tolist())
                fresh = [pairs[i] for i in missing if int(present[i]) in learned]
                model.add([(ANY, b, protocol) for _, b in fresh] + [(a, b, protocol) for a, b in fresh])
                if model is self.messages:
                    # A device seen in protocol messages is known to the flow model too: a flood of
                    # short flows towards it is judged even if it never had one while learning.
                    self.flows.add([(ANY, b, "ip") for _, b in fresh] + [(a, b, "ip") for a, b in fresh])
        pair_of = np.array([model.index.get((a, b, protocol), -1) for a, b in pairs] or [-1], dtype=np.int64)
        dev_of = np.array([model.index.get((ANY, b, protocol), -1) for _, b in pairs] or [-1], dtype=np.int64)
        at = np.searchsorted(present, code)
        return pair_of[at], dev_of[at]

    def on_table(self, event_type: type[Event], table: pa.Table) -> None:
        if event_type.log in SOURCES and table.num_rows:
            self._ingest_table(event_type.log, table)

    def on_event(self, event: Any) -> None:
        getter = GETTERS.get(event.log)
        if getter is not None:
            self._buffer.setdefault(event.log, []).append(getter(event))

    def _flush_buffer(self) -> None:
        buffer, self._buffer = self._buffer, {}
        for log, rows in buffer.items():
            columns = SOURCES[log].columns
            try:
                table = pa.table(
                    {
                        name: pa.array(values)
                        for name, values in zip(columns, zip(*rows, strict=True), strict=True)
                    }
                )
            except (pa.ArrowException, TypeError, ValueError):  # odd values of a fuzzed PDU
                self.malformed += len(rows)
                continue
            self._ingest_table(log, table)

    def _ingest_table(self, log: str, table: pa.Table) -> None:
        """Messages of one event table: channel, direction, size and function code of each row."""
        source = SOURCES[log]
        ts = _ns(table["ts"])
        self._observe(ts)
        flow = _ns(table["flow_id"])
        ch, dev, swap = self._flow_channels(source, table, flow, ts)
        keep = (ch >= 0) | (dev >= 0)
        if not keep.any():
            return
        request = _mask(table["is_orig"]) ^ swap
        size = _numbers(table[source.size]) if source.size else np.full(ts.shape[0], np.nan)
        label = self._label_codes(source, table) if source.label else np.full(ts.shape[0], -1, dtype=np.int64)
        if not keep.all():
            ts, ch, dev, label, flow = ts[keep], ch[keep], dev[keep], label[keep], flow[keep]
            request, size = request[keep], size[keep]
        self._pending.append(_Messages(ts, ch, dev, request, size, label, flow))

    def _flow_channels(self, source: Source, table: pa.Table, flow: I64, ts: I64) -> tuple[I64, I64, Bool]:
        """Pair channel, device channel and direction of every row, decided once per flow (the
        addresses and ports of a flow do not change): no string is touched per row.

        The client is the side without the protocol's port, whoever sent the flow's first packet (a
        capture that starts mid-session sees the server first); for peers (CIP I/O both ways on
        2222) the smaller address is the source, so a flow split by a timeout does not turn the
        channel around. ``swap`` is True where the flow's originator is the channel's destination.
        """
        present = _distinct(flow)
        at = np.searchsorted(present, flow)
        cache = self._flow_cache
        fresh = [i for i, f in enumerate(present.tolist()) if f not in cache]
        if fresh:
            first_row = np.zeros(present.shape[0], dtype=np.int64)
            first_row[at[::-1]] = np.arange(flow.shape[0] - 1, -1, -1)
            rows = first_row[fresh]
            sub = table.select(["orig_h", "resp_h", "orig_p", "resp_p"]).take(pa.array(rows))
            model = self.messages
            pending: list[tuple[int, str, str, bool]] = []
            for flow_id, row, orig, resp, orig_p, resp_p in zip(
                present[fresh].tolist(),
                rows.tolist(),
                *(sub[c].to_pylist() for c in sub.column_names),
                strict=True,
            ):
                orig, resp = str(orig), str(resp)
                if source.server_ports:
                    swap = orig_p in source.server_ports and resp_p not in source.server_ports
                else:
                    swap = resp < orig
                src, dst = (resp, orig) if swap else (orig, resp)
                pending.append((flow_id, src, dst, swap))
                if self.context.is_learning(int(ts[row])):
                    protocol = source.protocol
                    model.add([(ANY, dst, protocol), (src, dst, protocol)])
                    # A device seen in protocol messages is known to the flow model too: a flood
                    # of short flows towards it is judged even if it never had one while learning.
                    self.flows.add([(ANY, dst, "ip"), (src, dst, "ip")])
            if len(cache) + len(pending) > FLOW_CACHE:
                cache.clear()
            for flow_id, src, dst, swap in pending:
                pair = model.index.get((src, dst, source.protocol), -1)
                device = model.index.get((ANY, dst, source.protocol), -1)
                cache[flow_id] = (pair, device, swap)
        known = [cache.get(f, (-1, -1, False)) for f in present.tolist()]
        pair_of = np.array([k[0] for k in known], dtype=np.int64)
        dev_of = np.array([k[1] for k in known], dtype=np.int64)
        swap_of = np.array([k[2] for k in known], dtype=bool)
        return pair_of[at], dev_of[at], swap_of[at]

    def _label_codes(self, source: Source, table: pa.Table) -> I64:
        """Column of :attr:`Channels.mix` of every row's function code (-1: none)."""
        model = self.messages
        column = table[source.label]
        if pa.types.is_integer(column.type):
            values = _ns(pc.fill_null(column, -1))
            present = _distinct(values)
            lut = np.array(
                [model.label(f"{source.protocol}|{v}") if v >= 0 else -1 for v in present.tolist()] or [-1],
                dtype=np.int64,
            )
            return lut[np.searchsorted(present, values)] if present.shape[0] else np.full(len(values), -1)
        labels = _strings(column)
        if source.fallback_label is not None:
            labels = pc.if_else(pc.equal(labels, ""), _strings(table[source.fallback_label]), labels)
        codes, names = _encode(labels)
        lut = np.array(
            [model.label(f"{source.protocol}|{v}") if v else -1 for v in names] or [-1], dtype=np.int64
        )
        return lut[codes]

    def on_flows(self, flows: pa.Table) -> None:
        self._flush_buffer()
        if flows.num_rows:
            self._ingest_flows(flows)
            if self._flow_cache:
                for flow_id in flows["flow_id"].to_pylist():
                    self._flow_cache.pop(flow_id, None)
        # The pipeline hands finished flows after every batch, once the batch's events are out:
        # message bins that ended more than one bin ago are complete.
        if self._last_ts >= 0:
            self._close_messages(self._last_ts // self.bin_ns - 2)
            self._close_flows(
                (self._last_ts - round(self.settings.flow_lag_seconds * NS)) // self.flow_bin_ns - 1
            )

    def _ingest_flows(self, flows: pa.Table) -> None:
        first, last = _ns(flows["first_ts"]), _ns(flows["last_ts"])
        self._first_ts = int(first.min()) if self._first_ts is None else min(self._first_ts, int(first.min()))
        self._advance(last)
        self._flow_observed.update(_distinct(np.concatenate([first, last]) // self.flow_bin_ns).tolist())
        orig, resp, names = _addresses(flows["orig_ip"], flows["resp_ip"])
        ch, dev = self._channel_ids(self.flows, orig, resp, names, "ip", first)
        duration = _numbers(flows["duration_s"])
        short = (duration <= self.settings.short_flow_seconds) & ((ch >= 0) | (dev >= 0))
        if not short.any():
            return
        packets = _numbers(flows["orig_pkts"]) + _numbers(flows["resp_pkts"])
        size = _numbers(flows["orig_bytes"]) + _numbers(flows["resp_bytes"])
        ids = _ns(flows["flow_id"])
        bins = first // self.flow_bin_ns
        b, c, d = bins[short], ch[short], dev[short]
        order = np.lexsort((first[short], b, d, c))
        b, c, d = b[order], c[order], d[order]
        starts = np.flatnonzero(
            np.concatenate([[True], (b[1:] != b[:-1]) | (c[1:] != c[:-1]) | (d[1:] != d[:-1])])
        )

        def total(values: F64) -> F64:
            return np.add.reduceat(np.nan_to_num(values[short][order]), starts)

        self._flow_pending.append(
            _FlowRows(
                b[starts],
                c[starts],
                d[starts],
                np.diff(np.append(starts, b.shape[0])).astype(np.float64),
                total(packets),
                total(size),
                first[short][order][starts],
                ids[short][order][starts],
            )
        )

    # ------------------------------------------------------------------ bins

    def _bin_phase(self, start: int, length: int) -> str:
        """``train``, ``judge`` or ``skip`` (a bin across the end of the training window)."""
        if self.context.is_learning(start + length - 1):
            return "train"
        if not self.context.is_learning(start):
            return "judge"
        return "skip"

    def _complete(self, start: int, length: int, final: bool) -> bool:
        first = self._first_ts
        if self.context.start_ns is not None:
            first = self.context.start_ns if first is None else min(first, self.context.start_ns)
        if first is None or start < first:
            return False
        return not final or start + length <= self._last_ts

    def _close_messages(self, upto: int, final: bool = False) -> None:
        if upto <= self._closed:
            return
        rows = _concat_messages(self._pending) if self._pending else _empty_messages()
        self._pending = []
        bins = rows.ts // self.bin_ns
        late = bins <= self._closed
        if late.any():
            self.late += int(late.sum())
        ready = (bins <= upto) & ~late
        rest = ~ready & ~late
        if rest.any():
            self._pending.append(_take_messages(rows, rest))
        rows, bins = _take_messages(rows, ready), bins[ready]
        gap = max(1, int(self.settings.capture_gap_seconds * NS // self.bin_ns))
        todo: list[int] = []
        previous = self._last_bin
        for b in _distinct(bins).tolist():
            if previous is not None and 1 < b - previous <= gap + 1:
                todo.extend(range(previous + 1, b))
            elif previous is not None and b - previous > gap + 1:
                todo.append(GAP)
            todo.append(b)
            previous = b
        if final and previous is not None:
            todo.extend(range(previous + 1, min(upto, previous + gap) + 1))
        # Bins are processed in slices of consecutive bins, each slice's features at once.
        slice_bins: list[int] = []
        segments: list[int] = []
        segment = 0
        for b in todo:
            if b == GAP:
                segment += 1
                continue
            if not self._complete(b * self.bin_ns, self.bin_ns, final):
                continue
            slice_bins.append(b)
            segments.append(segment)
            if len(slice_bins) == SLICE_BINS:
                self._message_bins(slice_bins, segments, rows, bins)
                slice_bins, segments, segment = [], [], 0
        if slice_bins:
            self._message_bins(slice_bins, segments, rows, bins)
        elif segment:
            self.messages.last_request[:] = -1
        self._closed = upto

    def _message_bins(self, todo: list[int], segments: list[int], rows: _Messages, bins: I64) -> None:
        """Train on or judge consecutive complete bins (``todo``, ascending) of ``rows``."""
        model = self.messages
        n = len(model)
        self._last_bin = todo[-1]
        if n == 0:
            return
        wanted = np.asarray(todo, dtype=np.int64)
        pos = np.searchsorted(wanted, bins)
        inside = (pos < wanted.shape[0]) & (wanted[np.minimum(pos, wanted.shape[0] - 1)] == bins)
        part = rows
        if not inside.all():
            part, pos = _take_messages(rows, inside), pos[inside]
        segment = np.asarray(segments, dtype=np.int64)[pos]
        features, model.last_request = message_features(
            len(todo),
            model.parent,
            pos,
            segment,
            part.ch,
            part.dev,
            part.ts,
            part.request,
            part.size,
            part.label,
            part.flow,
            model.last_request,
        )
        mix_pos, mix_ch, mix_code, mix_count = features.mix
        mix_bounds = np.searchsorted(mix_pos, np.arange(len(todo) + 1))
        for k, b in enumerate(todo):
            start = b * self.bin_ns
            phase = self._bin_phase(start, self.bin_ns)
            if phase == "skip":
                continue
            first_flow = features.first_flow[k]
            seen = first_flow >= 0
            model.last_flow[seen] = first_flow[seen]
            m0, m1 = int(mix_bounds[k]), int(mix_bounds[k + 1])
            if phase == "train":
                model.stats.update(features.x[k], self.decay)
                self._expected.pop(id(model), None)
                model.mix *= self.decay
                if m1 > m0:
                    np.add.at(model.mix, (mix_ch[m0:m1], mix_code[m0:m1]), mix_count[m0:m1])
                self.trained_bins += 1
                continue
            self.judged_bins += 1
            findings = self._judge_messages(features.x[k], (mix_ch[m0:m1], mix_code[m0:m1], mix_count[m0:m1]))
            if findings:
                first_ts = np.where(features.first_ts[k] >= 0, features.first_ts[k], start)
                self._report(model, findings, b, self.bin_ns, first_ts, first_flow)
            else:
                model.streak[:] = 0

    def _expectation(self, model: Channels) -> Expectation:
        """What the frozen model expects of every channel (recomputed after training only)."""
        cached = self._expected.get(id(model))
        if cached is None or cached.channels != len(model) or cached.labels != len(model.labels):
            counts = (REQUESTS, RESPONSES) if model is self.messages else (FLOWS, PACKETS)
            active = ACTIVE if model is self.messages else FLOW_ACTIVE
            length = self.settings.bin_seconds if model is self.messages else self.settings.flow_bin_seconds
            cached = self._expected[id(model)] = Expectation.of(model, counts, active, self.settings, length)
        return cached

    def _judge_messages(self, x: F64, counts: tuple[I64, I64, F64]) -> dict[int, Finding]:
        s = self.settings
        model = self.messages
        e = self._expectation(model)
        findings: dict[int, Finding] = {}
        unit = f"per {_fmt(s.bin_seconds)} s"

        def add(channel: int, score: float, deviation: Deviation) -> None:
            finding = findings.get(channel)
            if finding is None:
                finding = findings[channel] = Finding(channel, RATE, score)
            finding.score = max(finding.score, score)
            finding.deviations.append(deviation)

        # Counts (requests, responses) of active bins.
        z, flags = e.judge_counts(x, s, upward_only=False)
        for channel, j in zip(*np.nonzero(flags), strict=True):
            column = e.count_columns[int(j)]
            name = MESSAGE_FEATURES[column]
            zc, exp, seen = float(z[channel, j]), float(e.count_mean[channel, j]), float(x[channel, column])
            text = f"{name} {unit} {_fmt(exp)} -> {_fmt(seen)} (z={zc:.1f})"
            add(int(channel), abs(zc), Deviation(name, exp, seen, zc, text))
        # Silence: a periodic channel without requests, or requests without answers.
        stopped = e.periodic & (x[:, REQUESTS] == 0)
        unanswered = e.answering & (x[:, REQUESTS] > 0) & (x[:, RESPONSES] == 0)
        for channel in np.flatnonzero(stopped).tolist():
            expected = float(e.count_mean[channel, 0])
            text = (
                f"no requests in {_fmt(s.bin_seconds)} s where {_fmt(expected)} were expected "
                f"(active in {e.active_share[channel]:.0%} of the training bins)"
            )
            add(channel, s.threshold, Deviation("silence", expected, 0.0, 0.0, text))
        for channel in np.flatnonzero(unanswered).tolist():
            text = (
                f"{_fmt(float(x[channel, REQUESTS]))} requests and no response in {_fmt(s.bin_seconds)} s "
                f"(answered in {e.answered_share[channel]:.0%} of the training bins)"
            )
            add(
                channel,
                s.threshold,
                Deviation("unanswered", float(e.answered_share[channel]), 0.0, 0.0, text),
            )
        # Size and periodicity.
        for j, column in enumerate((MEAN_SIZE, PERIOD, JITTER)):
            values = x[:, column]
            present = np.isfinite(values) & e.judged[:, j]
            if not present.any():
                continue
            mean, var = e.mean[:, j], e.var[:, j]
            obs = np.where(present, values, 0.0)
            if column == JITTER:
                zj = _z(obs, mean, var, JITTER_FLOOR)
                hit = present & (zj >= s.threshold) & (obs - mean >= s.jitter_increase)
            else:
                floor = s.relative_floor * mean + (1.0 if column == MEAN_SIZE else 0.0)
                zj = _z(obs, mean, var, floor)
                hit = present & (np.abs(zj) >= s.threshold) & (_ratio(obs, mean, 0.0) >= s.min_ratio)
            for channel in np.flatnonzero(hit).tolist():
                exp, obs_, zc = float(mean[channel]), float(obs[channel]), float(zj[channel])
                if column == MEAN_SIZE:
                    text = f"mean message size {_fmt(exp)} -> {_fmt(obs_)} bytes (z={zc:.1f})"
                    add(channel, abs(zc), Deviation("mean_size", exp, obs_, zc, text))
                elif column == PERIOD:
                    text = f"request period {_fmt_period(exp)} -> {_fmt_period(obs_)} (z={zc:.1f})"
                    add(channel, abs(zc), Deviation("period", exp, obs_, zc, text))
                else:
                    text = f"request timing irregular: inter-arrival CV {exp:.2f} -> {obs_:.2f} (z={zc:.1f})"
                    add(channel, abs(zc), Deviation("jitter", exp, obs_, zc, text))
        # Function-code mix of the channels with enough requests, all at once.
        mix_ch, mix_code, mix_count = counts
        if mix_ch.shape[0]:
            n_all = np.bincount(mix_ch, weights=mix_count, minlength=len(model))
            rows = np.flatnonzero(e.has_mix & (n_all >= s.min_mix_requests))
            if rows.shape[0]:
                row_of = np.full(len(model), -1, dtype=np.int64)
                row_of[rows] = np.arange(rows.shape[0])
                observed = np.zeros((rows.shape[0], e.share.shape[1]))
                take = row_of[mix_ch] >= 0
                np.add.at(observed, (row_of[mix_ch[take]], mix_code[take]), mix_count[take])
                n = n_all[rows][:, None]
                q = e.share[rows]
                p = observed / n
                shift = 0.5 * np.abs(p - q).sum(axis=1)
                zs = (observed - n * q) / np.sqrt(n * q * (1 - q) + 1.0)
                top = np.abs(zs).max(axis=1)
                for r in np.flatnonzero((shift >= s.min_mix_shift) & (top >= s.threshold)).tolist():
                    channel = int(rows[r])
                    labels = np.flatnonzero(np.abs(zs[r]) >= s.threshold)
                    labels = labels[np.argsort(-np.abs(zs[r, labels]))]
                    parts = []
                    mix: dict[str, tuple[float, float]] = {}
                    for label in labels.tolist():
                        name = self._code_name(model.labels[label])
                        mix[name] = (float(q[r, label]), float(p[r, label]))
                        parts.append(
                            f"{name} share {q[r, label]:.2f} -> {p[r, label]:.2f} (z={zs[r, label]:.1f})"
                        )
                    text = "function-code mix: " + ", ".join(parts) + f" (shift {shift[r]:.2f})"
                    add(
                        channel,
                        float(top[r]),
                        Deviation("function_mix", 0.0, float(shift[r]), float(top[r]), text),
                    )
                    findings[channel].mix = mix
        return findings

    @staticmethod
    def _code_name(label: str) -> str:
        protocol, _, code = label.partition("|")
        source = next((src for src in SOURCES.values() if src.protocol == protocol), None)
        if source is None:
            return code
        if source.hex_codes and code.isdigit():
            return f"{source.code_name} 0x{int(code):02x}"
        return f"{source.code_name} {code}"

    def _close_flows(self, upto: int, final: bool = False) -> None:
        if upto <= self._flow_closed:
            return
        rows = _concat_flows(self._flow_pending) if self._flow_pending else None
        self._flow_pending = []
        if rows is not None and rows.bin.shape[0]:
            late = rows.bin <= self._flow_closed
            self.late += int(late.sum())
            ready = (rows.bin <= upto) & ~late
            rest = ~ready & ~late
            if rest.any():
                self._flow_pending.append(_take_flows(rows, rest))
            rows = _take_flows(rows, ready)
            order = np.argsort(rows.bin, kind="stable")
            rows = _take_flows(rows, order)
        todo = sorted(b for b in self._flow_observed if self._flow_closed < b <= upto)
        self._flow_observed = {b for b in self._flow_observed if b > upto}
        for b in todo:
            start = b * self.flow_bin_ns
            if not self._complete(start, self.flow_bin_ns, final):
                continue
            chunk = None
            if rows is not None:
                lo, hi = np.searchsorted(rows.bin, [b, b + 1])
                chunk = _take_flows(rows, slice(int(lo), int(hi)))
            self._flow_bin(b, chunk)
        self._flow_closed = upto

    def _flow_bin(self, b: int, rows: _FlowRows | None) -> None:
        model = self.flows
        n = len(model)
        if n == 0:
            return
        start = b * self.flow_bin_ns
        phase = self._bin_phase(start, self.flow_bin_ns)
        if phase == "skip":
            return
        x = np.zeros((n, len(FLOW_FEATURES)))
        first_ts = np.full(n, start, dtype=np.int64)
        first_flow = np.full(n, -1, dtype=np.int64)
        if rows is not None and rows.bin.shape[0]:
            for column in (rows.ch, rows.dev):
                ok = column >= 0
                ids = column[ok]
                x[:, FLOWS] += np.bincount(ids, weights=rows.flows[ok], minlength=n)
                x[:, PACKETS] += np.bincount(ids, weights=rows.packets[ok], minlength=n)
                x[:, BYTES] += np.bincount(ids, weights=rows.bytes[ok], minlength=n)
                order = np.lexsort((rows.ts[ok], ids))
                chs = ids[order]
                heads = np.concatenate([[True], chs[1:] != chs[:-1]]) if chs.shape[0] else chs.astype(bool)
                first_ts[chs[heads]] = rows.ts[ok][order][heads]
                first_flow[chs[heads]] = rows.flow[ok][order][heads]
        x[:, FLOW_ACTIVE] = x[:, FLOWS] > 0
        seen = first_flow >= 0
        model.last_flow[seen] = first_flow[seen]
        if phase == "train":
            model.stats.update(x, self.flow_decay)
            self._expected.pop(id(model), None)
            self.trained_bins += 1
            return
        self.judged_bins += 1
        s = self.settings
        e = self._expectation(model)
        columns = e.count_columns
        z, flags = e.judge_counts(
            x, s, upward_only=True, min_increase=(s.min_flow_increase, s.min_packet_increase)
        )
        findings: dict[int, Finding] = {}
        unit = f"per {_fmt(s.flow_bin_seconds)} s"
        names = {FLOWS: "short flows", PACKETS: "packets of short flows", BYTES: "bytes of short flows"}
        for channel, j in zip(*np.nonzero(flags), strict=True):
            feature = columns[int(j)]
            zc, exp, o = float(z[channel, j]), float(e.count_mean[channel, j]), float(x[channel, feature])
            text = f"{names[feature]} {unit} {_fmt(exp)} -> {_fmt(o)} (z={zc:.1f})"
            finding = findings.setdefault(int(channel), Finding(int(channel), RATE, abs(zc)))
            finding.score = max(finding.score, abs(zc))
            finding.deviations.append(Deviation(FLOW_FEATURES[feature], exp, o, zc, text))
        self._report(model, findings, b, self.flow_bin_ns, first_ts, first_flow)

    # ------------------------------------------------------------------ alerts

    def _report(
        self,
        model: Channels,
        findings: dict[int, Finding],
        b: int,
        length: int,
        first_ts: I64,
        first_flow: I64,
    ) -> None:
        s = self.settings
        n = len(model)
        score = np.zeros(n)
        for channel, finding in findings.items():
            score[channel] = finding.score
        # A device channel is quiet in a bin where one of its pairs deviates: the pair says more.
        parents = np.asarray(model.parent, dtype=np.int64)
        explained = parents[[c for c in findings if parents[c] >= 0]] if findings else np.zeros(0, np.int64)
        score[explained] = 0.0
        anomalous = score >= s.threshold
        model.streak = np.where(anomalous, model.streak + 1, 0)
        fire = anomalous & (
            (model.streak >= max(1, s.consecutive_bins)) | (score >= s.burst_factor * s.threshold)
        )
        for channel in np.flatnonzero(fire).tolist():
            finding = findings[channel]
            self._raise(model, finding, b, length, int(first_ts[channel]), int(first_flow[channel]))

    def _raise(self, model: Channels, finding: Finding, b: int, length: int, ts: int, flow: int) -> None:
        src, dst, protocol = model.keys[finding.channel]
        deviations = sorted(finding.deviations, key=lambda d: (d.feature not in SILENCE, -abs(d.z)))
        alert_type = classify(deviations)
        who = f"{src} -> {dst}" if src != ANY else f"all clients -> {dst}"
        seconds = length / NS
        text = f"{who} {protocol}, {_fmt(seconds)} s from {_clock(b * length)} UTC: " + "; ".join(
            d.text for d in deviations
        )
        details: dict[str, Any] = {
            "bin_start_ns": b * length,
            "bin_seconds": seconds,
            "score": round(finding.score, 3),
            "features": {
                d.feature: {
                    "expected": round(d.expected, 6),
                    "observed": round(d.observed, 6),
                    "z": round(d.z, 3),
                }
                for d in deviations
            },
        }
        if finding.mix:
            details["mix"] = {
                k: {"expected": round(v[0], 4), "observed": round(v[1], 4)} for k, v in finding.mix.items()
            }
        if flow < 0:
            flow = int(model.last_flow[finding.channel])
        self.alerts.raise_alert(
            alert_type,
            ts=ts,
            src=src,
            dst=dst,
            protocol=protocol,
            explanation=text,
            flow_id=flow,
            details=details,
        )

    # ------------------------------------------------------------------ end

    def finish(self) -> None:
        self._flush_buffer()
        if self._last_ts >= 0:
            self._close_messages(self._last_ts // self.bin_ns, final=True)
            self._close_flows(self._last_ts // self.flow_bin_ns, final=True)
        if self.trained_bins:
            self.context.knowledge.models[ENGINE] = self.model_json()
