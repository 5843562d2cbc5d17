"""OT operations: the commands that change what a controller does.

PLC stop and start, program or block download and upload, block deletion, online changes, PLC
password attempts (S7comm); CIP Reset; BACnet ReinitializeDevice and DeviceCommunicationControl;
DNP3 cold and warm restarts, application stop/start and file transfer; Modbus diagnostics that
restart communications or silence a device. Each is legitimate during maintenance and an attack
step otherwise (Stuxnet, Industroyer, TRITON all used them), so each raises an alert naming who
did what to which device; the analyst can learn or mute it per device pair.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from fieldward.detect.engine import Detector
from fieldward.detect.model import AlertType, Severity, alert_types_of

ENGINE = "operations"


_type = alert_types_of(ENGINE)


VERIFY = "Confirm with the process owner that this was planned maintenance from an engineering station."
PLC_STOP = _type(
    "s7_plc_stop",
    "S7 PLC stop command",
    Severity.CRITICAL,
    ("T0881", "T0858"),
    "A client sent an S7comm PLC Stop job: the controller stops executing its program.",
    VERIFY + " If not, isolate the source and restore the PLC to RUN from a trusted station.",
)
PLC_CONTROL = _type(
    "s7_plc_control",
    "S7 PLC control (PI service)",
    Severity.HIGH,
    ("T0858", "T0843"),
    "A client invoked a PLC Control program-invocation service (start, block activation, delete, "
    "copy RAM to ROM) that changes the controller's state or program.",
    VERIFY,
)
DOWNLOAD = _type(
    "s7_program_download",
    "S7 program or block download",
    Severity.HIGH,
    ("T0843",),
    "Blocks were downloaded to the PLC: its program or configuration changed.",
    VERIFY + " Compare the PLC program with the approved version.",
)
UPLOAD = _type(
    "s7_program_upload",
    "S7 program or block upload",
    Severity.MEDIUM,
    ("T0845",),
    "Blocks were uploaded from the PLC: someone copied its program (reconnaissance of the logic).",
    VERIFY,
)
PASSWORD = _type(
    "s7_password_attempt",
    "S7 PLC password attempt",
    Severity.HIGH,
    ("T0859", "T0812"),
    "A client sent an S7comm PLC password (security userdata): an attempt to unlock protected "
    "functions of the CPU.",
    VERIFY + " Repeated attempts from one host are a brute force: block it.",
)
MODE_CHANGE = _type(
    "s7_mode_change",
    "S7 CPU mode change",
    Severity.MEDIUM,
    ("T0858",),
    "The PLC reported a CPU mode transition (stop, run, restart, hold).",
    VERIFY,
)
CIP_RESET = _type(
    "cip_reset",
    "CIP device reset",
    Severity.HIGH,
    ("T0816",),
    "A client sent the CIP Reset service: the EtherNet/IP device restarts (and may return to its "
    "out-of-box configuration).",
    VERIFY,
)
BACNET_REINIT = _type(
    "bacnet_reinitialize_device",
    "BACnet ReinitializeDevice",
    Severity.HIGH,
    ("T0816",),
    "A client asked a BACnet device to restart (ReinitializeDevice).",
    VERIFY,
)
BACNET_DCC = _type(
    "bacnet_device_communication_control",
    "BACnet DeviceCommunicationControl",
    Severity.HIGH,
    ("T0814", "T0803"),
    "A client told a BACnet device to stop or restart communicating (DeviceCommunicationControl).",
    VERIFY,
)
DNP3_RESTART = _type(
    "dnp3_restart",
    "DNP3 cold or warm restart",
    Severity.HIGH,
    ("T0816",),
    "A master sent a DNP3 COLD_RESTART or WARM_RESTART: the outstation restarts.",
    VERIFY,
)
DNP3_APPLICATION = _type(
    "dnp3_application_control",
    "DNP3 application stop, start or initialize",
    Severity.HIGH,
    ("T0858", "T0881"),
    "A master stopped, started or initialized an application on the outstation.",
    VERIFY,
)
DNP3_FILE = _type(
    "dnp3_file_transfer",
    "DNP3 file operation",
    Severity.MEDIUM,
    ("T0867", "T0843"),
    "A master opened, deleted or transferred a file on the outstation (firmware or configuration "
    "files travel this way).",
    VERIFY,
)
MODBUS_DIAGNOSTIC = _type(
    "modbus_restart_or_listen_only",
    "Modbus diagnostic restart or listen-only",
    Severity.HIGH,
    ("T0816", "T0814"),
    "A Modbus Diagnostics request restarted the device's communications or forced it into "
    "listen-only mode (it stops answering).",
    VERIFY,
)

DNP3_RESTARTS = frozenset({"COLD_RESTART", "WARM_RESTART"})
DNP3_APPLICATIONS = frozenset({"STOP_APPL", "START_APPL", "INITIALIZE_APPL"})
S7_DOWNLOADS = frozenset({"Request Download", "Download Block", "Download Ended"})
S7_UPLOADS = frozenset({"Start Upload", "Upload", "End Upload"})
S7_MODES = frozenset({"Stop", "Warm Restart", "Run", "Hot Restart", "Hold", "Cold Restart", "Run_R"})
MODBUS_DIAGNOSTICS = {1: "Restart Communications Option", 4: "Force Listen Only Mode"}


class OperationsDetector(Detector):
    name: ClassVar[str] = ENGINE
    per_flow: ClassVar[bool] = True  # each alert is one command in one flow: no state across flows
    alert_types: ClassVar[tuple[AlertType, ...]] = (
        PLC_STOP,
        PLC_CONTROL,
        DOWNLOAD,
        UPLOAD,
        PASSWORD,
        MODE_CHANGE,
        CIP_RESET,
        BACNET_REINIT,
        BACNET_DCC,
        DNP3_RESTART,
        DNP3_APPLICATION,
        DNP3_FILE,
        MODBUS_DIAGNOSTIC,
    )
    logs: ClassVar[frozenset[str]] = frozenset(
        {
            "s7comm",
            "s7comm_upload_download",
            "cip",
            "bacnet_device_control",
            "dnp3_application",
            "dnp3_file",
            "modbus",
        }
    )

    def table_filter(self, log: str, table: pa.Table) -> pa.Array | None:
        """Only the rows that can be an operation: never the bulk of register reads."""
        if log == "modbus":
            return pc.equal(table["function_code"], 8)
        if log == "s7comm":
            functions = pc.is_in(table["function_name"], pa.array(["PLC Stop", "PLC Control"]))
            subfunctions = pc.is_in(table["subfunction_name"], pa.array(sorted(S7_MODES | {"PLC Password"})))
            return pc.or_(pc.fill_null(functions, False), pc.fill_null(subfunctions, False))
        if log == "cip":
            return pc.equal(table["cip_service"], "Reset")
        return None

    def on_event(self, event: Any) -> None:
        handler = getattr(self, f"_{event.log}", None)
        if handler is not None:
            handler(event)

    def _raise(
        self, alert_type: AlertType, event: Any, protocol: str, explanation: str, **details: Any
    ) -> None:
        """Raise ``alert_type`` from the requester (the flow's originator) to the device."""
        self.alerts.raise_alert(
            alert_type,
            ts=int(event.ts),
            src=event.orig_h,
            dst=event.resp_h,
            protocol=protocol,
            explanation=explanation,
            flow_id=int(event.flow_id),
            details=details,
        )

    def _s7comm(self, event: Any) -> None:
        function = event.function_name
        if event.is_orig and event.rosctr_name == "Job-Request":
            if function == "PLC Stop":
                self._raise(PLC_STOP, event, "s7comm", f"{event.orig_h} sent PLC Stop to {event.resp_h}")
            elif function == "PLC Control":
                service = event.pi_service or "unknown"
                text = f"{event.orig_h} invoked PI service {service} on {event.resp_h}"
                self._raise(PLC_CONTROL, event, "s7comm", text, pi_service=service)
        subfunction = event.subfunction_name or ""
        if event.is_orig and subfunction == "PLC Password":
            self._raise(PASSWORD, event, "s7comm", f"{event.orig_h} sent a PLC password to {event.resp_h}")
        elif not event.is_orig and subfunction in S7_MODES and event.rosctr_name == "User-Data":
            text = f"{event.resp_h} reported CPU mode {subfunction} to {event.orig_h}"
            self._raise(MODE_CHANGE, event, "s7comm", text, mode=subfunction)

    def _s7comm_upload_download(self, event: Any) -> None:
        if not event.is_orig:
            return
        block = " ".join(str(x) for x in (event.block_type, event.block_number) if x) or "blocks"
        if event.function_name in S7_DOWNLOADS:
            text = f"{event.orig_h} downloaded {block} to {event.resp_h} ({event.function_name})"
            self._raise(DOWNLOAD, event, "s7comm", text, block=block)
        elif event.function_name in S7_UPLOADS:
            text = f"{event.orig_h} uploaded {block} from {event.resp_h} ({event.function_name})"
            self._raise(UPLOAD, event, "s7comm", text, block=block)

    def _cip(self, event: Any) -> None:
        if event.direction == "request" and event.cip_service == "Reset":
            path = event.request_path or f"class {event.class_id}"
            text = f"{event.orig_h} sent CIP Reset to {event.resp_h} ({path})"
            self._raise(CIP_RESET, event, "enip", text, reset_type=event.reset_type)

    def _bacnet_device_control(self, event: Any) -> None:
        if not event.is_orig:
            return
        if event.pdu_service == "reinitialize_device":
            state = event.device_state or "unknown state"
            text = f"{event.orig_h} asked {event.resp_h} to reinitialize ({state})"
            self._raise(BACNET_REINIT, event, "bacnet", text, device_state=state)
        elif event.pdu_service == "device_communication_control":
            text = f"{event.orig_h} sent DeviceCommunicationControl to {event.resp_h}"
            self._raise(BACNET_DCC, event, "bacnet", text, time_duration=event.time_duration)

    def _dnp3_application(self, event: Any) -> None:
        function = event.function_code
        if function in DNP3_RESTARTS:
            text = f"{event.orig_h} sent {function} to outstation {event.dest_addr} at {event.resp_h}"
            self._raise(DNP3_RESTART, event, "dnp3", text, function=function)
        elif function in DNP3_APPLICATIONS:
            text = f"{event.orig_h} sent {function} to outstation {event.dest_addr} at {event.resp_h}"
            self._raise(DNP3_APPLICATION, event, "dnp3", text, function=function)

    def _dnp3_file(self, event: Any) -> None:
        if event.is_orig:
            name = event.file_name or "a file"
            text = f"{event.orig_h} ran {event.function_code} on {name} at {event.resp_h}"
            self._raise(
                DNP3_FILE, event, "dnp3", text, function=event.function_code, file_name=event.file_name
            )

    def _modbus(self, event: Any) -> None:
        if event.function_code == 8 and event.pdu_type == "REQ" and event.sub_function in MODBUS_DIAGNOSTICS:
            what = MODBUS_DIAGNOSTICS[event.sub_function]
            text = f"{event.orig_h} sent Modbus Diagnostics '{what}' to unit {event.unit} at {event.resp_h}"
            self._raise(MODBUS_DIAGNOSTIC, event, "modbus", text, sub_function=event.sub_function)
