"""Built-in operator: choose the series a pipeline processes by rules written as data.

In the spirit of MONAI Deploy's series selector.  Rules are a list (or
MONAI's ``{"selections": [...]}``) of mappings::

    - name: thin chest CT                   # optional, used in messages
      conditions:                           # all must hold (AND)
        Modality: CT                        # a value: equal (strings ignore case)
        BodyPartExamined: [CHEST, THORAX]   # a list: one of these values
        SeriesDescription: {regex: "(?i)lung|chest"}   # re.search on the value
        SliceThickness: {min: 0.5, max: 3}  # inclusive numeric range
        ImageType: {contains: [ORIGINAL, PRIMARY]}     # every one among the values
        ContrastBolusAgent: {present: false}           # absent (or empty)
    - name: any CT                          # tried when the first matches nothing (OR)
      conditions: {Modality: CT}

A condition mapping may combine ``equals``, ``in``, ``regex``, ``min``,
``max``, ``contains`` and ``present`` (all must hold).  On a multi-valued
attribute, ``equals``/``in`` hold when one value matches, ``min``/``max``
when every value is in range, and ``regex`` searches the values joined by
backslashes.  Conditions are checked on the header of the series' first
file.  Rules are tried in order; the first rule matching any series decides,
and among the series it matches the one with the most files wins.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from clara_ray.context import OperatorContext
from clara_ray.errors import SeriesError
from clara_ray.operators.series_loader import read_series
from clara_ray.storage import PayloadView
from clara_ray.volume import Volume

__all__ = [
    "CONDITION_KEYS",
    "RULE_KEYS",
    "Condition",
    "SelectionRule",
    "SeriesCandidate",
    "SeriesSelector",
    "scan_series",
    "select_series",
]

logger = logging.getLogger(__name__)

RULE_KEYS = ("name", "conditions")
CONDITION_KEYS = ("equals", "in", "regex", "min", "max", "contains", "present")
_POSITIONED = ("SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient")
# Values of these are shown in messages; others (names, IDs, dates) are withheld.
_SHOWN_VRS = {"CS", "DS", "IS", "US", "SS", "UL", "SL", "FL", "FD", "UI"}
_SHOWN_KEYWORDS = {
    "SeriesDescription",
    "StudyDescription",
    "ProtocolName",
    "Manufacturer",
    "ManufacturerModelName",
}

Scalar = str | int | float


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str) or _is_number(value)


def _values(raw: Any) -> list[str]:
    """An attribute's values as strings ([] when absent or empty)."""
    if raw is None:
        return []
    if isinstance(raw, MultiValue):
        return [str(v) for v in raw]
    return [str(raw)] if str(raw) != "" else []


def _same(actual: str, wanted: Scalar) -> bool:
    if _is_number(wanted):
        try:
            return float(actual) == float(wanted)
        except ValueError:
            return False
    return actual.strip().casefold() == str(wanted).strip().casefold()


@dataclass(frozen=True)
class Condition:
    """What one attribute (by DICOM keyword) must satisfy; every part set must hold."""

    keyword: str
    allowed: tuple[Scalar, ...] = ()
    regex: re.Pattern[str] | None = None
    minimum: float | None = None
    maximum: float | None = None
    contains: tuple[str, ...] = ()
    present: bool | None = None

    def _show(self, values: list[str]) -> str:
        vr = dictionary_VR(self.keyword)
        if vr in _SHOWN_VRS or self.keyword in _SHOWN_KEYWORDS:
            return repr(values[0] if len(values) == 1 else values)
        return "(value withheld)"

    def mismatch(self, ds: Dataset) -> str | None:
        """Why ``ds`` fails this condition, or None when it holds."""
        values = _values(ds.get(self.keyword))
        if not values:
            return None if self.present is False else f"{self.keyword} is absent"
        if self.present is False:
            return f"{self.keyword} is present"
        shown = self._show(values)
        if self.allowed and not any(_same(v, a) for v in values for a in self.allowed):
            return f"{self.keyword} {shown} is not one of {list(self.allowed)}"
        if self.regex is not None and not self.regex.search("\\".join(values)):
            return f"{self.keyword} {shown} does not match regex {self.regex.pattern!r}"
        if self.minimum is not None or self.maximum is not None:
            try:
                numbers = [float(v) for v in values]
            except ValueError:
                return f"{self.keyword} {shown} is not numeric"
            if self.minimum is not None and min(numbers) < self.minimum:
                return f"{self.keyword} {shown} is below min {self.minimum:g}"
            if self.maximum is not None and max(numbers) > self.maximum:
                return f"{self.keyword} {shown} is above max {self.maximum:g}"
        missing = [c for c in self.contains if not any(_same(v, c) for v in values)]
        if missing:
            return f"{self.keyword} {shown} lacks {missing}"
        return None


