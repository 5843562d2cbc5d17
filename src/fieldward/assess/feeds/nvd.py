"""NVD CVE JSON 2.0: the CVE API 2.0 response, the NVD 2.0 JSON feed files, single CVE records.

All three carry the same ``cve`` object (https://csrc.nist.gov/schema/nvd/api/2.0/cve_api_json_2.0.schema):
the API and the yearly ``nvdcve-2.0-*.json[.gz]`` feeds wrap a list of them in
``{"vulnerabilities": [{"cve": {...}}, ...]}``, mirrors such as fkie-cad/nvd-json-data-feeds store one
bare ``cve`` object per file. :func:`parse_cve` turns one into a :class:`Vulnerability` with
``source="nvd"``: the English description, the feed's own dates (UTC), ``vulnStatus``, every CVSS
metric (v4.0, v3.1, v3.0, v2) with its source and Primary/Secondary type, CWE ids, reference URLs and
the full configurations (nodes, operators, negation, every cpeMatch with its version bounds).
"""

from __future__ import annotations

from typing import Any

from fieldward.assess.feeds._common import (
    RECORD_ERRORS,
    FeedDocument,
    RecordError,
    cvss,
    items,
    obj,
    opt_text,
    text,
    timestamp,
)
from fieldward.assess.model import (
    Configuration,
    ConfigurationNode,
    CpeMatch,
    CvssScore,
    VersionRange,
    Vulnerability,
)

__all__ = ["METRIC_KEYS", "is_cve_record", "is_nvd_collection", "parse_cve", "parse_nvd"]

METRIC_KEYS: tuple[tuple[str, str], ...] = (
    ("cvssMetricV40", "4.0"),
    ("cvssMetricV31", "3.1"),
    ("cvssMetricV30", "3.0"),
    ("cvssMetricV2", "2.0"),
)
"""The ``metrics`` arrays of a CVE and the CVSS version each holds."""


def is_nvd_collection(data: Any) -> bool:
    """The API 2.0 response or a 2.0 feed file: a ``vulnerabilities`` list of ``{"cve": ...}`` items."""
    if not isinstance(data, dict) or not isinstance(data.get("vulnerabilities"), list):
        return False
    if data.get("format") == "NVD_CVE":
        return True
    first = next(iter(data["vulnerabilities"]), None)
    return isinstance(first, dict) and isinstance(first.get("cve"), dict) and "document" not in data


def is_cve_record(data: Any) -> bool:
    """A bare ``cve`` object (one CVE per file)."""
    return (
        isinstance(data, dict)
        and isinstance(data.get("id"), str)
        and data["id"].startswith("CVE-")
        and ("descriptions" in data or "configurations" in data or "lastModified" in data)
    )


def parse_nvd(data: Any, doc: FeedDocument) -> None:
    """Fill ``doc`` from a parsed NVD 2.0 document (collection or single record)."""
    if is_cve_record(data):
        doc.format = "nvd-cve-record"
        _add(doc, data, 0)
        return
    doc.format = "nvd-api-2.0" if "resultsPerPage" in data or "startIndex" in data else "nvd-feed-2.0"
    doc.version = text(data.get("version"))
    try:
        doc.feed_date = timestamp(data.get("timestamp"))
    except RecordError:
        doc.feed_date = None
    for index, item in enumerate(data["vulnerabilities"]):
        _add(doc, obj(item).get("cve"), index)


def _add(doc: FeedDocument, cve: Any, index: int) -> None:
    try:
        doc.vulnerabilities.append(parse_cve(cve))
    except RECORD_ERRORS as exc:
        name = obj(cve).get("id")
        doc.skip(f"record {index}" + (f" ({name})" if isinstance(name, str) else ""), _reason(exc))


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, RecordError) else f"{type(exc).__name__}: {exc}"


