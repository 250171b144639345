"""De-identification of DICOM datasets: the PS3.15 Annex E *Basic Application Level
Confidentiality Profile*, table-driven.

Which implementation, and why
-----------------------------
The **table** is the standard's own Table E.1-1 (edition 2026c, ~650 attributes with their
action codes D/Z/X/U/Z-D/X-Z/X-D/X-Z-D/X-Z-U*), as shipped by the maintained
``dicom-anonymizer`` package (KitwareMedical, BSD; it regenerates the table from each
published edition of the standard). The **engine** applying it is ours (~200 lines below),
because that package's own engine does not fit a multi-user server:

* its UID replacement keeps one *module-global* old→new map for the whole process (UIDs of
  one user's export would be reused for another's); here the map is an argument, one per
  export (:func:`new_uid_map`);
* it applies the table to top-level elements only (nested sequences keep their
  identifiers), turns every compound code into "D" (dummy text instead of removal), turns a
  removed date into ``00010101`` and prints to stdout.

``dicognito`` was considered too: it *replaces* identifiers with plausible fake values
(names, dates shifted) and keeps private tags, which is not the Basic Profile.

What :func:`deidentify` does
----------------------------
On a copy of the dataset, at every nesting level (sequence items included):

* **X** (and every compound code starting with X: X/Z, X/D, X/Z/D, X/Z/U*) → removed;
* **Z**, **Z/D** → present with an empty value (sequences: no items);
* **D** → a dummy value of the right VR (``ANONYMIZED``, ``19000101``...); sequences and
  binary values become empty;
* **U** → a new UID from the per-export ``uid_map`` (the same source UID always gets the
  same new UID within one export, so references between files stay consistent; the file
  meta's MediaStorageSOPInstanceUID follows SOPInstanceUID);
* **private** elements (odd groups, creators included) → removed; curve (50xx) and overlay
  comments/data (60xx,4000/3000) → removed;

plus MedLens' own, stricter-than-the-profile safety net for attributes the table does not
list: any person name (VR PN) is emptied, any other date/time (DA/DT/TM) removed, any
non-standard UID (not ``1.2.840.10008.*``) mapped through ``uid_map``, any keyword in
:data:`analysis.privacy.IDENTIFYING_KEYWORDS` removed, an unreadable element removed, and
any identifying value of the source (name parts, IDs, dates, institution...) found inside
a remaining text value is replaced by ``[removed]``. Finally ``PatientIdentityRemoved =
YES``, ``DeidentificationMethod`` (text) + ``DeidentificationMethodCodeSequence`` (DCM
113100 "Basic Application Confidentiality Profile") and
``LongitudinalTemporalInformationModified = REMOVED`` are set.

Pixels are not touched: text burned into the pixels is *not* removed by this profile.
:func:`burned_in_risk` says when that risk exists; :func:`deidentify` refuses such a dataset
unless ``allow_burned_in=True`` (the user confirmed, see :func:`ui.privacy.burned_in_gate`).

:func:`preview_removal` lists what would be removed or replaced — tag, keyword and action
only, never a value.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import pandas as pd

from analysis import privacy

__all__ = [
    "PROFILE_EDITION", "DEID_METHOD", "ACTION_WORDS", "BurnedInAnnotationError", "action_for",
    "new_uid_map", "deidentify", "method_code_sequence", "preview_removal", "burned_in_risk", "BURNED_IN_MODALITIES",
]

from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as _table  # noqa: E402

PROFILE_EDITION = "2026c"
DEID_METHOD = f"DICOM PS3.15 Annex E Basic Profile (Table E.1-1, {PROFILE_EDITION}); MedLens"
_CATEGORY_CODES = {
    "D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D", "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*",
}

#: What each action does to a present element, in the words the preview shows.
ACTION_WORDS = {
    "X": "would be removed",
    "Z": "would be emptied",
    "D": "would be replaced by a dummy value",
    "U": "would be replaced by a new UID",
    "P": "would be removed (private tag)",
    "N": "would be emptied (person name)",
    "T": "would be removed (date/time)",
    "I": "would be removed (identifying attribute)",
    "S": "identifying text inside would be replaced by [removed]",
}


def _build_table() -> tuple[dict[int, str], list[tuple[int, int, int, int, str]]]:
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for cat, code in _CATEGORY_CODES.items():
        for t in getattr(_table, cat):
            if len(t) == 2:
                exact[(t[0] << 16) | t[1]] = code
            else:
                masked.append((t[0], t[1], t[2], t[3], code))
    return exact, masked


_EXACT, _MASKED = _build_table()

#: Modalities that often carry text burned into the pixels (ultrasound, secondary capture,
#: other, photographs, endoscopy, microscopy, documents, screenshots).
BURNED_IN_MODALITIES = frozenset({"US", "SC", "OT", "XC", "ES", "GM", "SM", "DOC", "IVUS", "OP", "VL"})
_SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
_STANDARD_UID_ROOT = "1.2.840.10008."
# Type 1/2 attributes kept present (empty) so the result still reads as a patient/study.
_KEEP_EMPTY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
               "ReferringPhysicianName", "StudyID", "AccessionNumber")
_STRING_VRS = {"AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
_DUMMY = {"PN": "ANONYMIZED", "DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000Y",
          "AE": "ANONYMIZED", "CS": "ANONYMIZED", "DS": "0", "IS": "0"}


class BurnedInAnnotationError(ValueError):
    """The pixels may carry burned-in identifying text and the user has not confirmed."""


# ----------------------------------------------------------------------------- table lookup
def action_for(tag: int, vr: str | None = None, keyword: str = "") -> str | None:
    """Action code for an element: the Table E.1-1 code (``X``, ``Z``, ``D``, ``U``,
    ``Z/D``, ``X/Z``, ``X/D``, ``X/Z/D``, ``X/Z/U*``), ``P`` for a private element, MedLens'
    safety-net codes ``N`` (person name), ``T`` (date/time), ``I`` (identifying keyword),
    ``U`` for a non-standard UID not in the table; ``None`` when the element is kept."""
    tag = int(tag)
    group, elem = tag >> 16, tag & 0xFFFF
    if group & 1:
        return "P"
    code = _EXACT.get(tag)
    if code is not None:
        return code
    for g, e, gm, em, c in _MASKED:
        if group & gm == g & gm and elem & em == e & em:
            return c
    if vr == "PN":
        return "N"
    if vr in ("DA", "DT", "TM"):
        return "T"
    if keyword and keyword in privacy.IDENTIFYING_KEYWORDS:
        return "I"
    return None


def _resolve(code: str) -> str:
    """The action actually applied for a (possibly compound) code: X, Z, D, U or keep ''."""
    if code in ("X", "P", "T", "I") or code.startswith("X"):
        return "X"
    if code in ("Z", "Z/D", "N"):
        return "Z"
    return code  # "D", "U"


# ----------------------------------------------------------------------------- UIDs
def new_uid_map() -> dict[str, str]:
    """A fresh old→new UID mapping: use one per export (all files of one export share it)."""
    return {}


def _map_uid(value: Any, uid_map: dict[str, str]) -> str:
    from pydicom.uid import generate_uid

    old = str(value).strip().rstrip("\x00")
    if not old:
        return ""
    if old not in uid_map:
        uid_map[old] = generate_uid(prefix=None)  # 2.25.<random UUID>: says nothing about the source
    return uid_map[old]


def _is_standard_uid(value: Any) -> bool:
    return str(value).strip().rstrip("\x00").startswith(_STANDARD_UID_ROOT)


# ----------------------------------------------------------------------------- walking
@dataclass
class _Hit:
    path: str
    tag: int
    keyword: str
    vr: str
    code: str


def _elements(ds) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    for tag in list(ds.keys()):
        try:
            yield ds[tag]
        except Exception:  # noqa: BLE001 - an unreadable element (forced read): removed
            yield _Broken(tag)


class _Broken:
    def __init__(self, tag):  # type: ignore[no-untyped-def]
        self.tag = tag
        self.VR = "UN"
        self.keyword = ""
        self.value = None


def _walk(ds, path: str = "") -> Iterator[tuple[Any, Any, str, str]]:  # type: ignore[no-untyped-def]
    """(dataset, element, path, code) for every element, depth first (items of a sequence
    that is itself removed or emptied are not visited)."""
    for el in _elements(ds):
        kw = getattr(el, "keyword", "") or ""
        vr = str(getattr(el, "VR", "") or "")
        if isinstance(el, _Broken):
            code = "X"
        else:
            code = action_for(int(el.tag), vr, kw)
            if code is None and vr == "UI":
                vals = el.value if isinstance(el.value, (list, tuple)) or type(el.value).__name__ == "MultiValue" else [el.value]
                if any(v and not _is_standard_uid(v) for v in vals):
                    code = "U"
        name = f"{path}{kw or _tag_str(el.tag)}"
        yield ds, el, name, code or ""
        if vr == "SQ" and (code is None or code == "") and not isinstance(el, _Broken):
            for i, item in enumerate(el.value or []):
                yield from _walk(item, f"{name}[{i}] > ")


def _tag_str(tag: Any) -> str:
    t = int(tag)
    return f"({t >> 16:04X},{t & 0xFFFF:04X})"


# ----------------------------------------------------------------------------- preview
def preview_removal(ds) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """What :func:`deidentify` would remove or replace, one row per element present:
    ``tag``, ``keyword`` (``path > keyword`` inside sequences), ``action`` (the Table
    E.1-1 code, or MedLens' safety-net code), ``effect`` (in words). **No values**: the
    preview of an identifying element never shows what it contains."""
    rows = []
    forbidden = _forbidden(ds)
    for _, el, name, code in _walk(ds):
        if not code:
            if _has_identifying_text(el, forbidden):
                code = "S"
            else:
                continue
        if code == "P":
            name = "private element" if "[" not in name else name.rsplit(" > ", 1)[0] + " > private element"
        effect = ACTION_WORDS[code] if code in ("P", "N", "T", "I", "S") else ACTION_WORDS[_resolve(code)]
        rows.append({"tag": _tag_str(el.tag), "keyword": name, "action": code, "effect": effect})
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        rows.append({"tag": "(0002,0003)", "keyword": "MediaStorageSOPInstanceUID", "action": "U",
                     "effect": ACTION_WORDS["U"]})
    return pd.DataFrame(rows, columns=["tag", "keyword", "action", "effect"])


# ----------------------------------------------------------------------------- deidentify
def _forbidden(ds) -> list[str]:  # type: ignore[no-untyped-def]
    try:
        return [v for v in privacy.identifying_values(ds) if len(v) >= 3]
    except Exception:  # noqa: BLE001
        return []


def _has_identifying_text(el, forbidden: list[str]) -> bool:  # type: ignore[no-untyped-def]
    if not forbidden or str(getattr(el, "VR", "")) not in _STRING_VRS:
        return False
    text = str(el.value or "")
    low = text.lower()
    return any(w.lower() in low for w in forbidden)


def _scrub(text: str, forbidden: list[str]) -> str:
    for w in sorted(set(forbidden), key=len, reverse=True):
        text = re.sub(re.escape(w), "[removed]", text, flags=re.IGNORECASE)
    return text


def _empty_value(el) -> None:  # type: ignore[no-untyped-def]
    from pydicom.sequence import Sequence

    if el.VR == "SQ":
        el.value = Sequence([])
    elif el.VR in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        el.value = b""
    else:
        el.value = None  # zero length for every other VR


def _dummy_value(el, uid_map: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    vr = el.VR
    if vr == "UI":
        _uid_value(el, uid_map)
    elif vr in _DUMMY:
        el.value = _DUMMY[vr]
    elif vr in _STRING_VRS:
        el.value = "ANONYMIZED"
    elif vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
        el.value = 0
    else:  # sequences, binary: no content is the safest dummy
        _empty_value(el)


def _uid_value(el, uid_map: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    v = el.value
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        el.value = [_map_uid(x, uid_map) for x in v]
    elif v:
        el.value = _map_uid(v, uid_map)


def burned_in_risk(ds_or_metadata: Any) -> str | None:
    """Why the *pixels* may carry identifying text, or ``None``.

    ``ds_or_metadata``: a pydicom Dataset, an :class:`analysis.image.Image`, or a metadata
    dict (``Image.metadata``: ``burned_in_annotation``, ``modality``, ``sop_class``,
    ``format``). Risky: BurnedInAnnotation = YES; or absent for modalities that often carry
    it (US, SC, OT, photographs, endoscopy ...) or a Secondary Capture; or a non-DICOM
    picture (PNG/JPEG/TIFF: cannot declare it; screenshots often show names)."""
    modality, burned, sop, fmt = _risk_fields(ds_or_metadata)
    if burned == "YES":
        return "BurnedInAnnotation is YES: the pixels contain text that may identify the patient."
    if burned == "NO":
        return None
    if fmt and fmt not in ("DICOM", "NIFTI", "NIFTI-1", "NIFTI-2"):
        return (f"This {fmt} picture cannot declare whether text is burned into its pixels; screenshots "
                "and photographs often show names or dates.")
    if fmt.startswith("NIFTI"):
        return None
    if modality in BURNED_IN_MODALITIES or sop.startswith(_SECONDARY_CAPTURE_PREFIX) or "secondary capture" in sop.lower():
        what = "Secondary Capture" if (sop.startswith(_SECONDARY_CAPTURE_PREFIX) or "secondary capture" in sop.lower()) else modality
        return (f"BurnedInAnnotation is not stated and {what} images often carry burned-in text "
                "(names, dates, IDs) in their pixels.")
    return None


def _risk_fields(src: Any) -> tuple[str, str, str, str]:
    if isinstance(src, Mapping):
        meta, modality = src, str(src.get("modality", "") or "")
    elif hasattr(src, "metadata") and hasattr(src, "modality") and not hasattr(src, "file_meta"):
        meta, modality = src.metadata or {}, str(getattr(src, "modality", "") or meta.get("modality", ""))
    else:  # a pydicom Dataset
        def g(kw: str) -> str:
            try:
                return str(src.get(kw, "") or "")
            except Exception:  # noqa: BLE001
                return ""
        sop = g("SOPClassUID")
        if not sop and getattr(src, "file_meta", None) is not None:
            try:
                sop = str(src.file_meta.get("MediaStorageSOPClassUID", "") or "")
            except Exception:  # noqa: BLE001
                sop = ""
        return g("Modality").strip().upper(), g("BurnedInAnnotation").strip().upper(), sop.strip(), "DICOM"
    burned = str(meta.get("burned_in_annotation", "") or "").strip().upper()
    fmt = str(meta.get("format", "") or "").strip().upper()
    sop = str(meta.get("sop_class", "") or "")
    if not fmt and (meta.get("sop_class") or meta.get("bits_allocated") is not None):
        fmt = "DICOM"
    return modality.strip().upper(), burned, sop, fmt


def deidentify(ds, uid_map: dict[str, str] | None = None, *, allow_burned_in: bool = False):  # type: ignore[no-untyped-def]
    """A de-identified **copy** of ``ds`` (see the module docstring for every rule).

    ``uid_map`` is the per-export old→new UID mapping (:func:`new_uid_map`); pass the same
    dict for every file of one export so Study/Series/Frame-of-Reference UIDs and
    references between the files stay consistent. Raises :class:`BurnedInAnnotationError`
    when :func:`burned_in_risk` finds a risk and ``allow_burned_in`` is false.
    """
    risk = burned_in_risk(ds)
    if risk and not allow_burned_in:
        raise BurnedInAnnotationError(risk + " Confirm that the pixels hold no identifying text to export it.")
    uid_map = new_uid_map() if uid_map is None else uid_map
    forbidden = _forbidden(ds)
    out = copy.deepcopy(ds)
    _apply(out, uid_map, forbidden)

    meta = getattr(out, "file_meta", None)
    if meta is not None:
        for kw in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle",
                   "SourcePresentationAddress", "SendingPresentationAddress", "ReceivingPresentationAddress",
                   "PrivateInformationCreatorUID", "PrivateInformation"):
            if kw in meta:
                del meta[kw]
        sop = out.get("SOPInstanceUID")
        if sop:
            meta.MediaStorageSOPInstanceUID = str(sop)
        elif "MediaStorageSOPInstanceUID" in meta:
            meta.MediaStorageSOPInstanceUID = _map_uid(meta.MediaStorageSOPInstanceUID, uid_map)
    for kw in _KEEP_EMPTY:
        if kw not in out:
            setattr(out, kw, "")
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = DEID_METHOD
    out.DeidentificationMethodCodeSequence = method_code_sequence()
    out.LongitudinalTemporalInformationModified = "REMOVED"
    return out  # BurnedInAnnotation is kept as it was: MedLens never asserts "NO" for the source


def method_code_sequence():  # type: ignore[no-untyped-def]
    """``DeidentificationMethodCodeSequence`` value: (113100, DCM, "Basic Application
    Confidentiality Profile")."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    return Sequence([code])


def _apply(ds, uid_map: dict[str, str], forbidden: list[str]) -> None:  # type: ignore[no-untyped-def]
    for el in list(_elements(ds)):
        if isinstance(el, _Broken):
            _delete(ds, el.tag)
            continue
        vr = str(el.VR)
        code = action_for(int(el.tag), vr, el.keyword or "")
        if code is None and vr == "UI":
            if _nonstandard_uid(el):
                _uid_value(el, uid_map)
            continue
        if code is None:
            if vr == "SQ":
                for item in el.value or []:
                    _apply(item, uid_map, forbidden)
            elif forbidden and vr in _STRING_VRS and el.value:
                el.value = _scrub_value(el.value, forbidden)
            continue
        applied = _resolve(code)
        if applied == "X":
            _delete(ds, el.tag)
        elif applied == "Z":
            _empty_value(el)
        elif applied == "U":
            if vr == "UI":
                _uid_value(el, uid_map)
            else:
                _empty_value(el)
        else:  # D
            _dummy_value(el, uid_map)


def _nonstandard_uid(el) -> bool:  # type: ignore[no-untyped-def]
    v = el.value
    vals = v if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue" else [v]
    return any(x and not _is_standard_uid(x) for x in vals)


def _scrub_value(value: Any, forbidden: list[str]) -> Any:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_scrub(str(v), forbidden) for v in value]
    return _scrub(str(value), forbidden)


def _delete(ds, tag) -> None:  # type: ignore[no-untyped-def]
    try:
        del ds[tag]
    except Exception:  # noqa: BLE001
        pass
