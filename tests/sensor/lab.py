"""A throw-away veth lab for the sensor's tests and benchmark: two network namespaces joined by a
veth pair, tcpreplay on one side, ``fieldward sensor run`` on the other.

Needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN), ``ip`` (iproute2) and ``tcpreplay``;
:func:`lab_unavailable` says why a lab cannot be built here. Everything made is removed on exit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["LiveSensor", "ReplayResult", "VethLab", "lab_unavailable"]


def lab_unavailable() -> str | None:
    """Why no veth lab can be built here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces and veth pairs (ip netns, ip link)"
    for tool in ("ip", "tcpreplay"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: iproute2, tcpreplay; .ci/run installs tcpreplay)"
    probe = f"fwprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run(*args: str) -> None:
    done = subprocess.run(list(args), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")


class ReplayResult:
    def __init__(self, sent: int, seconds: float, failed: int, output: str) -> None:
        self.sent = sent
        self.seconds = seconds
        self.failed = failed
        self.output = output

    @property
    def pps(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class VethLab:
    """``ns_sensor`` holds ``sensor_if``; ``ns_gen`` holds its peer ``gen_if`` (tcpreplay's side)."""

    def __init__(self, tag: str | None = None, mtu: int = 9000) -> None:
        tag = tag or f"{os.getpid() % 100000}"
        self.ns_sensor = f"fws{tag}"
        self.ns_gen = f"fwg{tag}"
        self.sensor_if = "fwcap0"
        self.gen_if = "fwgen0"
        self.mtu = mtu

    def __enter__(self) -> VethLab:
        for ns in (self.ns_sensor, self.ns_gen):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            _run("ip", "netns", "add", ns)
            self.ns(ns, "ip", "link", "set", "lo", "up")
        _run(
            "ip",
            "link",
            "add",
            "fwtmp0",
            "mtu",
            str(self.mtu),
            "type",
            "veth",
            "peer",
            "name",
            "fwtmp1",
            "mtu",
            str(self.mtu),
        )
        _run("ip", "link", "set", "fwtmp0", "netns", self.ns_sensor, "name", self.sensor_if)
        _run("ip", "link", "set", "fwtmp1", "netns", self.ns_gen, "name", self.gen_if)
        for ns, dev in ((self.ns_sensor, self.sensor_if), (self.ns_gen, self.gen_if)):
            # no IPv6 neighbour discovery or router solicitations: only replayed frames on the wire
            self.ns(ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
            self.ns(ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
            self.ns(ns, "ip", "link", "set", dev, "up")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        for ns in (self.ns_sensor, self.ns_gen):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def ns(self, ns: str, *args: str) -> None:
        _run("ip", "netns", "exec", ns, *args)

    def set_sensor_link(self, up: bool) -> None:
        self.ns(self.ns_sensor, "ip", "link", "set", self.sensor_if, "up" if up else "down")

    def replay(
        self,
        captures: list[Path],
        *,
        pps: float | None = None,
        mbps: float | None = None,
        topspeed: bool = False,
        loops: int = 1,
    ) -> ReplayResult:
        """tcpreplay ``captures`` into the sensor's interface; returns what tcpreplay says it sent."""
        rate: list[str] = []
        if topspeed:
            rate = ["--topspeed"]
        elif pps is not None:
            rate = [f"--pps={pps:g}"]
        elif mbps is not None:
            rate = [f"--mbps={mbps:g}"]
        command = [
            "ip",
            "netns",
            "exec",
            self.ns_gen,
            "tcpreplay",
            "-i",
            self.gen_if,
            f"--loop={loops}",
            *rate,
            *map(str, captures),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"tcpreplay failed: {done.stderr.strip() or done.stdout.strip()}")
        text = done.stdout
        sent = re.search(r"Actual: (\d+) packets .* sent in ([0-9.]+) seconds", text)
        failed = re.search(r"Failed packets:\s+(\d+)", text)
        if sent is None:
            raise RuntimeError(f"cannot read tcpreplay's output: {text!r}")
        return ReplayResult(
            int(sent.group(1)), float(sent.group(2)), int(failed.group(1)) if failed else 0, text
        )


class LiveSensor:
    """``fieldward sensor run`` inside the lab's sensor namespace."""

    def __init__(
        self,
        lab: VethLab,
        out: Path,
        *args: str,
        interface: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.lab = lab
        self.out = out
        exe = Path(sys.executable).with_name("fieldward")
        program = [str(exe)] if exe.exists() else [sys.executable, "-m", "fieldward.cli"]
        self.log = out.parent / f"{out.name}.log"
        command = [
            "ip",
            "netns",
            "exec",
            lab.ns_sensor,
            *program,
            "sensor",
            "run",
            "-i",
            interface or lab.sensor_if,
            "-o",
            str(out),
            "--metrics-port",
            "0",
            *args,
        ]
        out.parent.mkdir(parents=True, exist_ok=True)
        self._log_handle = self.log.open("w")
        self.proc = subprocess.Popen(
            command,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env} if env is not None else None,
        )

    def status(self) -> dict[str, Any]:
        try:
            data = json.loads((self.out / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def wait(self, predicate: Any, timeout: float = 60.0, what: str = "") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status and predicate(status):
                return status
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"sensor exited ({self.proc.returncode}) waiting for {what}:\n{self.output()}"
                )
            time.sleep(0.1)
        last = json.dumps(self.status())[:2000]
        raise TimeoutError(f"sensor: no {what} within {timeout}s; last status {last}\n{self.output()}")

    def wait_running(self, timeout: float = 90.0) -> dict[str, Any]:
        return self.wait(lambda s: s.get("state") == "running", timeout, "running state")

    def wait_packets(self, packets: int, timeout: float = 60.0) -> dict[str, Any]:
        return self.wait(
            lambda s: s.get("totals", {}).get("packets", 0) >= packets, timeout, f"{packets} packets"
        )

    def stop(self, timeout: float = 120.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self._log_handle.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_handle.close()

    def output(self) -> str:
        self._log_handle.flush()
        try:
            return self.log.read_text()[-4000:]
        except OSError:
            return ""

    def segments(self) -> list[Path]:
        root = self.out / "segments"
        return sorted(p for p in root.iterdir() if (p / "segment.json").is_file()) if root.is_dir() else []
