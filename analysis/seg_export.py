"""Exports of a segmentation: mask PNG, region-table CSV and DICOM SEG (highdicom).

DICOM SEG must reference the image it segments. MedLens never keeps the original DICOM
dataset of an image (only pixels in physical units and allow-listed metadata), and copying
an original's patient/study module into an export would leak identifiers. So the SEG
always references a **de-identified source** rebuilt from the :class:`~analysis.image.Image`
with pydicom (:func:`deidentified_source`): same pixels (physical units through
RescaleSlope/Intercept), spacing, modality and window; empty patient name / ID / birth date,
no dates, no institution, and fresh UIDs derived only from the image's content digest.
:func:`dicom_seg_zip` bundles both files so the reference can be resolved.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
import pandas as pd

from analysis.image import Image

__all__ = ["mask_png", "table_csv", "deidentified_source", "dicom_seg", "dicom_seg_zip", "read_seg_mask", "SOFTWARE_VERSION"]

SOFTWARE_VERSION = "MedLens 0.1"

_BLANK_IDENTITY = {
    "PatientBirthDate": "",
    "PatientSex": "",
    "StudyDate": "",
    "SeriesDate": "",
    "ContentDate": "",
    "StudyTime": "",
    "SeriesTime": "",
    "ContentTime": "",
    "StudyID": "",
    "AccessionNumber": "",
    "ReferringPhysicianName": "",
    "Manufacturer": "MedLens (de-identified source rebuilt from pixels)",
}


def mask_png(mask_or_labels: np.ndarray) -> bytes:
    """PNG bytes: a mask as 8-bit 0/255; a label image as 16-bit labels (values kept)."""
    from PIL import Image as PILImage

    a = np.asarray(mask_or_labels)
    if a.ndim != 2:
        raise ValueError(f"a mask PNG needs a 2-D array; got shape {a.shape}")
    buf = io.BytesIO()
    if a.dtype == bool or (a.size and a.max() <= 1 and a.min() >= 0):
        PILImage.fromarray(((a > 0) * 255).astype(np.uint8), mode="L").save(buf, format="PNG")
    else:
        if a.min() < 0 or a.max() > 65535:
            raise ValueError("label values must lie in 0..65535 for a 16-bit PNG")
        PILImage.fromarray(a.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def table_csv(table: pd.DataFrame) -> bytes:
    """CSV bytes of a region table (UTF-8, no index)."""
    return table.to_csv(index=False).encode("utf-8")


def _rescale_for(pixels: np.ndarray) -> tuple[float, float, Any]:
    """(slope, intercept, dtype) storing ``pixels`` (physical units) losslessly when they are
    integers that fit 16 bits, otherwise to 1/65535 of their range."""
    a = np.asarray(pixels, dtype=np.float64)
    lo, hi = float(np.min(a)), float(np.max(a))
    if np.allclose(a, np.round(a)) and lo >= -32768 and hi <= 32767:
        return 1.0, 0.0, np.int16
    if np.allclose(a, np.round(a)) and lo >= 0 and hi <= 65535:
        return 1.0, 0.0, np.uint16
    span = hi - lo if hi > lo else 1.0
    return span / 65535.0, lo, np.uint16


def _slice_thickness(image: Image) -> float:
    """SliceThickness for the rebuilt source (required by SEG pixel measures): the file's own
    value when known, else the slice spacing, else a nominal 1 mm (a 2-D image has none)."""
    for v in (image.metadata.get("slice_thickness"), image.slice_spacing):
        try:
            f = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if f > 0:
            return f
    return 1.0


def deidentified_source(image: Image) -> "Any":
    """A pydicom Dataset of ``image``'s plane (greyscale, physical units kept via the
    modality LUT) with no patient identifiers and UIDs derived from the content digest."""
    import pydicom

    from analysis.dicomwrite import deterministic_uid, dicom_bytes

    plane = image.middle_plane()
    pixels = plane.grey()
    slope, intercept, dtype = _rescale_for(pixels)
    seed = f"medlens-source:{plane.digest}"
    modality = plane.modality if plane.modality in ("CT", "MR", "PT", "CR", "NM", "US") else "OT"
    if modality in ("US",):  # rebuilt as greyscale: store as secondary capture
        modality = "OT"
    data = dicom_bytes(
        pixels,
        modality=modality,
        spacing=plane.spacing,
        rescale_slope=slope,
        rescale_intercept=intercept,
        window=plane.window,
        photometric="MONOCHROME1" if plane.invert else "MONOCHROME2",
        uid_seed=seed,
        study_uid=deterministic_uid("study", seed),
        series_uid=deterministic_uid("series", seed),
        frame_uid=deterministic_uid("frame", seed),
        dtype=dtype,
        patient_name="",
        patient_id="",
        extra=_BLANK_IDENTITY,
        position=(0.0, 0.0, 0.0) if plane.spacing else None,
        slice_thickness=_slice_thickness(plane),
        rescale_type="HU" if modality == "CT" else "US",
    )
    ds = pydicom.dcmread(io.BytesIO(data))
    if not plane.spacing:
        # no physical geometry (a photograph): no frame of reference, no plane position
        for kw in ("FrameOfReferenceUID", "PositionReferenceIndicator", "ImagePositionPatient",
                   "ImageOrientationPatient", "SliceThickness"):
            if kw in ds:
                delattr(ds, kw)
    return ds


def _category(kind: str) -> tuple[Any, Any]:
    from pydicom.sr.codedict import codes

    if kind == "lesion":
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion
    return codes.SCT.Tissue, codes.SCT.Tissue


def _family(method: str) -> Any:
    from pydicom.sr.codedict import codes

    fam = codes.cid7162
    m = method.split(".")[-1]
    if m in ("canny", "sobel", "scharr", "prewitt", "roberts", "log", "dog"):
        return fam.EdgeDetection
    if m in ("chan_vese", "morph_chan_vese", "morph_gac"):
        return fam.DeformableModels
    if m in ("slic", "felzenszwalb"):
        return fam.ClusterAnalysis
    if m in ("region_growing", "random_walker", "watershed"):
        return fam.NeighborhoodAnalysis
    if m in ("fill_holes", "remove_small", "opening", "closing", "keep_largest"):
        return fam.MorphologicalOperations
    return fam.HistogramAnalysis


def dicom_seg(mask: np.ndarray, image: Image, *, method: str = "segmentation", label: str = "Segment",
              kind: str = "tissue", source: Any = None) -> tuple[bytes, Any]:
    """(SEG bytes, source Dataset): a binary DICOM Segmentation of ``mask`` referencing the
    de-identified source of ``image`` (built here unless given)."""
    import highdicom as hd

    from analysis.dicomwrite import deterministic_uid

    m = np.asarray(mask) > 0
    if m.shape != image.shape2d:
        raise ValueError(f"mask shape {m.shape} differs from the image {image.shape2d}")
    if not m.any():
        raise ValueError("the mask is empty: nothing to export as DICOM SEG")
    src = source if source is not None else deidentified_source(image)
    category, prop = _category(kind)
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=str(label)[:64] or "Segment",
        segmented_property_category=category,
        segmented_property_type=prop,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(name=str(method)[:64], family=_family(method),
                                                                    version=SOFTWARE_VERSION),
    )
    seed = f"medlens-seg:{image.digest}:{method}:{int(m.sum())}"
    seg = hd.seg.Segmentation(
        source_images=[src],
        pixel_array=m[np.newaxis].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc],
        series_instance_uid=deterministic_uid("seg-series", seed),
        series_number=900,
        sop_instance_uid=deterministic_uid("seg-instance", seed),
        instance_number=1,
        manufacturer="MedLens",
        manufacturer_model_name="MedLens segmentation page",
        software_versions=SOFTWARE_VERSION,
        device_serial_number="none",
        content_description="MedLens segmentation",
        series_description="MedLens segmentation",
    )
    buf = io.BytesIO()
    seg.save_as(buf)
    return buf.getvalue(), src


def dicom_seg_zip(mask: np.ndarray, image: Image, **kwargs: Any) -> bytes:
    """ZIP with ``seg.dcm`` and the de-identified ``source.dcm`` it references."""
    seg_bytes, src = dicom_seg(mask, image, **kwargs)
    sbuf = io.BytesIO()
    src.save_as(sbuf, enforce_file_format=True)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("seg.dcm", seg_bytes)
        z.writestr("source.dcm", sbuf.getvalue())
    return out.getvalue()


def read_seg_mask(data: bytes) -> np.ndarray:
    """Read a binary SEG of one source plane back (highdicom) as a boolean mask (segment 1)."""
    import highdicom as hd

    seg = hd.seg.segread(io.BytesIO(data))
    uids = [u[2] for u in seg.get_source_image_uids()]
    if len(uids) != 1:
        raise ValueError(f"expected a SEG of one source image; this one references {len(uids)}")
    a = np.asarray(seg.get_pixels_by_source_instance(uids, segment_numbers=[1], assert_missing_frames_are_empty=True))
    return a.reshape(a.shape[1], a.shape[2]) > 0 if a.ndim == 4 else a[0] > 0
