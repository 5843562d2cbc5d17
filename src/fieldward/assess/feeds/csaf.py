"""CSAF 2.0 security advisories (OASIS CSAF 2.0, ``csaf_security_advisory``), e.g. CISA ICS advisories
(ICSA-...) and Siemens ProductCERT's SSA-... documents.

The product tree is flattened into :class:`AdvisoryProduct` records: the ``branches`` are walked
recursively (vendor -> product_family/product_name -> product_version or product_version_range), and
each ``product`` they end in, each root ``full_product_names`` entry and each ``relationships`` entry
becomes one record with its vendor, product name, version or range as written, and the CPE and model
numbers of its ``product_identification_helper``. Each vulnerability keeps its CVE, title, CWE, CVSS
v2/v3/v4 scores, the affected and fixed product ids and the remediations.
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
    Advisory,
    AdvisoryProduct,
    AdvisoryVulnerability,
    CpeMatch,
    CvssScore,
    Remediation,
)

__all__ = ["is_csaf", "parse_csaf", "parse_csaf_document"]

MAX_BRANCH_DEPTH = 32
"""Deeper product trees are rejected (real ones are 3-5 levels deep)."""

_AFFECTED = ("known_affected", "first_affected", "last_affected")
_FIXED = ("fixed", "first_fixed")
_SCORE_KEYS = (("cvss_v4", "4.0"), ("cvss_v3", "3.1"), ("cvss_v2", "2.0"))


def is_csaf(data: Any) -> bool:
    document = obj(data).get("document") if isinstance(data, dict) else None
    return isinstance(document, dict) and ("csaf_version" in document or "tracking" in document)


def parse_csaf(data: dict[str, Any], doc: FeedDocument) -> None:
    """Fill ``doc`` with the advisory of a parsed CSAF document (skipped and counted when unusable)."""
    doc.format = "csaf-2.0"
    try:
        advisory = parse_csaf_document(data, doc)
    except RECORD_ERRORS as exc:
        reason = str(exc) if isinstance(exc, RecordError) else f"{type(exc).__name__}: {exc}"
        doc.skip("advisory", reason)
        return
    doc.advisories.append(advisory)
    doc.feed_date = advisory.current_release
    doc.version = advisory.revision


def parse_csaf_document(data: dict[str, Any], doc: FeedDocument | None = None) -> Advisory:
    """A CSAF document as an :class:`Advisory`; a bad vulnerability entry is skipped (counted in ``doc``)."""
    document = obj(data.get("document"))
    tracking = obj(document.get("tracking"))
    advisory_id = tracking.get("id")
    if not isinstance(advisory_id, str) or not advisory_id.strip():
        raise RecordError("document.tracking.id is missing")
    publisher = obj(document.get("publisher"))
    namespace = text(publisher.get("namespace")) or text(publisher.get("name"))
    url = next(
        (
            reference["url"]
            for reference in map(obj, items(document.get("references")))
            if reference.get("category") == "self" and isinstance(reference.get("url"), str)
        ),
        None,
    )
    products = tuple(flatten_product_tree(obj(data.get("product_tree"))))
    vulnerabilities: list[AdvisoryVulnerability] = []
    for index, vulnerability in enumerate(items(data.get("vulnerabilities"))):
        try:
            vulnerabilities.append(_vulnerability(vulnerability, namespace))
        except RECORD_ERRORS as exc:
            if doc is None:
                raise
            reason = str(exc) if isinstance(exc, RecordError) else f"{type(exc).__name__}: {exc}"
            doc.skip(f"{advisory_id} vulnerability {index}", reason)
    return Advisory(
        id=advisory_id.strip(),
        title=text(document.get("title")),
        publisher=text(publisher.get("name")),
        initial_release=timestamp(tracking.get("initial_release_date")),
        current_release=timestamp(tracking.get("current_release_date")),
        revision=text(tracking.get("version")),
        url=url,
        products=products,
        vulnerabilities=tuple(vulnerabilities),
    )


def flatten_product_tree(tree: dict[str, Any]) -> list[AdvisoryProduct]:
    """Every product of a CSAF product tree, once per product id (the first definition wins)."""
    found: dict[str, AdvisoryProduct] = {}
    for branch in items(tree.get("branches")):
        _walk(branch, {}, found, 0)
    for full in items(tree.get("full_product_names")):
        product = _product(obj(full), {})
        if product is not None:
            found.setdefault(product.product_id, product)
    for relationship in map(obj, items(tree.get("relationships"))):
        full = obj(relationship.get("full_product_name"))
        base = found.get(text(relationship.get("product_reference")))
        context = {"vendor": base.vendor} if base else {}
        product = _product(full, context)
        if product is None:
            continue
        if base is not None:
            product = AdvisoryProduct(
                product_id=product.product_id,
                vendor=product.vendor,
                name=product.name,
                version=base.version,
                version_range=base.version_range,
                cpe=product.cpe or base.cpe,
                model_numbers=product.model_numbers or base.model_numbers,
            )
        found.setdefault(product.product_id, product)
    return list(found.values())


def _walk(branch: Any, context: dict[str, str], found: dict[str, AdvisoryProduct], depth: int) -> None:
    if depth > MAX_BRANCH_DEPTH:
        raise RecordError(f"product tree deeper than {MAX_BRANCH_DEPTH} levels")
    branch = obj(branch)
    category = text(branch.get("category"))
    name = text(branch.get("name"))
    here = dict(context)
    if category in ("vendor", "product_name", "product_version", "product_version_range", "product_family"):
        here[category] = name
    product = _product(obj(branch.get("product")), here)
    if product is not None:
        found.setdefault(product.product_id, product)
    for child in items(branch.get("branches")):
        _walk(child, here, found, depth + 1)


def _product(full: dict[str, Any], context: dict[str, str]) -> AdvisoryProduct | None:
    product_id = full.get("product_id")
    if not isinstance(product_id, str) or not product_id:
        return None
    helper = obj(full.get("product_identification_helper"))
    cpe = opt_text(helper.get("cpe"))
    vendor = context.get("vendor") or ""
    if not vendor and cpe:
        vendor = _cpe_vendor(cpe)
    version = context.get("product_version")
    version_range = context.get("product_version_range")
    return AdvisoryProduct(
        product_id=product_id,
        vendor=vendor,
        name=context.get("product_name") or text(full.get("name")) or context.get("product_family", ""),
        version=version or None,
        version_range=version_range or None,
        cpe=cpe,
        model_numbers=tuple(value for value in items(helper.get("model_numbers")) if isinstance(value, str)),
    )


def _cpe_vendor(cpe: str) -> str:
    """The vendor of a CPE 2.3 formatted string or a CPE 2.2 URI (``cpe:/o:siemens:...``)."""
    if cpe.startswith("cpe:2.3:"):
        vendor = CpeMatch(criteria=cpe).vendor
        return "" if vendor in ("*", "-") else vendor
    if cpe.startswith("cpe:/"):
        parts = cpe.split(":")
        return parts[2] if len(parts) > 2 else ""
    return ""


def _vulnerability(vulnerability: Any, namespace: str) -> AdvisoryVulnerability:
    vulnerability = obj(vulnerability)
    cve = opt_text(vulnerability.get("cve"))
    status = obj(vulnerability.get("product_status"))
    cwe = obj(vulnerability.get("cwe")).get("id")
    return AdvisoryVulnerability(
        cve=cve,
        title=text(vulnerability.get("title")),
        cvss=_scores(vulnerability.get("scores"), namespace),
        cwes=(cwe,) if isinstance(cwe, str) and cwe else (),
        known_affected=_ids(status, _AFFECTED),
        fixed=_ids(status, _FIXED),
        known_not_affected=_ids(status, ("known_not_affected",)),
        remediations=tuple(_remediation(item) for item in items(vulnerability.get("remediations"))),
    )


def _ids(status: dict[str, Any], keys: tuple[str, ...]) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for key in keys:
        for value in items(status.get(key)):
            if isinstance(value, str):
                found[value] = None
    return tuple(found)


def _scores(scores: Any, namespace: str) -> tuple[CvssScore, ...]:
    """CVSS scores of a vulnerability; ``primary`` stays reserved for NVD's own scores."""
    result: list[CvssScore] = []
    for entry in map(obj, items(scores)):
        for key, version in _SCORE_KEYS:
            data = obj(entry.get(key))
            if data:
                result.append(
                    cvss(
                        data.get("version") or version,
                        data.get("vectorString"),
                        data.get("baseScore"),
                        data.get("baseSeverity"),
                        namespace,
                        False,
                    )
                )
    return tuple(result)


def _remediation(item: Any) -> Remediation:
    item = obj(item)
    category = item.get("category")
    if not isinstance(category, str) or not category:
        raise RecordError("remediation without a category")
    return Remediation(
        category=category,
        details=text(item.get("details")),
        url=opt_text(item.get("url")),
        product_ids=tuple(value for value in items(item.get("product_ids")) if isinstance(value, str)),
    )