@dataclass(frozen=True)
class SelectionRule:
    """Conditions that must all hold for a series to be selected."""

    name: str
    conditions: tuple[Condition, ...] = ()

    def mismatch(self, ds: Dataset) -> str | None:
        """The first failing condition's reason, or None when every condition holds."""
        for condition in self.conditions:
            reason = condition.mismatch(ds)
            if reason is not None:
                return reason
        return None


@dataclass(frozen=True)
class SeriesCandidate:
    """A positioned image series of a payload: its UID, first header and file names."""

    series_instance_uid: str
    header: Dataset
    files: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        modality = str(self.header.get("Modality") or "no modality")
        return f"series {self.series_instance_uid} ({modality}, {len(self.files)} files)"


def _numeric(where: str, key: str, value: Any) -> float:
    if not _is_number(value):
        raise ValueError(f"{where}: {key} must be a number, got {value!r}")
    return float(value)


def _scalars(where: str, key: str, value: Any) -> tuple[Scalar, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    if not items or not all(_is_scalar(v) for v in items):
        raise ValueError(
            f"{where}: {key} must be a string or number, or a non-empty list of them, got {value!r}"
        )
    return tuple(items)


def _condition(where: str, keyword: str, spec: Any) -> Condition:
    if tag_for_keyword(keyword) is None:
        raise ValueError(f"{where}: {keyword!r} is not a DICOM attribute keyword")
    where = f"{where}, {keyword}"
    if not isinstance(spec, Mapping):
        return Condition(keyword, allowed=_scalars(where, "value", spec))
    unknown = sorted(set(spec) - set(CONDITION_KEYS))
    if unknown:
        raise ValueError(
            f"{where}: unknown condition key(s) {unknown}; expected some of "
            f"{', '.join(CONDITION_KEYS)}"
        )
    if not spec:
        raise ValueError(f"{where}: empty condition; expected some of {', '.join(CONDITION_KEYS)}")
    allowed = _scalars(where, "equals", spec["equals"]) if "equals" in spec else ()
    allowed += _scalars(where, "in", spec["in"]) if "in" in spec else ()
    regex = None
    if "regex" in spec:
        if not isinstance(spec["regex"], str):
            raise ValueError(f"{where}: regex must be a string, got {spec['regex']!r}")
        try:
            regex = re.compile(spec["regex"])
        except re.error as exc:
            raise ValueError(f"{where}: regex {spec['regex']!r} is invalid: {exc}") from exc
    minimum = _numeric(where, "min", spec["min"]) if "min" in spec else None
    maximum = _numeric(where, "max", spec["max"]) if "max" in spec else None
    if minimum is not None and maximum is not None and minimum > maximum:
        raise ValueError(f"{where}: min {minimum:g} is above max {maximum:g}")
    contains: tuple[str, ...] = ()
    if "contains" in spec:
        contains = tuple(str(v) for v in _scalars(where, "contains", spec["contains"]))
    present = spec.get("present")
    if present is not None and not isinstance(present, bool):
        raise ValueError(f"{where}: present must be true or false, got {present!r}")
    return Condition(keyword, allowed, regex, minimum, maximum, contains, present)


def _rule(index: int, data: Any) -> SelectionRule:
    where = f"selection rule {index + 1}"
    if not isinstance(data, Mapping):
        raise TypeError(f"{where} must be a mapping with keys {RULE_KEYS}, got {data!r}")
    unknown = sorted(set(data) - set(RULE_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected {', '.join(RULE_KEYS)}")
    name = data.get("name", f"rule {index + 1}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: name must be a non-empty string, got {name!r}")
    where = f"selection rule {index + 1} ({name!r})"
    conditions = data.get("conditions", {})
    if not isinstance(conditions, Mapping):
        raise ValueError(
            f"{where}: conditions must map DICOM keywords to conditions, got {conditions!r}"
        )
    return SelectionRule(name, tuple(_condition(where, k, v) for k, v in conditions.items()))


class SeriesSelector:
    """Selection rules, validated on construction (errors name the rule and the key)."""

    def __init__(self, rules: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> None:
        if isinstance(rules, Mapping):
            if set(rules) != {"selections"}:
                raise ValueError(
                    "series selection rules given as a mapping must have the single key "
                    f"'selections' (MONAI Deploy's layout), got keys {sorted(rules)}"
                )
            rules = rules["selections"]
        if not isinstance(rules, list | tuple) or not rules:
            raise ValueError(f"series selection rules must be a non-empty list, got {rules!r}")
        self.rules = tuple(_rule(i, r) for i, r in enumerate(rules))

    def select(
        self, candidates: Sequence[SeriesCandidate]
    ) -> tuple[SelectionRule, SeriesCandidate]:
        """The first rule matching any candidate, and its candidate with the most files.

        Raises :class:`SeriesError` listing, for every rule, why each series failed.
        """
        reasons = []
        for rule in self.rules:
            matched = [c for c in candidates if rule.mismatch(c.header) is None]
            if matched:
                return rule, max(matched, key=lambda c: len(c.files))
            failures = "; ".join(f"{c.describe()}: {rule.mismatch(c.header)}" for c in candidates)
            reasons.append(f"rule {rule.name!r}: {failures or 'no image series at all'}")
        raise SeriesError("no series matches the selection rules: " + " | ".join(reasons))


def scan_series(files: Iterable[tuple[str, IO[bytes]]]) -> list[SeriesCandidate]:
    """Positioned image series among ``files`` (name, stream), reading headers only.

    Files that are not DICOM, or not positioned images (reports, SEG,
    presentation states), are skipped with a log line.  Series come in the
    order of their first file.
    """
    headers: dict[str, Dataset] = {}
    names: dict[str, list[str]] = {}
    for name, fp in files:
        try:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
        except InvalidDicomError:
            logger.info("skipping %s: not a DICOM file", name)
            continue
        if any(k not in ds for k in _POSITIONED):
            sop_class = getattr(ds.get("SOPClassUID"), "name", "unknown SOP class")
            logger.info("skipping %s (%s): not a positioned image", name, sop_class)
            continue
        uid = str(ds.SeriesInstanceUID)
        headers.setdefault(uid, ds)
        names.setdefault(uid, []).append(name)
    return [SeriesCandidate(uid, headers[uid], tuple(names[uid])) for uid in headers]


def _load(payload: PayloadView, candidate: SeriesCandidate) -> Volume:
    def files() -> Iterable[tuple[str, IO[bytes]]]:
        for name in candidate.files:
            with payload.open(name) as fp:
                yield name, fp

    volumes = read_series(files())
    if not volumes:
        raise SeriesError(f"{candidate.describe()} holds no image slices the loader can read")
    if len(volumes) > 1:
        logger.info(
            "%s has %d stacks of different orientation; taking the one with the most slices",
            candidate.describe(),
            len(volumes),
        )
    return max(volumes, key=lambda v: v.shape[0])


def select_series(
    ctx: OperatorContext,
    payload: PayloadView,
    rules: Sequence[Mapping[str, Any]] | Mapping[str, Any],
) -> dict[str, Volume]:
    """Load the series of the payload that the selection ``rules`` choose.

    Inputs: ``payload``, the job's payload (DICOM files, any folder layout).
    Outputs: ``volume``, the chosen series as a :class:`Volume` (as
    ``load_series`` makes it: HU for CT, true geometry, source references).
    Args: ``rules``, the selection rules (see this module's docstring).
    Files: none.  Raises ``ValueError``/``TypeError`` for invalid rules and
    :class:`SeriesError` naming every rule and series when nothing matches.
    """
    selector = SeriesSelector(rules)
    candidates = scan_series(payload.iter_files())
    try:
        rule, chosen = selector.select(candidates)
    except SeriesError as exc:
        raise SeriesError(f"payload {payload.payload_id}: {exc}") from None
    volume = _load(payload, chosen)
    ctx.logger.info(
        "select_series job=%s operator=%s: rule %r chose series %s: %d slices of %dx%d",
        ctx.job_id,
        ctx.operator,
        rule.name,
        chosen.series_instance_uid,
        *volume.shape,
    )
    return {"volume": volume}