def parse_cve(cve: Any) -> Vulnerability:
    """One NVD ``cve`` object as a :class:`Vulnerability`; raises :class:`RecordError` when unusable."""
    if not isinstance(cve, dict):
        raise RecordError("not a cve object")
    cve_id = cve.get("id")
    if not isinstance(cve_id, str) or not cve_id.startswith("CVE-") or len(cve_id) > 64:
        raise RecordError(f"no CVE id ({str(cve_id)[:40]!r})")
    description = ""
    for entry in items(cve.get("descriptions")):
        entry = obj(entry)
        if entry.get("lang") in ("en", "en-US") and isinstance(entry.get("value"), str):
            description = entry["value"]
            break
    return Vulnerability(
        id=cve_id,
        source="nvd",
        description=description,
        published=timestamp(cve.get("published")),
        last_modified=timestamp(cve.get("lastModified")),
        status=text(cve.get("vulnStatus")),
        cvss=_metrics(obj(cve.get("metrics"))),
        cwes=_cwes(cve.get("weaknesses")),
        references=_references(cve.get("references")),
        configurations=tuple(_configuration(item) for item in items(cve.get("configurations"))),
    )


def _metrics(metrics: dict[str, Any]) -> tuple[CvssScore, ...]:
    scores: list[CvssScore] = []
    for key, version in METRIC_KEYS:
        for metric in items(metrics.get(key)):
            metric = obj(metric)
            data = obj(metric.get("cvssData"))
            if not data:
                continue
            # v2 keeps baseSeverity beside cvssData, v3/v4 inside it.
            severity = data.get("baseSeverity", metric.get("baseSeverity"))
            scores.append(
                cvss(
                    data.get("version") or version,
                    data.get("vectorString"),
                    data.get("baseScore"),
                    severity,
                    text(metric.get("source")),
                    metric.get("type", "Primary") == "Primary",
                )
            )
    return tuple(scores)


def _cwes(weaknesses: Any) -> tuple[str, ...]:
    """CWE ids of the weaknesses, in order, once each (NVD-CWE-noinfo / NVD-CWE-Other are not ids)."""
    found: dict[str, None] = {}
    for weakness in items(weaknesses):
        for entry in items(obj(weakness).get("description")):
            value = obj(entry).get("value")
            if isinstance(value, str) and value.startswith("CWE-"):
                found[value] = None
    return tuple(found)


def _references(references: Any) -> tuple[str, ...]:
    """Reference URLs once each (NVD lists a URL again for every source that gave it)."""
    found: dict[str, None] = {}
    for reference in items(references):
        url = obj(reference).get("url")
        if isinstance(url, str) and url:
            found[url] = None
    return tuple(found)


def _configuration(item: Any) -> Configuration:
    item = obj(item)
    return Configuration(
        nodes=tuple(_node(node) for node in items(item.get("nodes"))),
        operator=_operator(item.get("operator")),
        negate=item.get("negate") is True,
    )


def _node(node: Any) -> ConfigurationNode:
    node = obj(node)
    return ConfigurationNode(
        operator=_operator(node.get("operator")),
        matches=tuple(_match(match) for match in items(node.get("cpeMatch"))),
        negate=node.get("negate") is True,
    )


def _operator(value: Any) -> str:
    if value is None:
        return "OR"
    if value not in ("OR", "AND"):
        raise RecordError(f"bad operator {str(value)[:20]!r}")
    return str(value)


def _match(match: Any) -> CpeMatch:
    match = obj(match)
    criteria = match.get("criteria")
    if not isinstance(criteria, str) or not criteria.startswith("cpe:2.3:"):
        raise RecordError(f"cpeMatch without a CPE 2.3 criteria ({str(criteria)[:60]!r})")
    return CpeMatch(
        criteria=criteria,
        vulnerable=match.get("vulnerable") is not False,
        versions=VersionRange(
            start_including=opt_text(match.get("versionStartIncluding")),
            start_excluding=opt_text(match.get("versionStartExcluding")),
            end_including=opt_text(match.get("versionEndIncluding")),
            end_excluding=opt_text(match.get("versionEndExcluding")),
        ),
        match_criteria_id=opt_text(match.get("matchCriteriaId")),
    )
